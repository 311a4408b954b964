"""PNG plots for training and evaluation reports (matplotlib, headless)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.calibration import calibration_curve  # noqa: E402
from sklearn.metrics import precision_recall_curve, roc_curve  # noqa: E402


def _save(fig: plt.Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_history(history: list[dict[str, float]], path: Path) -> Path:
    """Val PR-AUC and AUC over training steps."""
    fig, ax = plt.subplots(figsize=(6, 3.5))
    steps = [h["step"] for h in history]
    ax.plot(steps, [h["val_pr_auc"] for h in history], marker="o", label="val PR-AUC")
    ax.plot(steps, [h["val_auc"] for h in history], marker="s", label="val AUC")
    ax.set_xlabel("step")
    ax.legend()
    ax.grid(alpha=0.3)
    return _save(fig, path)


def plot_roc(y: np.ndarray, scores: Mapping[str, np.ndarray], path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(5, 5))
    for name, p in scores.items():
        fpr, tpr, _ = roc_curve(y, p)
        ax.plot(fpr, tpr, label=name)
    ax.plot([0, 1], [0, 1], "k--", lw=0.8)
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC (test)")
    ax.legend()
    return _save(fig, path)


def plot_pr(y: np.ndarray, scores: Mapping[str, np.ndarray], path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(5, 5))
    for name, p in scores.items():
        precision, recall, _ = precision_recall_curve(y, p)
        ax.plot(recall, precision, label=name)
    ax.axhline(y.mean(), color="k", ls="--", lw=0.8, label=f"base rate {y.mean():.3f}")
    ax.set(xlabel="recall", ylabel="precision", title="Precision-recall (test)")
    ax.legend()
    return _save(fig, path)


def plot_calibration(y: np.ndarray, scores: Mapping[str, np.ndarray], path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(5, 5))
    for name, p in scores.items():
        observed, predicted = calibration_curve(y, p, n_bins=10, strategy="quantile")
        ax.plot(predicted, observed, marker="o", label=name)
    top = max(float(max(p.max() for p in scores.values())), 0.05)
    ax.plot([0, top], [0, top], "k--", lw=0.8)
    ax.set(xlabel="predicted probability", ylabel="observed rate", title="Calibration (test)")
    ax.legend()
    return _save(fig, path)


def plot_learning_curve(
    rows: list[dict[str, float]], baseline: tuple[str, float], final: float, path: Path
) -> Path:
    """Test PR-AUC against windows seen, next to the best baseline and the final bundle."""
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot([r["windows"] for r in rows], [r["test_pr_auc"] for r in rows], marker="o",
            label="fused BERT after N windows")  # fmt: skip
    ax.axhline(baseline[1], color="grey", linestyle="--", label=f"{baseline[0]} (best baseline)")
    ax.axhline(final, color="tab:green", linestyle=":", label="the bundle (best on val)")
    ax.set_xscale("log")
    ax.set_xlabel("training windows seen")
    ax.set_ylabel("test PR-AUC")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return _save(fig, path)
