"""Check published outcomes against the offline training labels of the same event file (pure).

Maps each outcome to the training example it stands for: the user's event at `last_event_ts`
(with ties, the last copy of the `last_ts_events`-th distinct event at that time, in file order),
then compares labels with `model.labels.label_sequence` on the user's whole sequence. Also sorts
every published prediction into labelled / window ends in a purchase / pending at the end of the
file (the user's own event time never passed the horizon) / re-predicted (redelivery, restart) at or
before an already settled point / other (lost or dropped by the bound: should be 0).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from model.labels import label_sequence
from stream.windows import entry_from_event

Key = tuple[str, int, int]  # (user key, last_event_ts, distinct events at that ts)
# A prediction made again after a restart (replayed events, other batch boundaries) at or before a
# point of the user's that was already settled: ignored by design (stream.outcomes.remember), so
# a restart does not publish outcomes twice. It never had a pending outcome to lose.
REPLAYED = "re-predicted at or before a settled point (a redelivery or a restart)"


@dataclass
class CheckReport:
    """Agreement of outcome labels with the offline labels, and prediction coverage."""

    outcomes: int = 0
    duplicates: int = 0
    compared: int = 0
    mismatches: int = 0
    unknown: int = 0  # outcomes with no offline example (not from this file)
    predictions: int = 0
    reasons: dict[str, int] = field(default_factory=dict)
    mismatch_examples: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        share = self.reasons.get("labelled", 0) / self.predictions if self.predictions else 0.0
        out = [
            f"outcomes: {self.outcomes} (+{self.duplicates} redelivered copies), compared with "
            f"the offline label function: {self.compared}, mismatches: {self.mismatches}, "
            f"not in the file: {self.unknown}",
        ]
        if self.predictions:
            why = ", ".join(f"{k}={v}" for k, v in sorted(self.reasons.items()))
            out.append(
                f"predictions: {self.predictions} distinct, {share:.1%} got an outcome ({why})"
            )
        out += [f"  mismatch: {m}" for m in self.mismatch_examples]
        return out


def _positions(seq: Sequence[Mapping[str, Any]]) -> dict[tuple[int, int], int]:
    """(ts, k) -> index of the last copy of the k-th distinct event at ts (file order)."""
    out: dict[tuple[int, int], int] = {}
    seen: dict[int, list[str]] = defaultdict(list)
    for index, event in enumerate(seq):
        ts, eid = int(event["ts"]), entry_from_event(event)[5]
        eids = seen[ts]
        if eid not in eids:
            eids.append(eid)
        out[(ts, len(eids))] = index
    return out


def offline_examples(
    events: Iterable[Mapping[str, Any]],
    user_key: Callable[[str], str],
    horizon_ms: int,
    labels: Sequence[str],
) -> tuple[dict[Key, tuple[float, ...] | None], dict[str, list[int]]]:
    """Offline labels per outcome key (None: the event is a purchase), and each user's ts list."""
    sequences: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    for event in events:
        sequences[event["user_id"]].append(event)
    table: dict[Key, tuple[float, ...] | None] = {}
    times: dict[str, list[int]] = {}
    for raw, seq in sequences.items():
        seq.sort(key=lambda e: e["ts"])  # stable, like model.data.group_sequences
        user = user_key(raw)
        found = dict(label_sequence(seq, horizon_ms, labels))
        for (ts, k), index in _positions(seq).items():
            table[(user, ts, k)] = found.get(index)
        times[user] = [int(e["ts"]) for e in seq]
    return table, times


def check_outcomes(
    outcomes: Iterable[Mapping[str, Any]],
    expected: Mapping[Key, tuple[float, ...] | None],
    labels: Sequence[str],
    predictions: Iterable[Mapping[str, Any]] = (),
    times: Mapping[str, list[int]] | None = None,
    horizon_ms: int = 0,
) -> CheckReport:
    """Compare outcomes (deduplicated by outcome_id) with the offline labels; sort predictions."""
    report = CheckReport()
    done: set[tuple[str, int]] = set()
    ids: set[str] = set()
    for outcome in outcomes:
        if outcome["outcome_id"] in ids:
            report.duplicates += 1
            continue
        ids.add(outcome["outcome_id"])
        report.outcomes += 1
        key = (outcome["user"], int(outcome["last_event_ts"]), int(outcome["last_ts_events"]))
        done.add(key[:2])
        if key not in expected or expected[key] is None:
            report.unknown += 1
            continue
        report.compared += 1
        live = tuple(float(outcome["labels"][name]) for name in labels)
        if live != expected[key]:
            report.mismatches += 1
            if len(report.mismatch_examples) < 5:
                report.mismatch_examples.append(
                    f"{key[0][:12]}... ts={key[1]} {live} vs {expected[key]}"
                )
    reasons: dict[str, int] = defaultdict(int)
    settled: dict[str, int] = {}  # per user, the newest last_event_ts with an outcome
    for user, ts in done:
        settled[user] = max(settled.get(user, -1), ts)
    for user, ts in {(p["user"], int(p["last_event_ts"])) for p in predictions}:
        report.predictions += 1
        if (user, ts) in done:
            reasons["labelled"] += 1
        elif ts <= settled.get(user, -1):
            reasons[REPLAYED] += 1
        elif any(
            expected.get((user, ts, k), ()) is None and (user, ts, k) in expected
            for k in range(1, 4)
        ):
            reasons["window ends in a purchase"] += 1
        elif times is not None and max(times.get(user, [ts])) - ts <= horizon_ms:
            reasons["pending at the end of the file"] += 1
        else:
            reasons["other (dropped by the bound or in flight)"] += 1
    report.reasons = dict(reasons)
    return report
