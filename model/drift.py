"""Input and score drift: per-window profiles, reference histograms, sliding histograms and PSI.

Each prediction's window gives one bin per feature: the newest event's type, the window length,
the gap before the newest event, the newest event's price bucket, the share of repeated items in
the window, and the primary score. The bundle's reference (`drift_reference.json`, built from the
validation windows at training time, or later with `bstream drift-reference`) holds the same
histograms; the worker keeps them over the last N predictions and exports PSI per feature.

>>> one, two = [(0, "view", "a", None)], [(0, "view", "a", None), (5000, "cart", "a", 9.0)]
>>> ref = build_reference([one, two], [0.1, 0.6])
>>> mon = DriftMonitor(ref, window=10)
>>> mon.add([(0, "view", "a", None)], 0.1)
>>> round(mon.psi()["event_type"], 3) > 0
True
"""

from __future__ import annotations

import bisect
import json
import math
from collections import deque
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

REFERENCE_FILE = "drift_reference.json"
EVENT_TYPES = ("view", "click", "cart", "fav", "purchase")
# Fixed bin edges; bin 0 is "missing" (no previous event, no price) where a feature can be absent.
EDGES: dict[str, list[float]] = {
    "window_length": [2, 3, 5, 10, 20, 35, 50, 100],
    "gap_s": [1, 5, 15, 60, 300, 1800, 7200, 86400],
    "price": [10, 30, 100, 300, 1000],
    "repeat_share": [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9],
}
FEATURES = ("event_type", "window_length", "gap_s", "price", "repeat_share", "score")
SCORE_BINS = 10
PSI_FLOOR = 1e-4  # proportions are floored so an empty bin does not make PSI infinite

# One window event for profiling: (ts_ms, event_type, item_id, price or None), oldest first.
ProfileEvent = tuple[int, str, str, float | None]


def _bin(edges: Sequence[float], value: float) -> int:
    return bisect.bisect_right(edges, value)


def bin_count(feature: str, reference: Mapping[str, Any] | None = None) -> int:
    """Number of bins of a feature (score bins come from the reference's quantile edges)."""
    if feature == "event_type":
        return len(EVENT_TYPES)
    if feature == "score":
        edges = reference["score_edges"] if reference else [0.0] * (SCORE_BINS - 1)
        return len(edges) + 1
    return len(EDGES[feature]) + 2  # + the missing bin


def profile(window: Sequence[ProfileEvent]) -> dict[str, int]:
    """The input bins of one window (the score is binned separately)."""
    ts, kind, _, price = window[-1]
    items = [e[2] for e in window]
    missing = 0
    return {
        "event_type": EVENT_TYPES.index(kind),
        "window_length": 1 + _bin(EDGES["window_length"], len(window)),
        "gap_s": 1 + _bin(EDGES["gap_s"], (ts - window[-2][0]) / 1000)
        if len(window) > 1
        else missing,
        "price": 1 + _bin(EDGES["price"], price) if price is not None else missing,
        "repeat_share": 1 + _bin(EDGES["repeat_share"], 1 - len(set(items)) / len(items)),
    }


def events_profile(window: Sequence[Mapping[str, Any]]) -> list[ProfileEvent]:
    """UserEvent-style dicts (training data) as profile events."""
    return [(int(e["ts"]), e["event_type"], str(e["item_id"]), e.get("price")) for e in window]


def score_edges(scores: Sequence[float], bins: int = SCORE_BINS) -> list[float]:
    """Quantile edges of the reference scores (deduplicated: few distinct scores, fewer bins)."""
    ordered = sorted(scores)
    edges = [ordered[min(len(ordered) - 1, int(len(ordered) * k / bins))] for k in range(1, bins)]
    return sorted(set(edges))


def build_reference(windows: Sequence[Sequence[ProfileEvent]], scores: Sequence[float]) -> dict:
    """Reference histograms (proportions per bin) of the inputs and the primary score."""
    if not windows or len(windows) != len(scores):
        raise ValueError("a drift reference needs windows with one score each")
    reference: dict[str, Any] = {"score_edges": score_edges(scores), "n": len(windows)}
    counts = {f: [0] * bin_count(f, reference) for f in FEATURES}
    for window, score in zip(windows, scores, strict=True):
        for feature, b in profile(window).items():
            counts[feature][b] += 1
        counts["score"][_bin(reference["score_edges"], score)] += 1
    reference["histograms"] = {f: [c / len(windows) for c in counts[f]] for f in FEATURES}
    return reference


def psi(expected: Sequence[float], actual: Sequence[float]) -> float:
    """Population stability index of two proportion vectors over the same bins."""
    total = 0.0
    for e, a in zip(expected, actual, strict=True):
        e, a = max(e, PSI_FLOOR), max(a, PSI_FLOOR)
        total += (a - e) * math.log(a / e)
    return total


class DriftMonitor:
    """The same histograms over the last `window` predictions, and their PSI to the reference."""

    def __init__(self, reference: Mapping[str, Any], window: int = 5000) -> None:
        self.reference = reference
        self.window = window
        self.counts = {f: [0] * bin_count(f, reference) for f in FEATURES}
        self.recent: deque[tuple[int, ...]] = deque()

    def add(self, window: Sequence[ProfileEvent], score: float) -> None:
        """Take one prediction's window and primary score."""
        bins = profile(window)
        row = (*(bins[f] for f in FEATURES[:-1]), _bin(self.reference["score_edges"], score))
        for feature, b in zip(FEATURES, row, strict=True):
            self.counts[feature][b] += 1
        self.recent.append(row)
        if len(self.recent) > self.window:
            for feature, b in zip(FEATURES, self.recent.popleft(), strict=True):
                self.counts[feature][b] -= 1

    def psi(self) -> dict[str, float]:
        """PSI per feature over the sliding window (empty until a prediction was seen)."""
        n = len(self.recent)
        if not n:
            return {}
        hist = self.reference["histograms"]
        return {f: psi(hist[f], [c / n for c in self.counts[f]]) for f in FEATURES}


def save_reference(bundle_dir: Path, reference: Mapping[str, Any]) -> Path:
    """Write the reference next to bundle.json (not a hashed file: it can be added later)."""
    path = Path(bundle_dir) / REFERENCE_FILE
    path.write_text(json.dumps(reference, indent=1) + "\n")
    return path


def load_reference(bundle_dir: Path | str) -> dict[str, Any] | None:
    """The bundle's drift reference, or None for bundles made without one."""
    path = Path(bundle_dir) / REFERENCE_FILE
    if not path.is_file():
        return None
    reference: dict[str, Any] = json.loads(path.read_text())
    return reference
