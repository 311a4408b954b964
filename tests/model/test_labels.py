"""Labels and time splits: forward-only labels, purged boundaries, no leakage by construction."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from model.data import load_data
from model.labels import Cuts, build_examples, label_sequence, split_cuts, window_of
from tests.conftest import TAOBAO_USERS, need_shared

MIN = 60_000
H = 30 * MIN


def ev(event_type: str, ts: int, item: str = "1") -> dict[str, Any]:
    return {"event_type": event_type, "ts": ts, "item_id": item}


def test_labels_look_forward_within_the_horizon_only() -> None:
    events = [ev("view", 0), ev("cart", 10 * MIN), ev("purchase", 31 * MIN), ev("view", 40 * MIN)]

    labelled = label_sequence(events, H, ("purchase",))

    # view@0 is 31 min before the buy (outside), cart@10 is 21 min before it; buys are no examples
    assert labelled == [(0, (0.0,)), (1, (1.0,)), (3, (0.0,))]


def test_a_purchase_in_the_same_second_but_later_in_the_log_counts() -> None:
    assert label_sequence([ev("cart", 5), ev("purchase", 5)], H, ("purchase",)) == [(0, (1.0,))]


def test_multi_label_heads_get_one_label_each() -> None:
    events = [ev("view", 0), ev("cart", MIN), ev("view", 2 * MIN)]

    assert label_sequence(events, H, ("purchase", "cart")) == [
        (0, (0.0, 1.0)),
        (1, (0.0, 0.0)),
        (2, (0.0, 0.0)),
    ]


def test_split_cuts_are_event_time_quantiles() -> None:
    cuts = split_cuts(list(range(100)))

    assert cuts == Cuts(70, 80)


def test_purge_drops_prefixes_whose_horizon_crosses_a_boundary() -> None:
    cuts = Cuts(t1=100 * MIN, t2=200 * MIN)
    events = [
        ev("view", 10 * MIN),
        ev("view", 80 * MIN),
        ev("view", 120 * MIN),
        ev("view", 250 * MIN),
    ]

    examples, counts = build_examples({"u": events}, H, cuts)

    assert [(e.index, e.split) for e in examples] == [(0, "train"), (2, "val"), (3, "test")]
    assert counts["purged"] == 1


def test_window_never_contains_later_events() -> None:
    events = [ev("view", i) for i in range(10)]

    assert window_of(events, 4, 3) == events[2:5]
    assert window_of(events, 1, 50) == events[:2]


sequences = st.dictionaries(
    st.sampled_from(["u1", "u2", "u3"]),
    st.lists(
        st.builds(
            ev,
            st.sampled_from(["view", "cart", "fav", "purchase"]),
            st.integers(0, 300).map(lambda m: m * MIN),
        ),
        max_size=40,
    ).map(lambda es: sorted(es, key=lambda e: e["ts"])),
    min_size=1,
)
cuts_strategy = st.tuples(st.integers(0, 300), st.integers(0, 300)).map(
    lambda p: Cuts(min(p) * MIN, max(p) * MIN)
)
boundaries = st.sampled_from(["purge", "clip"])


@settings(max_examples=150, deadline=None)
@given(seqs=sequences, cuts=cuts_strategy, boundary=boundaries)
def test_every_label_matches_a_brute_force_forward_look_inside_its_split(
    seqs, cuts, boundary
) -> None:  # type: ignore[no-untyped-def]
    examples, _ = build_examples(seqs, H, cuts, boundary=boundary)

    for ex in examples:
        events = seqs[ex.user]
        limit = {"train": cuts.t1, "val": cuts.t2, "test": float("inf")}[ex.split]
        later = events[ex.index + 1 :]
        expected = any(
            e["event_type"] == "purchase" and e["ts"] - ex.ts <= H and e["ts"] < limit
            for e in later
        )
        assert ex.labels == (float(expected),)
        assert events[ex.index]["event_type"] != "purchase"
        assert all(e["ts"] <= ex.ts for e in window_of(events, ex.index, 50))
        if boundary == "purge" and ex.split != "test":
            assert ex.ts + H < limit


def drop_from(
    seqs: dict[str, list[dict[str, Any]]], t: int, extra: list[dict[str, Any]]
) -> dict[str, list[dict[str, Any]]]:
    """Delete every event at or after t and add unrelated later ones (a different future)."""
    changed = {u: [e for e in es if e["ts"] < t] for u, es in seqs.items()}
    for user in changed:
        changed[user] = changed[user] + sorted(
            (e for e in extra if e["ts"] >= t), key=lambda e: e["ts"]
        )
    return changed


@settings(max_examples=150, deadline=None)
@given(
    seqs=sequences,
    cuts=cuts_strategy,
    boundary=boundaries,
    extra=st.lists(
        st.builds(ev, st.just("purchase"), st.integers(0, 400).map(lambda m: m * MIN)), max_size=5
    ),
)
def test_no_leakage_changing_the_future_never_changes_earlier_splits(
    seqs, cuts, boundary, extra
) -> None:  # type: ignore[no-untyped-def]
    def part(
        s: dict[str, list[dict[str, Any]]], name: str
    ) -> list[tuple[str, int, tuple[float, ...]]]:
        examples, _ = build_examples(s, H, cuts, boundary=boundary)
        return [(e.user, e.index, e.labels) for e in examples if e.split == name]

    # train examples are a function of events before t1 only; val of events before t2 only
    assert part(drop_from(seqs, cuts.t1, extra), "train") == part(seqs, "train")
    assert part(drop_from(seqs, cuts.t2, extra), "val") == part(seqs, "val")


def test_load_data_filters_out_of_range_times_and_fingerprints(tmp_path: Path) -> None:
    rows = [
        {"user_id": "a", "event_type": "view", "ts": 1_000 + i * MIN, "item_id": str(i % 3)}
        for i in range(100)
    ]
    rows.append({"user_id": "a", "event_type": "view", "ts": 10, "item_id": "9"})
    path = tmp_path / "events.jsonl"
    path.write_bytes(b"\n".join(orjson.dumps(r) for r in rows))

    data = load_data(path, "jsonl", ts_range=(1_000, 10**12))

    assert data.stats["out_of_range_events"] == 1
    assert data.fingerprint["events"] == 100 and len(data.fingerprint["sha256"]) == 64
    assert {e.split for e in data.examples} == {"train", "val", "test"}


def test_users800_split_matches_the_readme() -> None:
    data = load_data(need_shared(TAOBAO_USERS), "taobao")

    test = data.split("test")
    assert data.stats["out_of_range_events"] == 35
    assert data.fingerprint["boundary"] == "purge"
    assert sum(e.labels[0] for e in test) / len(test) == pytest.approx(0.062, abs=0.002)
