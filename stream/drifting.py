"""The drifted behaviour of `bstream simulate --drift-at F` (stream.simulate calls in here).

From the drift point on (a share F of the simulated days, by event time) every session follows a
new app: users browse a new category mix (favourites from another part of the catalogue) and
click through many views; who is keen is drawn afresh, so past purchases tell little. Repeat views
no longer depend on intent, clicks and carts now lean to browsers, carts are rarely bought and
there is no "buy now" on repeat views. Intent shows in one new way: keen users save items (fav)
far more often and buy a saved item a few minutes later. So the link between behaviour and
purchase that a model learnt before the drift point fails after it, while a model re-fitted on
post-drift data learns the new one; purchases stay about as frequent as before.
"""

from __future__ import annotations

import random
from typing import Any

CLICK_BASE = 0.3  # after the drift, chance a step opens the detail page (a click) ...
CLICK_INTENT = -0.4  # ... plus this times intent: now browsers click around, keen users save
CLICK_THROUGH_P = 0.3  # after the drift, share of views followed by a click on the same item
REVISIT_P = 0.15  # after the drift, chance a step goes back to an item seen this session
CART_BASE = 0.1  # after the drift, chance of a cart after a view ...
CART_INTENT = -0.1  # ... plus this times intent: browsers park items, keen users save them ...
CART_BUY_P = 0.03  # ... and the rare cart that is still bought
FAV_BASE = 0.005  # after the drift, chance of a fav after a view ...
FAV_INTENT = 0.15  # ... plus this times the session's intent
FAV_BUY_INTENT = 2.0  # a faved item is bought minutes later with min(0.9, this * intent)


def is_drifted(config: Any, ts: int) -> bool:
    """True for sessions starting at or after the drift point."""
    point = config.drift_ms  # SimConfig.drift_ms
    return point is not None and ts >= point


def _traits(user: Any) -> tuple[list[int], float]:
    """The user's favourite categories (other half of the catalogue) and intent after the drift."""
    if not hasattr(user, "_drift_traits"):
        n = len(user.catalog)
        rng = random.Random(f"drift-{user.seed}-{user.user_id}")  # own stream: no shift before
        favourites = [
            (n // 2 + rng.randrange(max(1, n // 2))) % n for _ in range(len(user.favourites))
        ]
        # who is keen changes too: past purchases no longer tell who buys now
        keen = rng.random() < 0.3
        intent = rng.betavariate(4.0, 6.0) if keen else rng.betavariate(1.0, 12.0)
        user._drift_traits = (favourites, intent)
    return user._drift_traits  # type: ignore[no-any-return]


def favourites(user: Any) -> list[int]:
    """The user's favourite categories after the drift."""
    return _traits(user)[0]


def _item(user: Any, item_id: str) -> Any:
    return user.catalog[int(item_id[1:4])][int(item_id[4:])]  # ids are i<cat:3><index:4>


def session(user: Any, number: int, ts: int, intent: float) -> None:
    """One drifted session of `user` (a stream.simulate._User) from `ts`."""
    rng, config = user.rng, user.config
    intent = min(1.0, intent * _traits(user)[1] / user.intent)  # the session's mood, new trait
    category = rng.choice(favourites(user))
    seen: set[str] = set()
    buying = None  # an item the user has decided to buy in a few minutes
    if user.cart and rng.random() < config.return_to_cart_p:
        item = rng.choice(user.cart)  # looks at the old cart again, but rarely buys from it now
        user.emit("view", item, ts, number)
        seen.add(item.item_id)
        buying = item if rng.random() < CART_BUY_P else None
    while True:
        ts += int(1000 * max(1.0, rng.expovariate(1.0 / config.mean_gap_s)))
        if buying is not None and rng.random() < 0.5:
            ts += int(1000 * rng.uniform(60, 300))  # minutes after the fav (or cart)
            user.emit("purchase", buying, ts, number)
            if buying in user.cart:
                user.cart.remove(buying)
            buying = None
            if rng.random() < 0.6:
                return
            continue
        if rng.random() < 0.15:  # sometimes move category, mostly to a new favourite
            favs = favourites(user)
            category = rng.choice(favs) if rng.random() < 0.7 else rng.randrange(len(user.catalog))
        if seen and rng.random() < REVISIT_P:
            item = _item(user, rng.choice(sorted(seen)))
        else:
            item = user.pick_item(category)
        seen.add(item.item_id)
        click_p = max(0.05, CLICK_BASE + CLICK_INTENT * intent)
        user.emit("click" if rng.random() < click_p else "view", item, ts, number)
        ts, decided = _react(user, item, intent, ts, number)
        if decided and buying is None:
            buying = item
        if rng.random() < config.session_end_p:
            return  # a pending purchase is abandoned


def _react(user: Any, item: Any, intent: float, ts: int, number: int) -> tuple[int, bool]:
    """After a view: click-through, maybe cart or fav; returns (ts, decided to buy the item)."""
    rng = user.rng
    if rng.random() < CLICK_THROUGH_P:
        ts += int(1000 * rng.uniform(1, 5))
        user.emit("click", item, ts, number)
    roll = rng.random()
    cart_p = CART_BASE + CART_INTENT * intent
    if roll < cart_p:
        ts += int(1000 * rng.uniform(2, 20))
        user.emit("cart", item, ts, number)
        user.cart.append(item)
        return ts, rng.random() < CART_BUY_P
    if roll < cart_p + FAV_BASE + FAV_INTENT * intent:
        ts += int(1000 * rng.uniform(2, 20))
        user.emit("fav", item, ts, number)
        return ts, rng.random() < min(0.9, FAV_BUY_INTENT * intent)
    return ts, False
