"""Changed-user micro-batching: coalescing, naive groups, model input assembly."""

from __future__ import annotations

from stream.intake import Item, Target, coalesce, model_inputs, plan_groups
from stream.windows import Window


def item(key: bytes, ts: int, partition: int = 0, arrival: float = 0.0, ref: int = 0) -> Item:
    return Item(key, (ts, 0, f"i{ts}", None, None, f"e{ts}"), partition, arrival, ref)


def test_coalesce_gives_one_update_per_user_in_first_seen_order() -> None:
    items = [item(b"a", 1, ref=0), item(b"b", 2, ref=1), item(b"a", 3, ref=2, arrival=5.0)]

    updates = coalesce(items)

    assert [u.key for u in updates] == [b"a", b"b"]
    assert [e[0] for e in updates[0].entries] == [1, 3]
    assert updates[0].refs == [0, 2]
    assert updates[0].arrival == 5.0


def test_coalesce_keeps_the_partition_of_the_users_last_record() -> None:
    updates = coalesce([item(b"a", 1, partition=1), item(b"a", 2, partition=3)])

    assert updates[0].partition == 3


def test_plan_groups_batches_everything_once_or_naively_per_event() -> None:
    items = [item(b"a", 1, ref=0), item(b"a", 2, ref=1), item(b"b", 3, ref=2)]

    batched = plan_groups(items, naive=False)
    naive = plan_groups(items, naive=True)

    assert [[u.key for u in g] for g in batched] == [[b"a", b"b"]]
    assert [[(u.key, u.refs) for u in g] for g in naive] == [
        [(b"a", [0])],
        [(b"a", [1])],
        [(b"b", [2])],
    ]
    assert plan_groups([], naive=False) == []


def test_model_inputs_are_one_event_list_per_target_newest_last() -> None:
    window = Window(0, 0, ((1, 2, "x", "c", None, "e1"), (2, 4, "y", None, 3.0, "e2")))

    inputs = model_inputs([Target(b"a", window, 0.0)])

    assert inputs == [
        [
            {"event_type": "cart", "ts": 1, "item_id": "x", "category": "c"},
            {"event_type": "purchase", "ts": 2, "item_id": "y", "price": 3.0},
        ]
    ]
