"""Window aggregate features for the baselines (pure; the newest event is the prediction point)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

TYPES = ("view", "click", "cart", "fav", "purchase")
FEATURE_NAMES = (
    *(f"n_{t}" for t in TYPES),
    "n_events",
    *(f"current_is_{t}" for t in TYPES[:4]),
    "log_gap_prev_s",
    "log_span_s",
    "current_item_repeats",
    "current_category_repeats",
    "current_item_carted_before",
    "current_item_faved_before",
    "current_item_bought_before",
    "carts_without_buy",
    "n_events_30min",
    "n_carts_30min",
    "n_events_5min",
    "distinct_items_30min",
    "distinct_items",
    "distinct_categories",
    "cart_share",
    "log_since_last_cart_s",
    "log_since_last_purchase_s",
    "hour_sin",
    "hour_cos",
)
NEVER_S = 30 * 86400.0  # "no such event in the window" as a long time ago
TZ_OFFSET_S = 8 * 3600  # Taobao's days are UTC+8; harmless elsewhere (hour is a weak feature)


def _log_s(ms: float) -> float:
    return math.log1p(max(0.0, ms) / 1000.0)


def window_features(window: Sequence[Mapping[str, Any]]) -> list[float]:
    """FEATURE_NAMES values for one window (events oldest first, newest last)."""
    current = window[-1]
    now = current["ts"]
    past = window[:-1]
    types = [e["event_type"] for e in window]
    counts = [float(types.count(t)) for t in TYPES]
    item, category = current["item_id"], current.get("category")
    recent30 = [e for e in window if now - e["ts"] <= 30 * 60_000]
    bought = {e["item_id"] for e in window if e["event_type"] == "purchase"}
    carted = {e["item_id"] for e in window if e["event_type"] == "cart"}
    last_ts = {
        t: max((e["ts"] for e in window if e["event_type"] == t), default=None)
        for t in ("cart", "purchase")
    }
    hour = ((now // 1000 + TZ_OFFSET_S) % 86400) / 3600.0
    return [
        *counts,
        float(len(window)),
        *(float(current["event_type"] == t) for t in TYPES[:4]),
        _log_s(now - past[-1]["ts"]) if past else math.log1p(NEVER_S),
        _log_s(now - window[0]["ts"]),
        float(sum(e["item_id"] == item for e in past)),
        float(sum(category is not None and e.get("category") == category for e in past)),
        float(any(e["item_id"] == item and e["event_type"] == "cart" for e in past)),
        float(any(e["item_id"] == item and e["event_type"] == "fav" for e in past)),
        float(item in bought),
        float(len(carted - bought)),
        float(len(recent30)),
        float(sum(e["event_type"] == "cart" for e in recent30)),
        float(sum(now - e["ts"] <= 5 * 60_000 for e in window)),
        float(len({e["item_id"] for e in recent30})),
        float(len({e["item_id"] for e in window})),
        float(len({e.get("category") for e in window})),
        counts[2] / len(window),
        *(_log_s(now - t) if t is not None else math.log1p(NEVER_S) for t in last_ts.values()),
        math.sin(2 * math.pi * hour / 24),
        math.cos(2 * math.pi * hour / 24),
    ]
