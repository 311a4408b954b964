"""Evaluation metrics for a rare positive class: AUC, PR-AUC with bootstrap CIs, logloss, ECE."""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import (
    average_precision_score,
    classification_report,
    log_loss,
    precision_recall_curve,
    roc_auc_score,
)


def roc_auc(y: np.ndarray, s: np.ndarray) -> float:
    return float(roc_auc_score(y, s)) if 0 < np.sum(y) < len(y) else float("nan")


def pr_auc(y: np.ndarray, s: np.ndarray) -> float:
    """Average precision (the step-wise PR-AUC)."""
    return float(average_precision_score(y, s)) if np.sum(y) > 0 else float("nan")


def logloss(y: np.ndarray, p: np.ndarray) -> float:
    return float(log_loss(y, np.clip(p, 1e-7, 1 - 1e-7), labels=[0, 1]))


def ece(y: np.ndarray, p: np.ndarray, bins: int = 10) -> float:
    """Expected calibration error over equal-width probability bins."""
    edges = np.linspace(0, 1, bins + 1)
    which = np.clip(np.digitize(p, edges[1:-1]), 0, bins - 1)
    total = 0.0
    for b in range(bins):
        in_bin = which == b
        if in_bin.any():
            total += in_bin.mean() * abs(p[in_bin].mean() - y[in_bin].mean())
    return float(total)


def bootstrap_ci(
    y: np.ndarray, s: np.ndarray, metric: Any, n: int = 1000, seed: int = 0
) -> tuple[float, float]:
    """95% percentile bootstrap interval of metric(y, s) over resampled test rows."""
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(n):
        idx = rng.integers(0, len(y), len(y))
        if 0 < y[idx].sum() < len(idx):
            values.append(metric(y[idx], s[idx]))
    lo, hi = np.percentile(values, [2.5, 97.5])
    return float(lo), float(hi)


def fit_platt(logit: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """(a, b) so that sigmoid(a * logit + b) is calibrated on (logit, y).

    A non-positive slope (a noisy val set) would invert the ranking, so then only the intercept
    is fitted: a = 1 and b shifts the mean probability to the observed rate.
    """
    lr = LogisticRegression(C=1e6, max_iter=1000)
    lr.fit(logit.reshape(-1, 1), y.astype(int))
    a, b = float(lr.coef_[0, 0]), float(lr.intercept_[0])
    if a > 0:
        return a, b
    b, target = 0.0, float(np.mean(y))
    for _ in range(50):  # Newton on mean(sigmoid(logit + b)) = target
        p = sigmoid(logit + b)
        b -= (p.mean() - target) / max(float((p * (1 - p)).mean()), 1e-9)
    return 1.0, float(b)


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, 1e-7, 1 - 1e-7)
    return np.log(p / (1 - p))


def best_f1_threshold(y: np.ndarray, p: np.ndarray) -> float:
    """The probability threshold with the best F1 (chosen on val, applied to test)."""
    precision, recall, thresholds = precision_recall_curve(y, p)
    f1 = 2 * precision * recall / np.maximum(precision + recall, 1e-12)
    return float(thresholds[int(np.argmax(f1[:-1]))]) if len(thresholds) else 0.5


def report(
    y: np.ndarray, p: np.ndarray, threshold: float, n_boot: int = 1000, seed: int = 0
) -> dict[str, Any]:
    """All test metrics for one model's calibrated probabilities."""
    y = y.astype(int)
    cls = classification_report(
        y, (p >= threshold).astype(int), labels=[0, 1], output_dict=True, zero_division=0
    )
    return {
        "auc": roc_auc(y, p),
        "auc_ci": bootstrap_ci(y, p, roc_auc, n_boot, seed),
        "pr_auc": pr_auc(y, p),
        "pr_auc_ci": bootstrap_ci(y, p, pr_auc, n_boot, seed),
        "logloss": logloss(y, p),
        "ece": ece(y, p),
        "n_test": int(len(y)),
        "n_pos": int(y.sum()),
        "base_rate": float(y.mean()),
        "threshold": threshold,
        "classification_report": {
            "precision": cls["1"]["precision"],
            "recall": cls["1"]["recall"],
            "f1": cls["1"]["f1-score"],
            "accuracy": cls["accuracy"],
            "predicted_positive": int((p >= threshold).sum()),
        },
    }


def paired_bootstrap(
    y: np.ndarray, a: np.ndarray, b: np.ndarray, metric: Any, n: int = 1000, seed: int = 0
) -> tuple[float, float, float]:
    """metric(a) - metric(b) on the same rows, with a 95% CI from resampling rows jointly."""
    rng = np.random.default_rng(seed)
    diffs = []
    for _ in range(n):
        idx = rng.integers(0, len(y), len(y))
        if 0 < y[idx].sum() < len(idx):
            diffs.append(metric(y[idx], a[idx]) - metric(y[idx], b[idx]))
    lo, hi = np.percentile(diffs, [2.5, 97.5]) if diffs else (float("nan"), float("nan"))
    return float(metric(y, a) - metric(y, b)), float(lo), float(hi)
