"""Periodic worker upkeep: idle-window expiry, health and lag gauges, broker reachability."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from stream import clock
from stream.kafka.app import StreamApp
from stream.kafka.rejoin import StateCheck
from stream.kafka.store import WindowStore
from stream.metrics import Metrics
from stream.settings import Settings

log = logging.getLogger("bstream.upkeep")
HEALTH_INTERVAL_S = 1.0
BROKER_PROBE_INTERVAL_S = 5.0


def active_partitions(sapp: StreamApp) -> set[int]:
    """Events partitions this worker owns now (empty while rebalancing or recovering)."""
    app = sapp.app
    tables: Any = app.tables
    if app.rebalancing or not tables.recovery.completed.is_set():
        return set()
    topic = sapp.events.get_topic_name()
    return {tp.partition for tp in app.consumer.assignment() if tp.topic == topic}


async def expire_idle(
    store: WindowStore,
    owned: set[int],
    idle_ttl_s: float,
    metrics: Metrics,
    now_ms: int | None = None,
) -> int:
    """Delete owned windows idle longer than the TTL, publish their tombstones; how many."""
    now = now_ms if now_ms is not None else clock.now_ms()
    kept, tombstones = store.expire(owned, now, int(idle_ttl_s * 1000))
    metrics.active_windows.set(kept)  # exact after each sweep; counted up between sweeps
    if tombstones:
        # tombstones gate no offsets: hand them over in order, don't wait for the acks
        await store.publish(tombstones)
        metrics.expired_windows.inc(len(tombstones))
        log.info("expired %d idle windows", len(tombstones))
    return len(tombstones)


def update_health(sapp: StreamApp, metrics: Metrics, next_offset: dict[int, int]) -> None:
    """Partitions assigned and per-partition lag of the events topic."""
    owned = active_partitions(sapp)
    metrics.set_health(partitions_assigned=len(owned))
    topic = sapp.events.get_topic_name()
    consumer = sapp.app.consumer
    for tp in consumer.assignment():
        if tp.topic != topic:
            continue
        with contextlib.suppress(Exception):  # highwater unknown until the first fetch
            highwater = consumer.highwater(tp)
            if highwater is not None and highwater >= 0:
                consumed = next_offset.get(tp.partition, 0)
                metrics.consumer_lag.labels(partition=str(tp.partition)).set(
                    max(0, highwater - consumed)
                )


async def broker_reachable(bootstrap: str, timeout: float = 2.0) -> bool:
    """True when a TCP connection to any bootstrap host succeeds."""
    for hostport in bootstrap.split(","):
        host, _, port = hostport.strip().rpartition(":")
        try:
            _, writer = await asyncio.wait_for(asyncio.open_connection(host, int(port)), timeout)
        except (TimeoutError, OSError, ValueError):
            continue
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()
        return True
    return False


def install_timers(
    sapp: StreamApp,
    settings: Settings,
    metrics: Metrics,
    next_offset: dict[int, int],
    store: WindowStore,
    state: StateCheck,
) -> None:
    """Register the periodic upkeep on the Faust app."""
    app = sapp.app
    expiry_interval = min(60.0, max(1.0, settings.idle_ttl_s / 4))

    @app.timer(HEALTH_INTERVAL_S, name="bstream.health")
    async def health() -> None:
        update_health(sapp, metrics, next_offset)

    @app.timer(expiry_interval, name="bstream.expiry")
    async def expiry() -> None:
        owned = active_partitions(sapp)
        if owned:  # none while rebalancing or recovering
            await expire_idle(store, owned, settings.idle_ttl_s, metrics)

    @app.timer(BROKER_PROBE_INTERVAL_S, name="bstream.broker")
    async def broker() -> None:
        up = await broker_reachable(settings.bootstrap)
        if up != metrics.health.broker_up:
            (log.info if up else log.error)(
                "broker %s is %s", settings.bootstrap, "reachable" if up else "UNREACHABLE"
            )
        metrics.set_health(broker_up=up)
        if up:
            await state.broker_up()  # after an outage: is our changelog still there?
        else:
            state.broker_down()
