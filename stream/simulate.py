"""Synthetic shopping behaviour with funnel dynamics, deterministic per seed.

Each user has a hidden purchase intent, favourite categories and a price tolerance. They come back
in sessions spread over a week (more in the evening). Within a session they browse (view, click),
sometimes save (fav) or add to cart, and buy with a probability that rises with intent, repeated
views and a waiting cart, and falls with price. Carts are often abandoned and sometimes bought in a
later session, so the signal is learnable from history but no single event gives it away.

>>> events = simulate_events(users=3, seed=7)
>>> events == simulate_events(users=3, seed=7), sorted(events[0])[:3]
(True, ['category', 'event_id', 'event_type'])
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from tqdm import tqdm

from stream import drifting

START_MS = 1_700_006_400_000  # 2023-11-15 00:00 UTC
DAY_MS = 86_400_000
# Share of session starts per hour of day: quiet at night, peaks in the evening.
HOUR_WEIGHTS = [1, 1, 1, 1, 1, 1, 2, 3, 4, 4, 4, 5, 6, 5, 4, 4, 5, 6, 8, 10, 11, 10, 7, 3]


@dataclass(frozen=True)
class SimConfig:
    """Knobs of the simulation; the defaults give ~50 events per user."""

    days: int = 7
    categories: int = 40
    items_per_category: int = 150
    mean_sessions: float = 3.5  # sessions per user = 1 + Poisson(mean_sessions)
    session_end_p: float = 0.08  # per-step chance the session ends (mean ~12 events)
    mean_gap_s: float = 40.0  # between events inside a session
    return_to_cart_p: float = 0.3  # chance a session with a waiting cart revisits it
    drift_at: float | None = None  # share of `days` after which behaviour drifts (stream/drifting)

    @property
    def drift_ms(self) -> float | None:
        """Event time (ms) of the drift point, or None without drift."""
        return None if self.drift_at is None else START_MS + self.drift_at * self.days * DAY_MS


@dataclass(frozen=True)
class Item:
    item_id: str
    category: str
    price: float


def build_catalog(seed: int, config: SimConfig) -> list[list[Item]]:
    """Items per category; prices log-normal around a per-category level."""
    rng = random.Random(f"catalog-{seed}")
    catalog = []
    for c in range(config.categories):
        level = rng.lognormvariate(3.0, 0.8)
        catalog.append(
            [
                Item(f"i{c:03d}{k:04d}", f"c{c:03d}", round(level * rng.lognormvariate(0, 0.4), 2))
                for k in range(config.items_per_category)
            ]
        )
    return catalog


def _poisson(rng: random.Random, mean: float) -> int:
    # Knuth's method; means here are small.
    limit, count, product = math.exp(-mean), 0, rng.random()
    while product > limit:
        count += 1
        product *= rng.random()
    return count


def _zipf_index(rng: random.Random, n: int) -> int:
    """A popular-first index in [0, n): a few best sellers, a long tail."""
    return min(n - 1, int(n * rng.random() ** 2.5))


class _User:
    """Hidden traits of one simulated user and their event log."""

    def __init__(self, index: int, seed: int, catalog: list[list[Item]], config: SimConfig) -> None:
        self.rng = random.Random(f"user-{seed}-{index}")
        self.user_id = f"u{index:06d}"
        self.seed, self.catalog, self.config = seed, catalog, config
        rng = self.rng
        # Two kinds of shopper: ~30% keen buyers (intent ~0.4), the rest mostly browse (~0.08).
        keen = rng.random() < 0.3
        self.intent = rng.betavariate(4.0, 6.0) if keen else rng.betavariate(1.0, 12.0)
        self.favourites = rng.sample(range(len(catalog)), k=rng.randint(1, 3))
        self.price_tolerance = rng.lognormvariate(3.5, 0.7)  # prices well above this rarely sell
        self.cart: list[Item] = []
        self.events: list[dict[str, Any]] = []

    def emit(self, event_type: str, item: Item, ts: int, session: int) -> None:
        self.events.append(
            {
                "event_id": f"s{self.seed}-{self.user_id}-{len(self.events)}",
                "user_id": self.user_id,
                "session_id": f"{self.user_id}-s{session}",
                "event_type": event_type,
                "ts": ts,
                "item_id": item.item_id,
                "category": item.category,
                "price": item.price,
            }
        )

    def pick_item(self, category: int) -> Item:
        items = self.catalog[category]
        return items[_zipf_index(self.rng, len(items))]

    def buy_p(self, item: Item, intent: float, views: int) -> float:
        """Chance a carted item gets bought: intent, interest (repeat views) and price matter."""
        price_factor = 1.0 / (1.0 + (item.price / self.price_tolerance) ** 2)
        return min(0.95, (0.05 + 1.4 * intent + 0.08 * min(views - 1, 3)) * price_factor)

    def revisit(self, views: dict[str, int], intent: float) -> Item | None:
        """A keen shopper often goes back to an item seen this session (comparing, deciding)."""
        if not views or self.rng.random() >= 0.6 * intent:
            return None
        item_id = self.rng.choice(sorted(views))
        return self.catalog[int(item_id[1:4])][int(item_id[4:])]  # ids are i<cat:3><index:4>

    def drift(self, category: int) -> int:
        """Usually stay in the category; sometimes move, mostly to a favourite."""
        if self.rng.random() >= 0.15:
            return category
        if self.rng.random() < 0.7:
            return self.rng.choice(self.favourites)
        return self.rng.randrange(len(self.catalog))

    def react(
        self, item: Item, seen: int, intent: float, ts: int, session: int
    ) -> tuple[int, bool]:
        """After a view: maybe cart, fav or (rarely) buy at once; returns (ts, carted)."""
        rng = self.rng
        roll = rng.random()
        cart_p = 0.03 + 0.3 * intent * min(seen, 3) / 3
        if roll < cart_p:
            ts += int(1000 * rng.uniform(2, 20))
            self.emit("cart", item, ts, session)
            self.cart.append(item)
            return ts, True
        if roll < cart_p + 0.03:
            self.emit("fav", item, ts + 1000, session)
        elif seen >= 2 and roll < cart_p + 0.03 + 0.02 * intent:
            ts += int(1000 * rng.uniform(20, 90))  # "buy now" without a cart
            self.emit("purchase", item, ts, session)
        return ts, False

    def session(self, number: int, ts: int) -> None:
        rng, config = self.rng, self.config
        intent = min(1.0, self.intent * rng.lognormvariate(0, 0.3))
        if drifting.is_drifted(config, ts):  # past --drift-at: the new app's behaviour
            drifting.session(self, number, ts, intent)
            return
        category = rng.choice(self.favourites)
        views: dict[str, int] = {}
        checkout: Item | None = None  # a carted item the user has decided to buy soon
        if self.cart and rng.random() < config.return_to_cart_p:
            checkout = rng.choice(self.cart)  # came back for something left in the cart
            self.emit("view", checkout, ts, number)
            views[checkout.item_id] = 2
            if rng.random() >= self.buy_p(checkout, min(1.0, 2 * intent), 2):
                checkout = None
        while True:
            ts += int(1000 * max(1.0, rng.expovariate(1.0 / config.mean_gap_s)))
            if checkout is not None and rng.random() < 0.5:
                ts += int(1000 * rng.uniform(30, 180))  # checkout takes a while
                self.emit("purchase", checkout, ts, number)
                self.cart.remove(checkout)
                checkout = None
                if rng.random() < 0.6:
                    return
                continue
            category = self.drift(category)
            item = self.revisit(views, intent) or self.pick_item(category)
            seen = views[item.item_id] = views.get(item.item_id, 0) + 1
            # Keen sessions show it: more clicks (detail pages) and more repeat views.
            self.emit("click" if rng.random() < 0.04 + 0.5 * intent else "view", item, ts, number)
            ts, carted = self.react(item, seen, intent, ts, number)
            if carted and checkout is None and rng.random() < self.buy_p(item, intent, seen):
                checkout = item
            if rng.random() < config.session_end_p:
                return  # a pending checkout is abandoned; the item stays in the cart

    def simulate(self) -> list[dict[str, Any]]:
        rng, config = self.rng, self.config
        starts = sorted(
            rng.randrange(config.days) * DAY_MS
            + rng.choices(range(24), HOUR_WEIGHTS)[0] * 3_600_000
            + rng.randrange(3_600_000)
            for _ in range(1 + _poisson(rng, config.mean_sessions))
        )
        last = 0
        for number, start in enumerate(starts):
            # sessions never overlap: a new one starts after the previous one's last event
            self.session(number, max(START_MS + start, last + 60_000))
            last = self.events[-1]["ts"]
        return self.events


def iter_user_events(
    users: int, seed: int, config: SimConfig | None = None
) -> Iterator[list[dict]]:
    """Each user's events (time-ordered), one user at a time."""
    config = config or SimConfig()
    catalog = build_catalog(seed, config)
    for index in range(users):
        yield _User(index, seed, catalog, config).simulate()


def simulate_events(
    users: int, seed: int = 0, config: SimConfig | None = None, progress: bool = False
) -> list[dict[str, Any]]:
    """Schema-valid UserEvent dicts for `users` users, sorted by ts (ties: user, then order)."""
    per_user = iter_user_events(users, seed, config)
    events = [
        event
        for batch in tqdm(per_user, total=users, unit="user", disable=not progress)
        for event in batch
    ]
    # sort is stable, and users were generated in id order, so equal ts keep a fixed order
    events.sort(key=lambda event: event["ts"])
    return events
