"""Continual re-fine-tuning: warm-start from the champion, fine-tune on new behaviour, decide.

The data are events (from the events topic between two times, or a file), labelled by the same
rule as training (`model.data.label_events`, the time split of `model/labels.py`): the oldest 70%
of event times train the candidate, the next 10% are its validation (early stopping, calibration),
and the newest 20% is a held-out slice that neither the candidate nor the champion trained on.
Both score the same test windows; a paired bootstrap over those windows gives a CI for the
PR-AUC difference. The candidate is announced as champion when the CI's lower end clears the
margin, as challenger when the point difference clears it, and otherwise only reported.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from model.data import LabelledData

CHAMPION, CHALLENGER, REPORT = "champion", "challenger", "report"


@dataclass
class RetrainResult:
    """The candidate bundle, the figures and the decision."""

    candidate: Path
    decision: str
    figures: dict[str, Any] = field(default_factory=dict)


def paired_bootstrap(
    y: np.ndarray, a: np.ndarray, b: np.ndarray, metric: Any, n: int = 1000, seed: int = 0
) -> tuple[float, float, float]:
    """metric(y, a) - metric(y, b) and its 95% CI, resampling the same rows for both."""
    rng = np.random.default_rng(seed)
    diffs = []
    for _ in range(n):
        idx = rng.integers(0, len(y), len(y))
        if 0 < y[idx].sum() < len(idx):
            diffs.append(metric(y[idx], a[idx]) - metric(y[idx], b[idx]))
    if not diffs:
        raise ValueError("the held-out slice needs both positives and negatives")
    lo, hi = np.percentile(diffs, [2.5, 97.5])
    return float(metric(y, a) - metric(y, b)), float(lo), float(hi)


def decide(diff_lo: float, diff: float, margin: float) -> str:
    """champion: the CI's lower end clears the margin; challenger: the point does; else report.

    >>> decide(0.02, 0.05, 0.01), decide(-0.01, 0.02, 0.01), decide(-0.05, 0.0, 0.01)
    ('champion', 'challenger', 'report')
    """
    if diff_lo > margin:
        return CHAMPION
    if diff > margin:
        return CHALLENGER
    return REPORT


def retrain(
    events: Iterable[Mapping[str, Any]],
    champion_dir: Path,
    out_dir: Path,
    budget_minutes: float = 5.0,
    margin: float = 0.01,
    horizon_min: float | None = None,
    seed: int = 0,
    max_train: int = 15000,
    epochs: float = 3.0,
    linear: str = "refit",
    add_fusion: bool = False,
    lr: float | None = None,
) -> RetrainResult:
    """Fine-tune a copy of the champion on `events`; evaluate both on the newest slice."""
    from model.bundle import validate_bundle
    from model.data import label_events

    meta = validate_bundle(champion_dir)
    horizon = horizon_min if horizon_min is not None else champion_horizon(meta)
    data = label_events(list(events), horizon, tuple(meta.labels))
    return retrain_data(
        data, champion_dir, out_dir, budget_minutes, margin, seed, max_train, epochs, linear,
        add_fusion, lr,
    )  # fmt: skip


def retrain_data(
    data: LabelledData,
    champion_dir: Path,
    out_dir: Path,
    budget_minutes: float = 5.0,
    margin: float = 0.01,
    seed: int = 0,
    max_train: int = 15000,
    epochs: float = 3.0,
    linear: str = "refit",
    add_fusion: bool = False,
    lr: float | None = None,
) -> RetrainResult:
    """`retrain` on labelled windows (from events, or from outcomes: `outcome_data`).

    linear="refit": a fused champion's linear parts (window aggregates, n-grams) are re-fitted on
    the new train split and the [CLS] head starts at zero, as `train` starts (the candidate's
    step 0 scores like that linear model; the encoder keeps the champion's weights). After a
    drift the old linear weights point the wrong way, and fine-tuning moves them too slowly.
    "keep": start from every champion weight. add_fusion: give an unfused champion the
    aggregates part (how tests make a fused champion from the tiny bundle).
    """
    from dataclasses import replace

    import torch

    from model.bundle import MODEL_FILE, TOKENIZER_DIR, validate_bundle
    from model.encoding import Encoder, EncodingConfig
    from model.export import export_bundle
    from model.metrics import pr_auc, roc_auc
    from model.prepared import prepare
    from model.reference import reference_for_bundle
    from model.runtime import eager_from_script, load_tokenizer
    from model.train import NGRAM_BUCKETS, TrainConfig, score, train_model

    if linear not in ("refit", "keep"):
        raise ValueError("linear must be refit or keep")
    started = time.monotonic()
    meta = validate_bundle(champion_dir)
    encoding = EncodingConfig.from_dict(meta.encoding)
    test = data.split("test")
    if not test or not any(e.labels[0] for e in test):
        raise ValueError("the newest slice has no positive outcome: nothing to evaluate on")
    if not data.split("train") or not data.split("val"):
        raise ValueError("too little data: the train or validation slice is empty")
    script = torch.jit.load(str(champion_dir / MODEL_FILE), map_location="cpu")
    champion = eager_from_script(script, meta).eval()
    candidate = eager_from_script(script, meta)  # warm start: the champion's weights
    tokenizer = load_tokenizer(champion_dir / TOKENIZER_DIR)
    encoder = Encoder(tokenizer, encoding)
    cfg = TrainConfig(
        max_minutes=budget_minutes,
        seed=seed,
        max_train=max_train,
        val_size=3000,
        eval_every=50,
        patience=4,
        clock="wall",
        epochs=epochs,
        # calibration and export of a tiny model take seconds: keep a share, not train's 90 s
        reserve_s=min(90.0, budget_minutes * 60 * 0.25),
    )
    if lr is not None:
        cfg = replace(cfg, lr=lr, head_lr=max(lr, cfg.head_lr))
    fusion = champion.config.fusion_config()  # a fused champion scores with its own inputs
    buckets = fusion.ngram_buckets if fusion and fusion.ngram_buckets else NGRAM_BUCKETS
    cache = Path(cfg.cache_dir)
    train_prep = prepare(data, "train", encoder, encoding.window, buckets, cache)
    val_prep = prepare(data, "val", encoder, encoding.window, buckets, cache)
    linear_figures: dict[str, Any] = {}
    if linear == "refit" and (fusion is not None or add_fusion):
        candidate, linear_figures = refit_linear(candidate, train_prep, val_prep)
    result = train_model(candidate, encoder, data, encoding.window, cfg, None, train_prep, val_prep)
    test_prep = prepare(data, "test", encoder, encoding.window, buckets, None)
    y = test_prep.y[:, 0]
    cand = score(result.model, encoder, test_prep, result.model.config.fusion_config())[:, 0]
    champ = score(champion, encoder, test_prep, fusion)[:, 0]
    diff, lo, hi = paired_bootstrap(y, cand, champ, pr_auc, seed=seed)
    decision = decide(lo, diff, margin)
    figures = {
        "champion": meta.version,
        "test_windows": len(y),
        "test_positives": int(y.sum()),
        "pr_auc_candidate": round(pr_auc(y, cand), 4),
        "pr_auc_champion": round(pr_auc(y, champ), 4),
        "auc_candidate": round(roc_auc(y, cand), 4),
        "auc_champion": round(roc_auc(y, champ), 4),
        "pr_auc_diff": round(diff, 4),
        "pr_auc_diff_ci95": [round(lo, 4), round(hi, 4)],
        "margin": margin,
        "n_train": result.n_train,
        "n_val": result.n_val,
        "linear": linear_figures or linear,
        "train_stopped": result.stopped,
        "seconds": round(time.monotonic() - started, 1),
        "cuts_ms": [data.cuts.t1, data.cuts.t2],
        "source": data.fingerprint.get("source", "events"),
    }
    bundle = export_bundle(
        result.model,
        tokenizer,
        encoding,
        out_dir,
        base_model=meta.base_model,
        data_fingerprint={**data.fingerprint, "warm_start": meta.version},
        metrics={"retrain": figures, "best": result.best},
        save_checkpoint=False,
    )
    reference_for_bundle(bundle, data, encoding.window)  # the candidate's own drift reference
    return RetrainResult(bundle, decision, figures)


def refit_linear(model: Any, train: Any, val: Any) -> tuple[Any, dict[str, Any]]:
    """Fit the fused linear parts on the new train split (the champion's normaliser; an unfused
    model gets an aggregates part); the [CLS] head starts at zero."""
    from dataclasses import replace

    from model.baselines import fit_sparse_logreg, ngram_matrix, wide_matrix
    from model.fusion import FusionConfig, normalise, normaliser
    from model.model import BehaviorBert
    from model.train import warm_start

    fusion = model.config.fusion_config()
    if fusion is None:
        mean, std = normaliser(train.raw)
        fusion = FusionConfig(features=True, mean=mean, std=std)
        fused = BehaviorBert(replace(model.config, fusion=fusion.to_dict()))
        missing, _ = fused.load_state_dict(model.state_dict(), strict=False)
        assert all(k.startswith(("feature_head", "wide")) for k in missing), missing
        model = fused

    def design(prep: Any) -> Any:
        grams = [g if fusion.ngram_buckets else () for g in prep.grams]
        return wide_matrix(normalise(prep.raw, fusion), ngram_matrix(grams, fusion.ngram_buckets))

    fitted = fit_sparse_logreg(
        "retrain_linear", design(train), train.y[:, 0], design(val), val.y[:, 0]
    )
    warm_start(model, fitted, fusion)
    return model, {"refit": True, "val_pr_auc": round(fitted.val_pr_auc, 4)}


def champion_horizon(meta: Any) -> float:
    fingerprint = meta.data_fingerprint or {}
    value = fingerprint.get("horizon_min")
    return float(value) if isinstance(value, int | float) else 30.0
