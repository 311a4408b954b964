"""Bench input as plain data: the events to replay, each user's newest event, realistic windows.

>>> evs = [{"user_id": "a", "ts": 1}, {"user_id": "b", "ts": 2}, {"user_id": "a", "ts": 3}]
>>> newest_by_user(evs)
{'a': 3, 'b': 2}
>>> [len(w) for w in prefix_windows(evs, size=50)]
[1, 1, 2]
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from schemas.formats import event_json, read_events

Event = dict[str, Any]
TAOBAO_DEFAULT = Path("../shared/data/taobao/UserBehavior_timeslice_110k.csv")


@dataclass
class BenchData:
    """Events in replay order, their Kafka records, and a one-line description of the source."""

    events: list[Event]
    source: str

    def records(self, limit: int | None = None) -> list[tuple[bytes, bytes]]:
        """(key, value) per event: user id as key, UserEvent JSON as value."""
        chosen = self.events if limit is None else self.events[:limit]
        return [(e["user_id"].encode(), event_json(e)) for e in chosen]

    @property
    def users(self) -> int:
        return len({e["user_id"] for e in self.events})

    def head(self, n: int) -> BenchData:
        """The first `n` events (the source line says so)."""
        return BenchData(self.events[:n], f"{self.source}, first {n} used")


def sized_events(
    available: int, preds_per_s: float, model_seconds: float, floor: int = 2_000
) -> int:
    """Events for the max-rate run: about `model_seconds` of pure model time, at least `floor`.

    >>> sized_events(110_300, 50.0, 120.0), sized_events(110_300, 9_000.0, 120.0)
    (6000, 110300)
    """
    return min(available, max(floor, int(preds_per_s * model_seconds)))


def load_data(path: Path | None, fmt: str, events: int, seed: int = 0) -> BenchData:
    """The first `events` valid events of `path`, or simulated ones when `path` is None."""
    if path is not None:
        chosen = list(itertools.islice(read_events(path, fmt), events))
        return BenchData(chosen, f"{path.name} ({fmt}, first {len(chosen)} valid events)")
    from stream.simulate import simulate_events

    users = max(1, events // 40)  # the simulator gives ~50 events per user
    simulated = simulate_events(users, seed=seed)
    while len(simulated) < events:  # rare: top up with more users
        users *= 2
        simulated = simulate_events(users, seed=seed)
    return BenchData(simulated[:events], f"simulated ({users} users, seed {seed}, {events} events)")


def default_data_path(repo: Path) -> Path | None:
    """The shared Taobao slice next to the repository, when it is there."""
    path = (repo / TAOBAO_DEFAULT).resolve()
    return path if path.is_file() else None


def newest_by_user(events: Iterable[Event]) -> dict[str, int]:
    """Each user's newest event time: the `last_event_ts` their final prediction must carry."""
    newest: dict[str, int] = {}
    for event in events:
        user = event["user_id"]
        newest[user] = max(newest.get(user, event["ts"]), event["ts"])
    return newest


def prefix_windows(events: Sequence[Event], size: int) -> list[list[Event]]:
    """The window each event leaves behind (its user's last `size` events so far, newest last).

    These are the windows the worker predicts, so their length mix is the realistic one.
    """
    history: dict[str, list[Event]] = {}
    windows = []
    for event in events:
        seen = history.setdefault(event["user_id"], [])
        seen.append(event)
        del seen[:-size]
        windows.append(list(seen))
    return windows


def sample_batches(
    windows: Sequence[list[Event]], batch_size: int, batches: int, seed: int = 0
) -> list[list[list[Event]]]:
    """`batches` random batches of `batch_size` windows each (with replacement across batches)."""
    rng = random.Random(seed)
    size = min(batch_size, len(windows))
    return [rng.sample(list(windows), size) for _ in range(batches)]


def memory_events(users: int, per_user: int, start_ms: int = 1_700_000_000_000) -> list[Event]:
    """`per_user` events for each of `users` users, user after user (one coalesced update each)."""
    types = ("view", "view", "click", "cart", "view", "fav")
    return [
        {
            "user_id": f"m{u}",
            "event_type": types[(u + i) % len(types)],
            "ts": start_ms + i * 1000,
            "item_id": str((u * 7 + i) % 100_000),
            "category": str(u % 500),
            "event_id": f"m{u}-{i}",
        }
        for u in range(users)
        for i in range(per_user)
    ]


def hot_user_events(
    users: int, events: int, seed: int = 0, start_ms: int = 1_700_000_000_000
) -> list[Event]:
    """`events` events from only `users` users, interleaved at random (each batch coalesces)."""
    rng = random.Random(seed)
    types = ("view", "view", "view", "click", "cart", "fav")
    return [
        {
            "user_id": f"h{rng.randrange(users)}",
            "event_type": rng.choice(types),
            "ts": start_ms + i,
            "item_id": str(rng.randrange(5_000)),
            "category": str(rng.randrange(50)),
            "event_id": f"h-{seed}-{i}",
        }
        for i in range(events)
    ]
