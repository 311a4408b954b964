"""The simulator: deterministic, schema-valid, realistic, and learnable without being trivial."""

from __future__ import annotations

from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

from schemas.validation import validate_event
from stream.kafka.broker import EmbeddedBroker
from stream.simulate import simulate_events
from tests.stream.kafka_helpers import make_topic, read_topic, run_cli

Event = dict[str, Any]


@pytest.fixture(scope="module")
def events() -> list[Event]:
    return simulate_events(users=600, seed=11)


def _by_user(events: list[Event]) -> dict[str, list[Event]]:
    users: dict[str, list[Event]] = defaultdict(list)
    for event in events:
        users[event["user_id"]].append(event)
    return users


def _buys_soon(history: list[Event], index: int, horizon: int = 5) -> bool:
    return any(e["event_type"] == "purchase" for e in history[index + 1 : index + 1 + horizon])


def test_same_seed_same_events_other_seed_other_events() -> None:
    assert simulate_events(40, seed=3) == simulate_events(40, seed=3)
    assert simulate_events(40, seed=3) != simulate_events(40, seed=4)


def test_events_are_schema_valid_sorted_and_uniquely_identified(events: list[Event]) -> None:
    assert all(validate_event(e).invalid is None for e in events)
    assert all(not validate_event(e).dropped_fields for e in events)
    assert [e["ts"] for e in events] == sorted(e["ts"] for e in events)
    assert len({e["event_id"] for e in events}) == len(events)


def test_volume_and_mix_look_like_a_shop(events: list[Event]) -> None:
    users = _by_user(events)
    mix = Counter(e["event_type"] for e in events)

    assert len(users) == 600
    assert 30 <= len(events) / len(users) <= 80
    assert set(mix) == {"view", "click", "fav", "cart", "purchase"}
    assert mix["view"] > mix["click"] > mix["cart"] > mix["purchase"] > 0


def test_sessions_have_their_own_ids_and_gaps(events: list[Event]) -> None:
    for history in _by_user(events).values():
        sessions = [e["session_id"] for e in history]
        assert sessions == sorted(sessions, key=lambda s: int(s.rsplit("-s", 1)[1]))
        gaps = [b["ts"] - a["ts"] for a, b in zip(history, history[1:], strict=False)]
        assert all(g >= 0 for g in gaps)
    users_with_several = sum(
        len({e["session_id"] for e in h}) > 1 for h in _by_user(events).values()
    )
    assert users_with_several > 0.6 * 600


def test_purchases_follow_carts_far_more_often_than_views(events: list[Event]) -> None:
    soon: Counter[str] = Counter()
    total: Counter[str] = Counter()
    for history in _by_user(events).values():
        for index, event in enumerate(history):
            total[event["event_type"]] += 1
            soon[event["event_type"]] += _buys_soon(history, index)

    after_cart = soon["cart"] / total["cart"]
    after_view = soon["view"] / total["view"]
    assert after_cart > 3 * after_view
    assert after_cart < 0.6  # most carts are abandoned: a cart alone does not decide it


def test_history_matters_some_carts_are_bought_in_a_later_session(events: list[Event]) -> None:
    later = total = 0
    for history in _by_user(events).values():
        for index, event in enumerate(history):
            if event["event_type"] != "purchase":
                continue
            total += 1
            carts = [e for e in history[:index] if e["event_type"] == "cart"]
            carts = [e for e in carts if e["item_id"] == event["item_id"]]
            later += bool(carts) and carts[-1]["session_id"] != event["session_id"]

    assert 0.1 < later / total < 0.6


def _features(events: list[Event]) -> tuple[np.ndarray, np.ndarray]:
    rows, labels = [], []
    for history in _by_user(events).values():
        for index, event in enumerate(history):
            if event["event_type"] == "purchase":
                continue
            window = history[max(0, index - 19) : index + 1]
            open_carts = {e["item_id"] for e in window if e["event_type"] == "cart"} - {
                e["item_id"] for e in window if e["event_type"] == "purchase"
            }
            rows.append(
                [
                    event["event_type"] == "cart",
                    len(open_carts),
                    sum(e["event_type"] == "purchase" for e in history[:index]),
                    sum(e["item_id"] == event["item_id"] for e in window),
                    np.log1p(event["price"]),
                ]
            )
            labels.append(_buys_soon(history, index))
    return np.array(rows, dtype=float), np.array(labels)


def test_purchase_propensity_is_learnable_but_not_trivial(events: list[Event]) -> None:
    x_train, y_train = _features(events)
    x_test, y_test = _features(simulate_events(users=600, seed=12))

    model = LogisticRegression(max_iter=1000).fit(x_train, y_train)
    auc = roc_auc_score(y_test, model.predict_proba(x_test)[:, 1])
    cart_only_auc = roc_auc_score(y_test, x_test[:, 0])

    assert 0.03 < y_test.mean() < 0.2
    assert 0.62 < auc < 0.9
    assert cart_only_auc < auc - 0.05


def test_cli_writes_jsonl_that_replays(broker: EmbeddedBroker, tmp_path: Path) -> None:
    out = tmp_path / "sim" / "events.jsonl"

    written = run_cli("simulate", "--users", "25", "--out", str(out), "--seed", "5")
    topic = make_topic(broker.bootstrap)
    replayed = run_cli("replay", str(out), "--bootstrap", broker.bootstrap, "--topic", topic)

    lines = out.read_bytes().splitlines()
    assert written.exit_code == 0 and f"wrote {len(lines)} events for 25 users" in written.output
    assert [orjson.loads(line) for line in lines] == simulate_events(25, seed=5)
    assert replayed.exit_code == 0 and replayed.output.startswith(f"sent={len(lines)} skipped=0 ")
    assert len(read_topic(broker.bootstrap, topic, expected=len(lines))) == len(lines)


def test_cli_writes_to_stdout_and_rejects_bad_input(tmp_path: Path) -> None:
    to_stdout = run_cli("simulate", "--users", "2", "--out", "-")
    no_users = run_cli("simulate", "--users", "0", "--out", str(tmp_path / "x.jsonl"))
    unwritable = run_cli("simulate", "--users", "1", "--out", str(tmp_path))

    assert to_stdout.exit_code == 0
    assert len(to_stdout.stdout.splitlines()) == len(simulate_events(2, seed=0))
    assert no_users.exit_code == 2
    assert unwritable.exit_code == 2 and "is a directory" in unwritable.stderr
