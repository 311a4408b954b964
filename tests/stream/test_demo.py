"""Demo bookkeeping: completion check, latency percentiles, summary lines."""

from __future__ import annotations

from typing import Any

from stream.commands.demo import Live, percentile, summary_lines


def prediction(user: str, ts: int, purchase: float, latency: float = 10.0) -> dict[str, Any]:
    return {
        "user": user,
        "scores": {"purchase": purchase},
        "window_size": 3,
        "last_event_ts": ts,
        "latency_ms": latency,
    }


def test_live_is_done_only_when_every_user_has_their_newest_event() -> None:
    live = Live({"a": 5, "b": 7})

    live.add(prediction("a", 5, 0.1))
    live.add(prediction("b", 6, 0.2))
    assert not live.done()

    live.add(prediction("b", 7, 0.3))
    assert live.done() and live.count == 3


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]

    assert (percentile(values, 50), percentile(values, 99), percentile([], 50)) == (50.0, 99.0, 0.0)


def test_summary_ranks_users_by_purchase_score() -> None:
    live = Live({"low": 1, "high": 1})
    live.add(prediction("low", 1, 0.1, latency=5))
    live.add(prediction("high", 1, 0.9, latency=15))

    lines = summary_lines(live, events=2, elapsed_s=1.0, top=2)

    assert "users predicted    2 / 2" in lines
    assert lines[-2].strip().startswith("high") and lines[-1].strip().startswith("low")
