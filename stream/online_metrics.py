"""Online accuracy and calibration of labelled predictions: a ring buffer and since-start bins.

The recent window (the last N outcomes) is scored exactly with scikit-learn; since-start figures
come from fixed score bins (bounded memory): logloss and base rate exact, AUC, PR-AUC and ECE
from 10,000 / 10 score bins (scikit-learn's answer on scores rounded to the bin).

>>> r = OnlineQuality(window=4)
>>> for s, y in [(0.9, 1), (0.2, 0), (0.7, 1), (0.4, 0)]:
...     r.add(s, y, delay_ms=1000)
>>> r.recent()["auc"], r.since_start()["auc"]
(1.0, 1.0)
"""

from __future__ import annotations

import importlib
import math
import threading
from typing import Any

import numpy as np

ECE_BINS = 10
FINE_BINS = 10_000
EPS = 1e-7
NAN = float("nan")


def import_in_background() -> threading.Thread:
    """Import scikit-learn on a thread: 2 s at startup that the worker spends joining its group."""
    thread = threading.Thread(
        target=importlib.import_module,
        args=("sklearn.metrics",),
        name="import-sklearn",
        daemon=True,
    )
    thread.start()
    return thread


def expected_calibration_error(
    scores: np.ndarray, labels: np.ndarray, bins: int = ECE_BINS
) -> float:
    """ECE over equal-width score bins: sum of |mean score - positive rate| weighted by bin size."""
    if len(scores) == 0:
        return NAN
    index = np.minimum((scores * bins).astype(int), bins - 1)
    count = np.bincount(index, minlength=bins)
    score_sum = np.bincount(index, weights=scores, minlength=bins)
    label_sum = np.bincount(index, weights=labels, minlength=bins)
    return float(np.abs(score_sum - label_sum).sum() / count.sum())


def quality(scores: np.ndarray, labels: np.ndarray, delays_ms: np.ndarray | None = None) -> dict:
    """AUC, PR-AUC, logloss, ECE, base rate (and label delay p50/p95 in s) of labelled scores."""
    # Lazy: a worker imports scikit-learn on a thread while it joins its group (2 s at startup).
    from sklearn.metrics import average_precision_score, log_loss, roc_auc_score

    n = len(scores)
    out: dict[str, float] = {"n": float(n)}
    both = n > 0 and 0 < labels.sum() < n
    out["auc"] = float(roc_auc_score(labels, scores)) if both else NAN
    out["pr_auc"] = float(average_precision_score(labels, scores)) if both else NAN
    out["logloss"] = (
        float(log_loss(labels, np.clip(scores, EPS, 1 - EPS), labels=[0, 1])) if n else NAN
    )
    out["ece"] = expected_calibration_error(scores, labels)
    out["base_rate"] = float(labels.mean()) if n else NAN
    if delays_ms is not None:
        for q in (50, 95):
            out[f"delay_p{q}_s"] = float(np.percentile(delays_ms, q)) / 1000 if n else NAN
    return out


def calibration_table(
    scores: np.ndarray, labels: np.ndarray, bins: int = ECE_BINS
) -> list[tuple[str, int, float, float]]:
    """(bin name, count, mean score, positive rate) per equal-width score bin (empty bins: NaN)."""
    index = np.minimum((scores * bins).astype(int), bins - 1)
    count = np.bincount(index, minlength=bins)
    score_sum = np.bincount(index, weights=scores, minlength=bins)
    label_sum = np.bincount(index, weights=labels, minlength=bins)
    rows = []
    for b in range(bins):
        n = int(count[b])
        mean = float(score_sum[b] / n) if n else NAN
        rate = float(label_sum[b] / n) if n else NAN
        rows.append((f"{b / bins:.1f}-{(b + 1) / bins:.1f}", n, mean, rate))
    return rows


class OnlineQuality:
    """One model version's outcomes: the last `window` exactly, everything since start binned."""

    def __init__(self, window: int = 5000) -> None:
        self.window = window
        self.scores = np.zeros(window)
        self.labels = np.zeros(window)
        self.delays = np.zeros(window)
        self.count = 0  # outcomes since start
        self.pos_bins = np.zeros(FINE_BINS)
        self.neg_bins = np.zeros(FINE_BINS)
        self.logloss_sum = 0.0

    def add(self, score: float, label: float, delay_ms: float) -> None:
        """Take one labelled prediction."""
        i = self.count % self.window
        self.scores[i], self.labels[i], self.delays[i] = score, label, delay_ms
        self.count += 1
        b = min(int(score * FINE_BINS), FINE_BINS - 1)
        (self.pos_bins if label else self.neg_bins)[b] += 1
        p = min(max(score, EPS), 1 - EPS)
        self.logloss_sum -= math.log(p) if label else math.log(1 - p)

    def recent(self) -> dict[str, float]:
        """Exact figures over the last `window` outcomes."""
        n = min(self.count, self.window)
        return quality(self.scores[:n], self.labels[:n], self.delays[:n])

    def calibration(self) -> list[tuple[str, int, float, float]]:
        """The calibration table of the last `window` outcomes."""
        n = min(self.count, self.window)
        return calibration_table(self.scores[:n], self.labels[:n])

    def since_start(self) -> dict[str, float]:
        """Figures over every outcome since start, from the score bins."""
        pos, neg = self.pos_bins, self.neg_bins
        n_pos, n_neg = pos.sum(), neg.sum()
        n = n_pos + n_neg
        out: dict[str, float] = {"n": float(n), "auc": NAN, "pr_auc": NAN}
        if n_pos and n_neg:
            # AUC: P(score_pos > score_neg) + half the ties (same bin)
            neg_below = np.cumsum(neg) - neg
            out["auc"] = float((pos * (neg_below + 0.5 * neg)).sum() / (n_pos * n_neg))
            # average precision over thresholds at the bin edges, highest first
            tp, fp = np.cumsum(pos[::-1]), np.cumsum(neg[::-1])
            hit = pos[::-1] > 0
            out["pr_auc"] = float((pos[::-1][hit] / n_pos * (tp[hit] / (tp[hit] + fp[hit]))).sum())
        out["logloss"] = float(self.logloss_sum / n) if n else NAN
        centers = (np.arange(FINE_BINS) + 0.5) / FINE_BINS
        coarse = np.minimum((centers * ECE_BINS).astype(int), ECE_BINS - 1)
        score_sum = np.bincount(coarse, weights=centers * (pos + neg), minlength=ECE_BINS)
        label_sum = np.bincount(coarse, weights=pos, minlength=ECE_BINS)
        out["ece"] = float(np.abs(score_sum - label_sum).sum() / n) if n else NAN
        out["base_rate"] = float(n_pos / n) if n else NAN
        return out

    def summary(self) -> dict[str, Any]:
        """Both views, for `bstream monitor` and the gauges."""
        return {"recent": self.recent(), "since_start": self.since_start()}
