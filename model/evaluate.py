"""`bstream eval`: the bundle vs its baselines on the same time-split test set.

By default the baselines are the ones stored in the bundle (fitted by `bstream train` on the
bundle's own train/val split), so evaluating a bundle on new users compares like with like.
`refit_baselines=True` fits them on the evaluated file's train/val split instead.
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from model.baselines import (
    BASELINE_INPUTS,
    Baseline,
    fit_lightgbm,
    fit_logreg,
    fit_sparse_logreg,
    load_baselines,
    ngram_matrix,
    wide_matrix,
)
from model.data import LabelledData
from model.dp import privacy_line
from model.features import FEATURE_NAMES, window_features
from model.fusion import NGRAM_BUCKETS, model_words, ngram_ids, normalise
from model.labels import Example
from model.learning_curve import curve_rows
from model.learning_curve import markdown as curve_markdown
from model.metrics import best_f1_threshold, paired_bootstrap, pr_auc, report
from model.plots import plot_calibration, plot_learning_curve, plot_pr, plot_roc
from model.runtime import Runtime

BASELINE_WINDOW = 50  # events; the README's reference baselines used the last 50


def bundle_scores(
    runtime: Runtime, data: LabelledData, examples: Sequence[Example], desc: str
) -> np.ndarray:
    """The bundle's first-label probabilities through the real runtime (model.ts), in chunks."""
    window = int(runtime.meta.encoding.get("window", BASELINE_WINDOW))
    label = runtime.labels[0]
    out: list[float] = []
    for start in tqdm(range(0, len(examples), 512), desc=desc, unit="chunk", mininterval=2.0):
        chunk = examples[start : start + 512]
        out += [p[label] for p in runtime.predict([data.window(e, window) for e in chunk])]
    return np.array(out)


def features(data: LabelledData, examples: Sequence[Example]) -> tuple[np.ndarray, np.ndarray]:
    """Window aggregates and primary labels of the examples (the aggregate baselines' input)."""
    x = np.array([window_features(data.window(e, BASELINE_WINDOW)) for e in examples])
    y = np.array([e.labels[0] for e in examples])
    return x.reshape(len(examples), len(FEATURE_NAMES)), y


def subsample(examples: list[Example], limit: int | None, seed: int) -> list[Example]:
    if limit is None or len(examples) <= limit:
        return examples
    return sorted(random.Random(seed).sample(examples, limit), key=lambda e: (e.ts, e.user))


def baseline_inputs(
    data: LabelledData, examples: Sequence[Example], runtime: Runtime, buckets: int
) -> tuple[np.ndarray, list[tuple[int, ...]]]:
    """Aggregates and the n-gram ids of the exact text the bundle's model reads, per example."""
    window = int(runtime.meta.encoding.get("window", BASELINE_WINDOW))
    raw, grams = [], []
    for example in examples:
        win = data.window(example, max(window, BASELINE_WINDOW))
        raw.append(window_features(win[-BASELINE_WINDOW:]))
        enc = runtime.encoder.encode(win[-window:])
        grams.append(
            tuple(ngram_ids(model_words(win[-window:], runtime.encoder.cfg, enc), buckets))
        )
    return np.array(raw).reshape(len(examples), len(FEATURE_NAMES)), grams


def design(
    baseline: Baseline, raw: np.ndarray, grams: list[tuple[int, ...]], buckets: int, rt: Runtime
) -> object:
    """The input matrix a baseline was fitted on."""
    kind = BASELINE_INPUTS.get(baseline.name, "aggregates")
    if kind == "aggregates":
        return raw
    if kind == "ngrams":
        return ngram_matrix(grams, buckets)
    assert rt.fusion is not None, "wide_lr is stored only with a fused bundle"
    return wide_matrix(normalise(raw, rt.fusion), ngram_matrix(grams, buckets))


def refit(
    data: LabelledData, runtime: Runtime, x_va: np.ndarray, g_va: list[tuple[int, ...]]
) -> dict[str, Baseline]:
    """Fit LR, LightGBM and n-gram LR on the evaluated file's own train split (tuned on val)."""
    train = data.split("train")
    x_tr, g_tr = baseline_inputs(data, train, runtime, NGRAM_BUCKETS)
    y_tr = np.array([e.labels[0] for e in train])
    y_va = np.array([e.labels[0] for e in data.split("val")])
    out = {b.name: b for b in (fit_logreg(x_tr, y_tr, x_va, y_va),
                               fit_lightgbm(x_tr, y_tr, x_va, y_va))}  # fmt: skip
    out["ngram_lr"] = fit_sparse_logreg(
        "ngram_lr",
        ngram_matrix(g_tr, NGRAM_BUCKETS),
        y_tr,
        ngram_matrix(g_va, NGRAM_BUCKETS),
        y_va,
    )
    return out


def evaluate(
    bundle: Path,
    data: LabelledData,
    *,
    max_val: int | None = 3000,
    max_test: int | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    quantize: bool = False,
    refit_baselines: bool = False,
    scratch: Path | None = None,
    learning_curve: bool = False,
    split: str = "test",
) -> tuple[dict[str, Any], dict[str, np.ndarray], np.ndarray]:
    """Score the bundle and its baselines on test: (report, test scores, test y).

    `split="val"` scores the val split instead, to choose between bundles without touching test
    (thresholds are then fitted on the rows they are scored on).

    Baselines: those stored in the bundle (default), or re-fitted on `data`'s train/val split.
    `scratch`: a bundle trained with `--init scratch` (the pretraining ablation), scored alongside.
    `learning_curve`: also score the training run's snapshots (model/learning_curve.py)."""
    train, val, test = (data.split(name) for name in ("train", "val", "test"))
    if not train or not val or not test:
        raise ValueError(f"a split is empty: train {len(train)}, val {len(val)}, test {len(test)}")
    if split not in ("test", "val"):
        raise ValueError(f"split must be test or val, not {split!r}")
    test = subsample(test if split == "test" else val, max_test, seed)
    y_te = np.array([e.labels[0] for e in test])
    y_va = np.array([e.labels[0] for e in val])
    if y_te.sum() == 0 or y_va.sum() == 0:
        raise ValueError("the val and test splits need at least one positive example to evaluate")
    runtime = Runtime.load(bundle, device="cpu", quantize=quantize)
    scratch_runtime = ablation_runtime(runtime, scratch) if scratch is not None else None
    stored = None if refit_baselines else load_baselines(bundle)
    buckets = stored[1] if stored else NGRAM_BUCKETS
    x_va, g_va = baseline_inputs(data, val, runtime, buckets)
    x_te, g_te = baseline_inputs(data, test, runtime, buckets)
    if stored:
        baselines = stored[0]
        source = (
            f"stored in the bundle (fitted by `bstream train` on the train/val split of "
            f"{(runtime.meta.data_fingerprint or {}).get('file', 'its training file')})"
        )
    else:
        if not any(e.labels[0] for e in train):
            raise ValueError("re-fitting baselines needs a positive example in train")
        baselines = refit(data, runtime, x_va, g_va)
        source = (
            "re-fitted on this file's train/val split (--refit-baselines)"
            if refit_baselines
            else "re-fitted on this file's train/val split (the bundle stores none)"
        )
    val_bert = subsample(val, max_val, seed)
    y_val_bert = np.array([e.labels[0] for e in val_bert])
    p_val_bert = bundle_scores(runtime, data, val_bert, "bert val")
    scores = {"bert": bundle_scores(runtime, data, test, "bert test")}
    thresholds = {"bert": best_f1_threshold(y_val_bert, p_val_bert)}
    params: dict[str, Any] = {"bert": {"version": runtime.version, "quantized": quantize}}
    if scratch_runtime is not None:
        p_val_scratch = bundle_scores(scratch_runtime, data, val_bert, "scratch val")
        scores["bert_scratch"] = bundle_scores(scratch_runtime, data, test, "scratch test")
        thresholds["bert_scratch"] = best_f1_threshold(y_val_bert, p_val_scratch)
        params["bert_scratch"] = {
            "version": scratch_runtime.version,
            "init": scratch_runtime.meta.metrics.get("init"),
            "train_seconds": scratch_runtime.meta.metrics.get("train_seconds"),
            "windows_seen": scratch_runtime.meta.metrics.get("windows_seen"),
        }
    params["bert"]["dp_epsilon"] = runtime.meta.dp_epsilon  # DP cost: compare with a non-DP run
    params["bert"]["privacy"] = privacy_line(
        runtime.meta.dp_epsilon, runtime.meta.metrics.get("dp")
    )
    params["bert"]["fusion"] = (
        "none"
        if runtime.fusion is None
        else "aggregates" + (" + n-grams" if runtime.fusion.ngram_buckets else "")
    )
    for name, baseline in baselines.items():
        p_va = baseline.predict(design(baseline, x_va, g_va, buckets, runtime))
        scores[name] = baseline.predict(design(baseline, x_te, g_te, buckets, runtime))
        thresholds[name] = best_f1_threshold(y_va, p_va)
        params[name] = {
            **baseline.params,
            "val_pr_auc_at_fit": baseline.val_pr_auc,
            "val_pr_auc_here": pr_auc(y_va, p_va),
        }
    models = {
        name: {**report(y_te, p, thresholds[name], n_boot, seed), "params": params[name]}
        for name, p in scores.items()
    }
    names = [n for n in scores if not n.startswith("bert")]
    best_baseline = max(names, key=lambda n: models[n]["pr_auc"])  # best on test: conservative
    each = {
        name: paired_bootstrap(y_te, scores["bert"], scores[name], pr_auc, n_boot, seed)
        for name in names
    }
    diff, lo, hi = each[best_baseline]
    result = {
        "split": split,
        "models": models,
        "baselines": {"source": source, "stored": bool(stored), "names": names},
        "comparison": {
            "best_baseline": best_baseline,
            "bert_minus_best_baseline_pr_auc": diff,
            "bert_minus_best_baseline_pr_auc_ci": [lo, hi],
            "bootstrap_resamples": n_boot,
            "bert_minus_each_baseline_pr_auc": {
                name: {"diff": d, "ci": [low, high]} for name, (d, low, high) in each.items()
            },
        },
        "data": {**data.stats, "fingerprint": data.fingerprint, "n_test_evaluated": len(test)},
        "features": list(FEATURE_NAMES),
        **ablations(y_te, scores, models, n_boot, seed),
        "training": {
            k: runtime.meta.metrics.get(k)
            for k in ("best", "train_seconds", "windows_seen", "windows_per_s")
        },
    }
    if learning_curve:
        result["learning_curve"] = curve_rows(
            bundle, data, test, (best_baseline, scores[best_baseline]), n_boot, seed, split
        )
    return result, scores, y_te


def ablation_runtime(runtime: Runtime, scratch: Path) -> Runtime:
    """The from-scratch bundle, refused unless it reads the same tokens with the same labels."""
    other = Runtime.load(scratch, device="cpu")
    same = (
        other.meta.encoding == runtime.meta.encoding
        and other.labels == runtime.labels
        and (other.meta.data_fingerprint or {}).get("sha256")
        == (runtime.meta.data_fingerprint or {}).get("sha256")
    )
    if not same:
        raise ValueError(
            f"--scratch {scratch} must be trained on the same file with the same encoding and "
            "labels as --bundle"
        )
    return other


def ablations(
    y: np.ndarray, scores: dict[str, np.ndarray], models: dict[str, Any], n_boot: int, seed: int
) -> dict[str, Any]:
    """Pretrained minus from-scratch PR-AUC with its paired bootstrap CI, when both were scored."""
    if "bert_scratch" not in scores:
        return {}
    diff, lo, hi = paired_bootstrap(y, scores["bert"], scores["bert_scratch"], pr_auc, n_boot, seed)
    return {
        "ablation": {
            "scratch_pr_auc": models["bert_scratch"]["pr_auc"],
            "pretrained_minus_scratch_pr_auc": diff,
            "pretrained_minus_scratch_pr_auc_ci": [lo, hi],
            "scratch": models["bert_scratch"]["params"],
        }
    }


def write_outputs(
    result: dict[str, Any], scores: dict[str, np.ndarray], y: np.ndarray, out_dir: Path
) -> Path:
    """report.md, report.json and the ROC / PR / calibration PNGs."""
    out_dir.mkdir(parents=True, exist_ok=True)
    plot_roc(y, scores, out_dir / "roc.png")
    plot_pr(y, scores, out_dir / "pr.png")
    plot_calibration(y, scores, out_dir / "calibration.png")
    if result.get("learning_curve"):
        best = result["comparison"]["best_baseline"]
        plot_learning_curve(
            result["learning_curve"],
            (best, result["models"][best]["pr_auc"]),
            result["models"]["bert"]["pr_auc"],
            out_dir / "learning_curve.png",
        )
    (out_dir / "report.json").write_text(json.dumps(result, indent=2, default=str) + "\n")
    np.savez_compressed(out_dir / "test_scores.npz", y=y, **scores)  # type: ignore[arg-type]
    path = out_dir / "report.md"
    path.write_text(markdown(result))
    return path


def _ci(value: float, ci: Sequence[float]) -> str:
    return f"{value:.4f} ({ci[0]:.4f}-{ci[1]:.4f})"


def markdown(result: dict[str, Any]) -> str:
    models = result["models"]
    first = next(iter(models.values()))
    split = result.get("split", "test")
    lines = [
        f"# Evaluation: fine-tuned BERT vs baselines (time split, {split} part)",
        "",
        f"Baselines: {result.get('baselines', {}).get('source', 'n/a')}.",
        "",
        f"{split.capitalize()} rows: {first['n_test']}, positives: {first['n_pos']} "
        f"(base rate {first['base_rate']:.4f}).",
        "",
        f"BERT training: {models['bert']['params'].get('privacy', 'n/a')}; "
        f"late fusion: {models['bert']['params'].get('fusion', 'none')}.",
        "",
        "| model | AUC (95% CI) | PR-AUC (95% CI) | logloss | ECE |",
        "| --- | --- | --- | --- | --- |",
    ]
    for name, m in models.items():
        lines.append(
            f"| {name} | {_ci(m['auc'], m['auc_ci'])} | {_ci(m['pr_auc'], m['pr_auc_ci'])} "
            f"| {m['logloss']:.4f} | {m['ece']:.4f} |"
        )
    lines += ["", "Classification at the threshold with the best F1 on val:", ""]
    lines += [
        "| model | threshold | precision | recall | F1 | flagged |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for name, m in models.items():
        c = m["classification_report"]
        lines.append(
            f"| {name} | {m['threshold']:.4f} | {c['precision']:.3f} | {c['recall']:.3f} "
            f"| {c['f1']:.3f} | {c['predicted_positive']} |"
        )
    comp = result["comparison"]
    ci = comp.get("bert_minus_best_baseline_pr_auc_ci", [float("nan")] * 2)
    lines += [
        "",
        f"BERT PR-AUC minus best baseline ({comp['best_baseline']}, best on {split}): "
        f"{comp['bert_minus_best_baseline_pr_auc']:+.4f} (paired bootstrap 95% CI "
        f"{ci[0]:+.4f} to {ci[1]:+.4f}, {comp.get('bootstrap_resamples', 'n/a')} resamples).",
        "",
    ]
    each = comp.get("bert_minus_each_baseline_pr_auc", {})
    if each:
        lines += ["| BERT PR-AUC minus | difference (paired bootstrap 95% CI) |", "| --- | --- |"]
        lines += [
            f"| {name} | {d['diff']:+.4f} ({d['ci'][0]:+.4f} to {d['ci'][1]:+.4f}) |"
            for name, d in each.items()
        ]
        lines.append("")
    lines += [
        "![ROC](roc.png) ![PR](pr.png) ![Calibration](calibration.png)",
        "",
    ]
    if "ablation" in result:
        a = result["ablation"]
        lo, hi = a["pretrained_minus_scratch_pr_auc_ci"]
        lines += [
            "## Pretraining ablation",
            "",
            f"The same architecture, tokens and budget from random weights (bert_scratch): {split} "
            f"PR-AUC {a['scratch_pr_auc']:.4f}; pretrained minus scratch "
            f"{a['pretrained_minus_scratch_pr_auc']:+.4f} (paired bootstrap 95% CI {lo:+.4f} to "
            f"{hi:+.4f}).",
            "",
        ]
    if result.get("learning_curve"):
        best = result["comparison"]["best_baseline"]
        lines.append(
            curve_markdown(
                result["learning_curve"],
                result["models"]["bert"]["pr_auc"],
                result["models"][best]["pr_auc"],
                split,
            )
        )
    return "\n".join(lines)
