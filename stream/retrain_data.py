"""Retraining data from the outcomes topic: the predictions the workers made, with live labels.

Each Outcome v1 names its user (pseudonym), the prediction point (`last_event_ts`, and with tied
events `last_ts_events`) and the labels the user's later events gave it. The window it was made
from is rebuilt from the events topic: the user's events up to that point, found the way
`bstream monitor --check` finds them (stream/outcome_check.py). So the training examples are
exactly the windows that were scored live, labelled by what happened, not every event of the
topic. The time split is by prediction time (oldest 70% train, next 10% validation, newest 20%
held out), and an example whose horizon crosses its split's end is purged, as in training.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from model.data import LabelledData, group_sequences
from model.labels import Example, split_cuts, split_of
from stream.outcome_check import _positions


def outcome_data(
    outcomes: Iterable[Mapping[str, Any]],
    events: Iterable[Mapping[str, Any]],
    user_key: Callable[[str], str],
    labels: Sequence[str],
    horizon_min: float,
    train: float = 0.7,
    val: float = 0.1,
) -> LabelledData:
    """Labelled, time-split examples: one per distinct outcome whose window the events hold."""
    events = list(events)
    full: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    for event in events:
        full[event["user_id"]].append(event)
    # positions need the event ids (ties); group_sequences keeps the same stable order
    positions = {
        user_key(raw): _positions(sorted(seq, key=lambda e: e["ts"])) for raw, seq in full.items()
    }
    raw_sequences, _ = group_sequences(events, None)
    sequences = {user_key(raw): seq for raw, seq in raw_sequences.items()}
    horizon_ms = int(horizon_min * 60_000)
    points: dict[tuple[str, int, int], tuple[int, tuple[float, ...]]] = {}
    counts = dict.fromkeys(("outcomes", "duplicates", "no_window", "purged"), 0)
    for outcome in outcomes:
        counts["outcomes"] += 1
        key = (str(outcome["user"]), int(outcome["last_event_ts"]), int(outcome["last_ts_events"]))
        if key in points:  # a redelivery, or the same window scored by a shadow challenger
            counts["duplicates"] += 1
            continue
        index = positions.get(key[0], {}).get(key[1:])
        if index is None:
            counts["no_window"] += 1
            continue
        points[key] = (index, tuple(float(outcome["labels"][name]) for name in labels))
    if not points:
        raise ValueError("no outcome matches a window of the events read")
    cuts = split_cuts([ts for _, ts, _ in points], train, val)
    examples = []
    for (user, ts, _), (index, values) in sorted(points.items()):
        split, limit = split_of(ts, cuts)
        if ts + horizon_ms >= limit:  # its label may have read the next split's events
            counts["purged"] += 1
            continue
        examples.append(Example(user, index, ts, values, split))
    per_split = {s: sum(e.split == s for e in examples) for s in ("train", "val", "test")}
    stats: dict[str, Any] = {**counts, "examples": per_split, "users": len(sequences)}
    fingerprint = {
        "source": "outcomes",
        "outcomes": len(points),
        "cuts_ms": [cuts.t1, cuts.t2],
        "split": [train, val, round(1 - train - val, 6)],
        "horizon_min": horizon_min,
        "labels": list(labels),
    }
    return LabelledData(sequences, examples, cuts, tuple(labels), horizon_ms, stats, fingerprint)
