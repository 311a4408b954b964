"""The drifted behaviour of `bstream simulate --drift-at F` (stream.simulate calls in here).

From the drift point on (a share F of the simulated days, by event time) every session changes:
users browse a new category mix (favourites drawn from another part of the catalogue), click
through most views, and the funnel converts differently: carts mostly become wish lists that are
rarely bought, while repeat views lead straight to "buy now" purchases. The link between behaviour
and purchase that a model learnt before the drift point no longer holds after it.
"""

from __future__ import annotations

import random
from typing import Any

CLICK_THROUGH_P = 0.5  # after the drift, share of views followed by a click on the same item
CART_CHECKOUT_P = 0.2  # after the drift, share of carts that may still become a checkout
BUY_NOW_BASE = 0.01  # after the drift, chance of an immediate purchase on a repeat view ...
BUY_NOW_INTENT = 0.1  # ... plus this times the session's intent


def is_drifted(config: Any, ts: int) -> bool:
    """True for sessions starting at or after the drift point."""
    point = config.drift_ms  # SimConfig.drift_ms
    return point is not None and ts >= point


def favourites(user: Any) -> list[int]:
    """The user's favourite categories after the drift: from the other half of the catalogue."""
    if not hasattr(user, "_drift_favourites"):
        n = len(user.catalog)
        rng = random.Random(f"drift-{user.seed}-{user.user_id}")  # own stream: no shift before
        user._drift_favourites = [
            (n // 2 + rng.randrange(max(1, n // 2))) % n for _ in range(len(user.favourites))
        ]
    return user._drift_favourites  # type: ignore[no-any-return]


def react(
    user: Any, item: Any, seen: int, intent: float, ts: int, session: int
) -> tuple[int, bool]:
    """The drifted funnel after a view: returns (ts, carted-and-may-check-out)."""
    rng = user.rng
    if rng.random() < CLICK_THROUGH_P:  # the new app: most views are followed by a click
        ts += int(1000 * rng.uniform(1, 5))
        user.emit("click", item, ts, session)
    roll = rng.random()
    cart_p = 0.08 + 0.2 * intent
    if roll < cart_p:
        ts += int(1000 * rng.uniform(2, 20))
        user.emit("cart", item, ts, session)
        user.cart.append(item)
        return ts, rng.random() < CART_CHECKOUT_P
    if roll < cart_p + 0.03:
        user.emit("fav", item, ts + 1000, session)
    elif seen >= 2 and roll < cart_p + 0.03 + BUY_NOW_BASE + BUY_NOW_INTENT * intent:
        ts += int(1000 * rng.uniform(20, 90))
        user.emit("purchase", item, ts, session)
    return ts, False
