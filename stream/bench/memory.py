"""Memory per active window: measured directly on the window store, and from worker RSS growth."""

from __future__ import annotations

import gc
import tracemalloc
from collections.abc import Sequence
from typing import Any

from stream.bench.data import Event
from stream.privacy import pseudonym
from stream.windows import apply_events, encode_window, entry_from_event


def store_bytes_per_window(events: Sequence[Event], window_size: int, key: bytes) -> dict[str, Any]:
    """Bytes per window of a memory:// table (pseudonym bytes -> encoded window), by tracemalloc.

    Builds the same table contents the worker holds after consuming `events`.
    """
    by_user: dict[str, list[Event]] = {}
    for event in events:
        by_user.setdefault(event["user_id"], []).append(event)
    gc.collect()
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        store: dict[bytes, bytes] = {}
        for user, evs in by_user.items():
            applied = apply_events(
                None,
                [entry_from_event(e) for e in evs],
                partition=0,
                now_ms=0,
                size=window_size,
                max_age_ms=7 * 86_400_000,
            )
            store[pseudonym(key, user).encode()] = encode_window(applied.window)
        gc.collect()
        used = tracemalloc.get_traced_memory()[0] - base
    finally:
        tracemalloc.stop()
    value_bytes = sum(len(v) for v in store.values())
    return {
        "windows": len(store),
        "bytes_per_window": round(used / len(store), 1),
        "encoded_value_bytes_mean": round(value_bytes / len(store), 1),
        "events_per_window": round(
            sum(min(len(v), window_size) for v in by_user.values()) / len(store), 2
        ),
    }


def rss_bytes_per_window(phase: dict[str, Any]) -> float | None:
    """Worker RSS growth over a memory phase divided by the windows it then held."""
    windows = phase.get("active_windows") or 0
    if windows <= 0:
        return None
    return round((phase["rss_end_mb"] - phase["rss_start_mb"]) * 2**20 / windows, 1)
