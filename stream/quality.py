"""Live model quality in the worker: the outcomes table, outcome publishing, gauges, drift, TTL.

The worker calls `Quality.on_job` on its job runner, in job order, once a job's predictions are
built: first the job's new events settle earlier predictions (stream.outcomes.observe), then the
new predictions are remembered. The table's changelog records and the outcome records are handed to
the producer with the predictions, and their acks gate the events' offsets like the predictions'
own acks, so a crash (kill -9) loses no pending outcome: the restored table plus the replayed events
give the same outcomes. Metrics and PSI go to Prometheus gauges labelled by model version.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Sequence
from pathlib import Path
from typing import Any

import click
import orjson

from model.drift import FEATURES, DriftMonitor, load_reference
from stream.kafka.app import PinnedTable, StreamApp, open_store
from stream.kafka.publish import OutRecord, Publisher
from stream.kafka.store import TableStore
from stream.metrics import Metrics
from stream.online_metrics import OnlineQuality
from stream.outcomes import (
    UserPending,
    build_outcome,
    decode_pending,
    encode_pending,
    observe,
    pending_from_prediction,
    remember,
)
from stream.quality_metrics import FIGURES
from stream.settings import Settings
from stream.windows import EVENT_TYPES, TYPE_CODES

log = logging.getLogger("bstream.quality")
OUTCOMES_TABLE = "outcomes"
GAUGE_INTERVAL_S = 2.0
PURCHASE = TYPE_CODES["purchase"]


def now_ms() -> int:
    return int(time.time() * 1000)


def add_outcomes_table(sapp: StreamApp) -> PinnedTable:
    """Register the pending-outcomes table (changelog-backed, pinned like the windows)."""
    app = sapp.app
    table: PinnedTable = app.tables.add(  # type: ignore[assignment]
        PinnedTable(
            app,
            name=OUTCOMES_TABLE,
            beacon=app.tables.beacon,
            partitions=sapp.partitions,
            key_type=bytes,
            value_type=bytes,
        )
    )
    return table


def bundle_facts(runtime: Any, settings: Settings) -> tuple[int, float | None]:
    """The label horizon (ms) the bundle was trained with, and its offline PR-AUC if recorded."""
    meta = getattr(runtime, "meta", None)
    fingerprint = (getattr(meta, "data_fingerprint", None) or {}) if meta else {}
    horizon_min = float(fingerprint.get("horizon_min") or settings.outcome_horizon_min)
    metrics = (getattr(meta, "metrics", None) or {}) if meta else {}
    offline = (metrics.get("test") or {}).get("pr_auc") or (metrics.get("best") or {}).get(
        "val_pr_auc"
    )
    return int(horizon_min * 60_000), float(offline) if offline is not None else None


class Quality:
    """Outcomes, online metrics and drift for one worker (see the module docstring)."""

    def __init__(
        self,
        settings: Settings,
        table: TableStore,
        publisher: Publisher,
        metrics: Metrics,
        model_version: str,
        labels: Sequence[str],
        horizon_ms: int,
        key_id: str | None,
        reference: dict[str, Any] | None = None,
        offline_pr_auc: float | None = None,
    ) -> None:
        self.settings, self.table, self.publisher = settings, table, publisher
        self.version, self.primary, self.horizon_ms = model_version, labels[0], horizon_ms
        self.key_id = key_id
        self.gauges = metrics.quality
        self.online: dict[str, OnlineQuality] = {}
        self.drift = DriftMonitor(reference, settings.quality_window) if reference else None
        self.pending_count = 0
        self.unsent: list[OutRecord] = []  # erasure tombstones not yet handed to the producer
        if offline_pr_auc is not None:
            self.gauges.offline_pr_auc.labels(model_version=model_version).set(offline_pr_auc)
        self.gauges.outcomes.labels(model_version=model_version)
        self.gauges.dropped.labels(model_version=model_version)

    # -- the job hook (job runner, in order) ---------------------------------------------------

    async def on_job(self, job: Any, records: Sequence[OutRecord] | None) -> list[Awaitable[Any]]:
        """Settle pending predictions with the job's events, remember its predictions."""
        published = {r.key: r for r in records or ()}
        changelog: list[OutRecord] = []
        outcomes: list[OutRecord] = []
        stamp = now_ms()
        by_partition = {e.message.partition: e for e in job.events}
        for target, entries in zip(job.targets, job.entries, strict=True):
            key, window = target.key, target.window
            raw = self.table.raw(key)
            state = decode_pending(raw) if raw is not None else None
            if state is not None and state.pending:
                done = observe(state, [(e[0], EVENT_TYPES[e[1]], e[5]) for e in entries])
                for resolved in done:
                    outcome = build_outcome(key.decode(), self.key_id, resolved, stamp)
                    outcomes.append(OutRecord(key, orjson.dumps(outcome)))
                    self._count(resolved.pending.model_version, outcome)
                self.pending_count -= len(done)
            record = published.get(key)
            if record is not None:
                prediction = orjson.loads(record.value)  # type: ignore[arg-type]
                if self.drift is not None:
                    self.drift.add(
                        [(e[0], EVENT_TYPES[e[1]], e[2], e[4]) for e in window.entries],
                        prediction["scores"].get(self.primary, 0.0),
                    )
                if window.entries[-1][1] != PURCHASE:  # no training example ends in a purchase
                    seen = [e[5] for e in window.entries if e[0] == window.last_ts]
                    pending = pending_from_prediction(prediction, self.horizon_ms, seen)
                    state = state or UserPending(window.partition, stamp)
                    before = len(state.pending)
                    state, dropped = remember(state, pending, self.settings.outcome_max_pending)
                    self.pending_count += len(state.pending) - before
                    if dropped:
                        self.gauges.dropped.labels(model_version=pending.model_version).inc(dropped)
            if state is not None and encode_pending(state) != raw:  # settled, labelled or added
                state.seen_ms = stamp
                value, partition = encode_pending(state), state.partition
                changelog.append(
                    self.table.put_raw(key, value, partition, by_partition.get(partition))
                )
        self.gauges.pending.set(max(0, self.pending_count))
        acks = await self.table.publish(changelog)
        acks += await self.publisher.enqueue(self.settings.outcomes_topic, outcomes)
        return acks

    def _count(self, version: str, outcome: dict[str, Any]) -> None:
        self.gauges.outcomes.labels(model_version=version).inc()
        if self.primary not in outcome["labels"]:
            return
        online = self.online.get(version)
        if online is None:
            online = self.online[version] = OnlineQuality(self.settings.quality_window)
        online.add(
            outcome["scores"][self.primary], outcome["labels"][self.primary], outcome["delay_ms"]
        )

    # -- periodic upkeep -----------------------------------------------------------------------

    def update_gauges(self) -> None:
        """Online metrics and PSI to the gauges."""
        g = self.gauges
        for version, online in self.online.items():
            for scope, figures in online.summary().items():
                for name in FIGURES:
                    g.live[(name, scope)].labels(model_version=version).set(figures[name])
                if scope == "recent":
                    for q in (50, 95):
                        g.delay[q].labels(model_version=version).set(figures[f"delay_p{q}_s"])
            for name, count, mean, rate in online.calibration():
                for field, value in (
                    ("count", count),
                    ("mean_score", mean),
                    ("positive_rate", rate),
                ):
                    g.calibration[field].labels(model_version=version, bin=name).set(value)
        if self.drift is None:
            return
        s = self.settings
        for feature, value in self.drift.psi().items():
            g.psi.labels(model_version=self.version, feature=feature).set(value)
            level = 2 if value >= s.psi_alarm else 1 if value >= s.psi_warn else 0
            g.drift_level.labels(model_version=self.version, feature=feature).set(level)

    def expire(self, owned: set[int], now: int) -> list[OutRecord]:
        """Remove owned pending states idle longer than the TTL; recount pending; tombstones."""
        ttl_ms = int(self.settings.idle_ttl_s * 1000)
        tombstones, count = [], 0
        for key, raw in list(self.table.items()):
            state = decode_pending(raw)
            if state.partition not in owned:
                continue
            if now - state.seen_ms > ttl_ms:
                self.gauges.expired.inc(len(state.pending))
                tombstone = self.table.delete(key, state.partition)
                if tombstone is not None:
                    tombstones.append(tombstone)
            else:
                count += len(state.pending)
        self.pending_count = count
        self.gauges.pending.set(count)
        return tombstones

    def forget(self, key: bytes, partitions: Sequence[int]) -> bool:
        """Erasure: drop the user's pending outcomes if this worker owns them (tombstone queued)."""
        raw = self.table.raw(key)
        if raw is None:
            return False
        state = decode_pending(raw)
        if state.partition not in partitions:
            return False
        tombstone = self.table.delete(key, state.partition)
        if tombstone is not None:
            self.unsent.append(tombstone)
            self.pending_count -= len(state.pending)
            self.gauges.expired.inc(len(state.pending))
        return True

    async def flush(self) -> None:
        """Publish queued erasure tombstones and wait for the broker's acks."""
        unsent, self.unsent = self.unsent, []
        await asyncio.gather(*await self.table.publish(unsent))


def install_quality(
    sapp: StreamApp,
    settings: Settings,
    metrics: Metrics,
    publisher: Publisher,
    runtime: Any,
    key_id: str | None,
) -> Quality | None:
    """Build the worker's Quality (None when outcomes are off) and register its timers."""
    if not settings.outcomes:
        return None
    from stream.upkeep import active_partitions

    table = open_store(TableStore, add_outcomes_table(sapp), settings, publisher)
    horizon_ms, offline = bundle_facts(runtime, settings)
    reference = None
    if settings.model is not None:
        reference = load_reference(Path(settings.model))
        if reference is None:
            # said once, before Faust configures logging (a log record would be lost here)
            click.echo(
                f"bstream worker: bundle {settings.model.name} has no drift reference: "
                "no drift metrics (add one with `bstream drift-reference`)",
                err=True,
            )
    labels = list(getattr(runtime, "labels", None) or ["purchase"])
    quality = Quality(
        settings,
        table,
        publisher,
        metrics,
        runtime.version,
        labels,
        horizon_ms,
        key_id,
        reference,
        offline,
    )

    @sapp.app.timer(GAUGE_INTERVAL_S, name="bstream.quality")
    async def gauges() -> None:
        quality.update_gauges()

    @sapp.app.timer(min(60.0, max(1.0, settings.idle_ttl_s / 4)), name="bstream.outcomes_ttl")
    async def ttl() -> None:
        owned = active_partitions(sapp)
        if owned:
            tombstones = quality.expire(owned, now_ms())
            if tombstones:
                await table.publish(tombstones)

    return quality


__all__ = ["FEATURES", "Quality", "install_quality", "add_outcomes_table"]
