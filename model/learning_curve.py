"""Learning curve: test PR-AUC of the training run's weights after 5k, 15k, 30k, ... windows.

`bstream train` keeps a copy of the trainable weights when the number of windows seen crosses
each point (model/train.py:curve_points); within the first epoch each window is seen once, so the
point at N windows is the model after one pass over N distinct windows. The LR schedule is the
full run's, not one tuned for N: the curve shows what more data (or a faster machine, which sees
more windows in the same budget) buys, not the best model at each size.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from model.bundle import CHECKPOINT_FILE, CURVE_FILE
from model.data import LabelledData
from model.export import load_checkpoint
from model.fusion import NGRAM_BUCKETS
from model.labels import Example
from model.metrics import paired_bootstrap, pr_auc
from model.prepared import prepare
from model.runtime import Runtime
from model.train import score


def has_curve(bundle: Path) -> bool:
    return (bundle / CURVE_FILE).is_file() and (bundle / CHECKPOINT_FILE).is_file()


def curve_rows(
    bundle: Path,
    data: LabelledData,
    test: Sequence[Example],
    baseline: tuple[str, np.ndarray],
    n_boot: int,
    seed: int,
    split: str = "test",
) -> list[dict[str, Any]]:
    """One row per snapshot: windows seen, PR-AUC on `test` (rows of `split`), and its paired
    difference to `baseline`."""
    if not has_curve(bundle):
        raise ValueError(
            f"{bundle} has no learning-curve snapshots ({CURVE_FILE}); "
            "bundles trained before they existed, or with --max-train below 5000, have none"
        )
    runtime = Runtime.load(bundle, device="cpu")
    model = load_checkpoint(bundle / CHECKPOINT_FILE)
    fusion = model.config.fusion_config()
    buckets = fusion.ngram_buckets if fusion and fusion.ngram_buckets else NGRAM_BUCKETS
    window = int(runtime.meta.encoding.get("window", 50))
    prep = prepare(data, split, runtime.encoder, window, buckets, None)
    index = {(e.user, e.index): i for i, e in enumerate(prep.examples)}
    prep = prep.subset([index[(e.user, e.index)] for e in test])
    y = prep.y[:, 0]
    name, base_scores = baseline
    rows = []
    for point in torch.load(bundle / CURVE_FILE, map_location="cpu", weights_only=True):
        loaded = model.load_state_dict(point["state"], strict=False)
        if loaded.unexpected_keys:
            raise ValueError(f"{CURVE_FILE} does not fit the model: {loaded.unexpected_keys[:3]}")
        logits = score(model, runtime.encoder, prep, fusion)[:, 0]
        diff, lo, hi = paired_bootstrap(y, logits, base_scores, pr_auc, n_boot, seed)
        rows.append(
            {"label": point["label"], "windows": int(point["windows"]), "step": int(point["step"]),
             "test_pr_auc": pr_auc(y, logits), "baseline": name,
             "minus_baseline": diff, "minus_baseline_ci": [lo, hi]}
        )  # fmt: skip
    return rows


def markdown(
    rows: Sequence[dict[str, Any]], final_pr_auc: float, baseline_pr_auc: float, split: str = "test"
) -> str:
    """The learning-curve table of the eval report."""
    name = rows[0]["baseline"] if rows else "baseline"
    lines = [
        "## Learning curve (the training run's weights after N windows seen)",
        "",
        f"| windows seen | {split} PR-AUC | minus {name} (95% CI) |",
        "| --- | --- | --- |",
    ]
    for r in rows:
        lo, hi = r["minus_baseline_ci"]
        lines.append(
            f"| {r['label']} ({r['windows']}) | {r['test_pr_auc']:.4f} "
            f"| {r['minus_baseline']:+.4f} ({lo:+.4f} to {hi:+.4f}) |"
        )
    lines += [
        f"| the bundle (best on val, calibrated) | {final_pr_auc:.4f} "
        f"| {final_pr_auc - baseline_pr_auc:+.4f} |",
        "",
        f"{name} (best baseline on {split}) PR-AUC: {baseline_pr_auc:.4f}.",
        "",
        "![Learning curve](learning_curve.png)",
        "",
    ]
    return "\n".join(lines)
