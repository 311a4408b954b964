"""`bstream eval`: the bundle vs logistic regression vs LightGBM on the same time-split test set."""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from model.baselines import fit_lightgbm, fit_logreg
from model.data import LabelledData
from model.dp import privacy_line
from model.features import FEATURE_NAMES, window_features
from model.labels import Example
from model.metrics import best_f1_threshold, report
from model.plots import plot_calibration, plot_pr, plot_roc
from model.runtime import Runtime

BASELINE_WINDOW = 50  # events; the README's reference baselines used the last 50


def features(data: LabelledData, examples: Sequence[Example]) -> tuple[np.ndarray, np.ndarray]:
    x = np.array([window_features(data.window(e, BASELINE_WINDOW)) for e in examples])
    y = np.array([e.labels[0] for e in examples])
    return x.reshape(len(examples), len(FEATURE_NAMES)), y


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


def subsample(examples: list[Example], limit: int | None, seed: int) -> list[Example]:
    if limit is None or len(examples) <= limit:
        return examples
    return sorted(random.Random(seed).sample(examples, limit), key=lambda e: (e.ts, e.user))


def evaluate(
    bundle: Path,
    data: LabelledData,
    *,
    max_val: int | None = 3000,
    max_test: int | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    quantize: bool = False,
) -> tuple[dict[str, Any], dict[str, np.ndarray], np.ndarray]:
    """Fit/tune baselines on train/val, score all models on test: (report, test scores, test y)."""
    train, val, test = (data.split(name) for name in ("train", "val", "test"))
    if not train or not val or not test:
        raise ValueError(f"a split is empty: train {len(train)}, val {len(val)}, test {len(test)}")
    test = subsample(test, max_test, seed)
    x_tr, y_tr = features(data, train)
    x_va, y_va = features(data, val)
    x_te, y_te = features(data, test)
    if y_te.sum() == 0 or y_va.sum() == 0 or y_tr.sum() == 0:
        raise ValueError("every split needs at least one positive example to evaluate")
    runtime = Runtime.load(bundle, device="cpu", quantize=quantize)
    val_bert = subsample(val, max_val, seed)
    y_val_bert = np.array([e.labels[0] for e in val_bert])
    p_val_bert = bundle_scores(runtime, data, val_bert, "bert val")
    scores = {"bert": bundle_scores(runtime, data, test, "bert test")}
    thresholds = {"bert": best_f1_threshold(y_val_bert, p_val_bert)}
    params: dict[str, Any] = {"bert": {"version": runtime.version, "quantized": quantize}}
    params["bert"]["dp_epsilon"] = runtime.meta.dp_epsilon  # DP cost: compare with a non-DP run
    params["bert"]["privacy"] = privacy_line(
        runtime.meta.dp_epsilon, runtime.meta.metrics.get("dp")
    )
    for fit in (fit_logreg, fit_lightgbm):
        baseline = fit(x_tr, y_tr, x_va, y_va)
        scores[baseline.name] = baseline.predict(x_te)
        thresholds[baseline.name] = best_f1_threshold(y_va, baseline.predict(x_va))
        params[baseline.name] = {**baseline.params, "val_pr_auc": baseline.val_pr_auc}
    models = {
        name: {**report(y_te, p, thresholds[name], n_boot, seed), "params": params[name]}
        for name, p in scores.items()
    }
    best_baseline = max(("logreg", "lightgbm"), key=lambda n: models[n]["pr_auc"])
    result = {
        "models": models,
        "comparison": {
            "best_baseline": best_baseline,
            "bert_minus_best_baseline_pr_auc": models["bert"]["pr_auc"]
            - models[best_baseline]["pr_auc"],
        },
        "data": {**data.stats, "fingerprint": data.fingerprint, "n_test_evaluated": len(test)},
        "features": list(FEATURE_NAMES),
    }
    return result, scores, y_te


def write_outputs(
    result: dict[str, Any], scores: dict[str, np.ndarray], y: np.ndarray, out_dir: Path
) -> Path:
    """report.md, report.json and the ROC / PR / calibration PNGs."""
    out_dir.mkdir(parents=True, exist_ok=True)
    plot_roc(y, scores, out_dir / "roc.png")
    plot_pr(y, scores, out_dir / "pr.png")
    plot_calibration(y, scores, out_dir / "calibration.png")
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
    lines = [
        "# Evaluation: fine-tuned BERT vs baselines (time split, test part)",
        "",
        f"Test rows: {first['n_test']}, positives: {first['n_pos']} "
        f"(base rate {first['base_rate']:.4f}).",
        "",
        f"BERT training: {models['bert']['params'].get('privacy', 'n/a')}.",
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
    lines += [
        "",
        f"BERT PR-AUC minus best baseline ({comp['best_baseline']}): "
        f"{comp['bert_minus_best_baseline_pr_auc']:+.4f}.",
        "",
        "![ROC](roc.png) ![PR](pr.png) ![Calibration](calibration.png)",
        "",
    ]
    return "\n".join(lines)
