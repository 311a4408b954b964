"""Event files -> per-user sequences -> labelled, time-split prefix examples, fingerprinted."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from model.bundle import sha256_file
from model.labels import Cuts, Example, build_examples, split_cuts, window_of
from schemas.formats import read_events

# The UserBehavior data set's days, 2017-11-25 .. 2017-12-03 (UTC+8); rows outside are bad clocks.
TAOBAO_DAYS_MS = (1_511_539_200_000, 1_512_316_800_000)
DEFAULT_TS_RANGE: dict[str, tuple[int, int]] = {"taobao": TAOBAO_DAYS_MS}
KEPT_FIELDS = ("event_type", "ts", "item_id", "category", "price")


@dataclass
class LabelledData:
    """Sorted user sequences plus their labelled prefix examples."""

    sequences: dict[str, list[dict[str, Any]]]
    examples: list[Example]
    cuts: Cuts
    label_names: tuple[str, ...]
    horizon_ms: int
    stats: dict[str, Any] = field(default_factory=dict)
    fingerprint: dict[str, Any] = field(default_factory=dict)

    def split(self, name: str) -> list[Example]:
        return [ex for ex in self.examples if ex.split == name]

    def labels_at(self, user: str, index: int) -> tuple[float, ...] | None:
        """The labels of the user's event `index` if it is an example (None: purchase or purged)."""
        if not hasattr(self, "_by_position"):
            self._by_position = {(e.user, e.index): e.labels for e in self.examples}
        return self._by_position.get((user, index))

    def window(self, example: Example, size: int) -> list[Mapping[str, Any]]:
        return window_of(self.sequences[example.user], example.index, size)


def group_sequences(
    events: Iterable[Mapping[str, Any]], ts_range: tuple[int, int] | None
) -> tuple[dict[str, list[dict[str, Any]]], int]:
    """Events grouped by user, stably time-sorted; also the count dropped by `ts_range`."""
    sequences: dict[str, list[dict[str, Any]]] = defaultdict(list)
    out_of_range = 0
    for event in events:
        if ts_range is not None and not ts_range[0] <= event["ts"] < ts_range[1]:
            out_of_range += 1
            continue
        sequences[event["user_id"]].append({k: event[k] for k in KEPT_FIELDS if k in event})
    for events in sequences.values():
        events.sort(key=lambda e: e["ts"])  # stable: file order breaks ties
    return dict(sequences), out_of_range


def load_data(
    path: Path | str,
    fmt: str,
    horizon_min: float = 30.0,
    labels: Sequence[str] = ("purchase",),
    ts_range: tuple[int, int] | None | str = "auto",
    train: float = 0.7,
    val: float = 0.1,
    boundary: str = "auto",
) -> LabelledData:
    """Read a file and build the time split (first `train` of event times, next `val`, rest test).

    boundary: purge | clip | auto (purge, unless purging would leave train or val empty, as on
    a 2-hour slice with a 30-minute horizon; then clip labels at the split boundary).
    """
    path = Path(path)
    if ts_range == "auto":
        ts_range = DEFAULT_TS_RANGE.get(fmt)
    assert not isinstance(ts_range, str)
    data = label_events(read_events(path, fmt), horizon_min, labels, ts_range, train, val, boundary)
    data.fingerprint = {
        "file": path.name,
        "sha256": sha256_file(path),
        "format": fmt,
        **data.fingerprint,
    }
    return data


def label_events(
    events: Iterable[Mapping[str, Any]],
    horizon_min: float = 30.0,
    labels: Sequence[str] = ("purchase",),
    ts_range: tuple[int, int] | None = None,
    train: float = 0.7,
    val: float = 0.1,
    boundary: str = "auto",
) -> LabelledData:
    """`load_data` for events already in memory (e.g. from stream.simulate)."""
    sequences, out_of_range = group_sequences(events, ts_range)
    all_ts = [e["ts"] for events in sequences.values() for e in events]
    if not all_ts:
        raise ValueError("no valid events in the data")
    cuts = split_cuts(all_ts, train, val)
    horizon_ms = int(horizon_min * 60_000)
    examples, counts = build_examples(sequences, horizon_ms, cuts, labels, _purge_or(boundary))
    if boundary == "auto" and (counts["train"] == 0 or counts["val"] == 0):
        boundary = "clip"
        examples, counts = build_examples(sequences, horizon_ms, cuts, labels, boundary)
    boundary = _purge_or(boundary)
    stats: dict[str, Any] = {
        "events": len(all_ts),
        "users": len(sequences),
        "out_of_range_events": out_of_range,
        "examples": counts,
        "positives": {
            split: sum(int(ex.labels[0]) for ex in examples if ex.split == split)
            for split in ("train", "val", "test")
        },
    }
    fingerprint = {
        "ts_range_ms": list(ts_range) if ts_range else None,
        "events": len(all_ts),
        "users": len(sequences),
        "out_of_range_events": out_of_range,
        "cuts_ms": [cuts.t1, cuts.t2],
        "split": [train, val, round(1 - train - val, 6)],
        "horizon_min": horizon_min,
        "boundary": boundary,
        "labels": list(labels),
    }
    return LabelledData(sequences, examples, cuts, tuple(labels), horizon_ms, stats, fingerprint)


def _purge_or(boundary: str) -> str:
    return "purge" if boundary == "auto" else boundary
