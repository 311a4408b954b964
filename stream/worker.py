"""The stream worker: decode -> pseudonymise -> window -> batched inference -> publish -> ack.

Delivery (at-least-once): each valid record's message gets an extra reference before the batch body
returns, so `take_events` acking it does not make its offset committable; the reference is released
only after the broker acknowledged the predictions reflecting it (or its DLQ copy) and its window's
changelog record. Invalid records are acknowledged by the DLQ inside the body. Changelog records
and predictions go out in one producer batch per partition (`Publisher.enqueue`), not through
Faust's per-key table path.

Overlap: the body hands each coalesced batch to a one-slot queue and returns, so batch k+1 is
decoded and written to its windows while batch k is on the inference thread. Jobs are inferred and
handed to the producer in order; up to MAX_UNACKED_JOBS then wait for the broker's acks.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import Counter, deque
from collections.abc import Awaitable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

import orjson
from faust.types import EventT

from schemas.validation import decode_event
from stream.app import StreamApp, as_current_event
from stream.batching import Item, Target, UserUpdate, model_inputs, plan_groups
from stream.clock import now_ms
from stream.dlq import INFERENCE_FAILED, DeadLetter, dlq_records
from stream.metrics import Metrics
from stream.outputs import should_explain
from stream.privacy import Pseudonymizer, classify_field
from stream.publish import OutRecord, Publisher, build_prediction, encode_prediction
from stream.settings import Settings
from stream.windows import (
    EVENT_TYPES,
    apply_events,
    decode_window,
    encode_window,
    entry_from_event,
    unchanged,
)

log = logging.getLogger("bstream.worker")
INFERENCE_RETRIES = 2
MAX_UNACKED_JOBS = 4
RETRY_BACKOFF_S = 0.2


class Model(Protocol):
    """What the worker needs from model.runtime.Runtime."""

    version: str

    def predict(self, windows: Sequence[Sequence[Any]]) -> list[dict[str, float]]: ...


class Explaining(Protocol):
    """What the worker needs from model.explain.Explainer."""

    label: str

    def explain(
        self, windows: Sequence[Any], scores: Sequence[Any] | None = None, top_k: int = 3
    ) -> list[list[dict[str, Any]]]: ...


class Shadow(Protocol):
    """A challenger scoring next to the champion (stream.modelswap.ShadowScorer)."""

    async def publish(self, worker: StreamWorker, job: Job) -> list[Awaitable[Any]]: ...


@dataclass
class Published:
    """A job's output handed to the producer: the ack futures, and what to count once acked."""

    acks: list[Awaitable[Any]]
    predictions: int = 0
    letters: Sequence[DeadLetter] = ()


@dataclass
class Job:
    """One inference batch: the users to predict and the consumed events they reflect."""

    targets: list[Target]
    events: list[EventT]
    changelog: list[OutRecord]  # the windows' changelog records, sent once predictions are acked
    tick: int = 0  # the table's removal tick when the windows were written
    entries: Sequence[Sequence[Any]] = field(default_factory=list)  # each target's new entries


class StreamWorker:
    """Holds the app, model, pseudonymizer and metrics; `consume` is the Faust agent."""

    def __init__(
        self,
        settings: Settings,
        sapp: StreamApp,
        model: Model,
        pseudonymizer: Pseudonymizer,
        metrics: Metrics,
        explainer: Explaining | None = None,
    ) -> None:
        self.settings = settings
        self.sapp = sapp
        self.model = model
        self.pseudo = pseudonymizer
        self.metrics = metrics
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="bstream-infer")
        self.next_offset: dict[int, int] = {}  # events partition -> next offset to consume
        self.in_memory = settings.store.startswith("memory:")
        self._queue: asyncio.Queue[Job] | None = None
        self.publisher = Publisher(sapp.app) if sapp is not None else None
        self.changelog_topic = sapp.windows.changelog_topic.get_topic_name() if sapp else ""
        self.explainer = explainer if settings.explain != "off" else None
        self.rng = random.Random()  # the sample-rate explain policy
        self.quality: Any = None  # stream.quality.Quality: outcomes, online metrics, drift
        self.stopping = False
        self._stopper: asyncio.Future[None] | None = None
        self.shadow: Shadow | None = None  # a challenger scoring in shadow (stream/modelswap.py)

    # -- intake (inside the take_events body) --------------------------------------------------

    def ingest(self, event: EventT, ref: int, fallback_arrival: float) -> Item | DeadLetter:
        """Decode one record into a window item, or a dead letter saying why not."""
        msg = event.message
        self.next_offset[msg.partition] = max(
            self.next_offset.get(msg.partition, 0), msg.offset + 1
        )
        decoded = decode_event(msg.value, self.settings.max_event_bytes)
        if decoded.invalid is not None:
            code, text = decoded.invalid.code, decoded.invalid.message
            return DeadLetter(msg.key, msg.value, code, text, msg.topic, msg.partition, msg.offset)
        assert decoded.event is not None
        if decoded.dropped_fields:
            self._count_dropped(msg.value or b"", decoded.dropped_fields)
        user = self.pseudo(decoded.event["user_id"])
        arrival = msg.time_in if msg.time_in is not None else fallback_arrival
        return Item(user.encode(), entry_from_event(decoded.event), msg.partition, arrival, ref)

    def _count_dropped(self, raw: bytes, names: list[str]) -> None:
        original = orjson.loads(raw)
        for name in names:
            self.metrics.dropped_fields.labels(kind=classify_field(name, original.get(name))).inc()

    async def intake(self, events: Sequence[EventT]) -> None:
        """Process one consumed batch: DLQ the invalid, update windows, queue inference jobs."""
        arrival = time.monotonic()
        items: list[Item] = []
        letters: list[DeadLetter] = []
        for ref, event in enumerate(events):
            outcome = self.ingest(event, ref, arrival)
            (items if isinstance(outcome, Item) else letters).append(outcome)  # type: ignore[arg-type]
        self._count_batch(items, letters)
        if letters:
            await self.dead_letter(letters)
        for group in plan_groups(items, self.settings.naive):
            changelog: list[OutRecord] = []
            updated = [
                (self.update_window(update, events[update.refs[-1]], changelog), update.entries)
                for update in group
            ]
            targets = [target for target, _ in updated if target is not None]
            entries = [new for target, new in updated if target is not None]
            refs = [events[ref] for update in group for ref in update.refs]
            job = Job(targets, refs, changelog, self.sapp.windows.tick, entries)
            for event in job.events:
                event.message.incref()  # released in finish(), after the broker acks
            await self.queue.put(job)

    def _count_batch(self, items: list[Item], letters: list[DeadLetter]) -> None:
        m = self.metrics
        m.batch_events.observe(len(items) + len(letters))
        m.batch_users.observe(len({item.key for item in items}))
        for code, n in Counter(e[1] for e in (i.entry for i in items)).items():
            m.events.labels(event_type=EVENT_TYPES[code]).inc(n)
        for reason, n in Counter(d.code for d in letters).items():
            m.invalid.labels(reason=reason).inc(n)

    def update_window(
        self, update: UserUpdate, last: EventT, changelog: list[OutRecord]
    ) -> Target | None:
        """Apply a user's new entries; store the window once and add its changelog record.

        None when the window already held every entry (a replay after a crash, a redelivery) and
        the store is in memory: it stays as it is and gets no new prediction, since the one for it
        went out before its changelog record was written (see `release`).
        """
        table, s = self.sapp.windows, self.settings
        stored = table.data.get(update.key)  # the store itself: no KeyError round trip, no sensors
        previous = decode_window(stored) if stored is not None else None
        applied = apply_events(
            previous,
            update.entries,
            partition=update.partition,
            now_ms=now_ms(),
            size=s.window_size,
            max_age_ms=int(s.window_max_age_s * 1000),
        )
        if applied.duplicates:
            self.metrics.duplicates.inc(applied.duplicates)
        # Only with the memory store is a window always one whose prediction went out: RocksDB
        # keeps local writes across a crash, ahead of their predictions and changelog records.
        if self.in_memory and unchanged(previous, applied):
            self.metrics.unchanged_windows.inc()
            return None
        if stored is None:
            self.metrics.active_windows.inc()
        value = encode_window(applied.window)
        if self.in_memory:
            changelog.append(table.put(update.key, value, update.partition))
        else:
            with as_current_event(last):  # RocksDB: `last` was consumed from update.partition
                changelog.append(table.put(update.key, value, update.partition))
        return Target(update.key, applied.window, update.arrival)

    async def dead_letter(self, letters: Sequence[DeadLetter]) -> None:
        """Write to the DLQ, wait for the acks, count per reason."""
        await asyncio.gather(*await self.enqueue_letters(letters))
        self._count_letters(letters)

    async def enqueue_letters(self, letters: Sequence[DeadLetter]) -> list[Awaitable[Any]]:
        """Hand dead letters to the producer; futures resolve on the broker's acks.

        With a pseudonymisation key the record key (a raw user id) becomes its pseudonym; the
        value stays the original bytes (docs/privacy.md, "Dead letters").
        """
        topic = self.settings.dlq_topic
        count = await self.publisher.partition_count(topic)
        letters = [replace(d, key=self.pseudo.record_key(d.key)) for d in letters]
        return await self.publisher.enqueue(topic, dlq_records(letters, count))

    def _count_letters(self, letters: Sequence[DeadLetter]) -> None:
        for reason, n in Counter(d.code for d in letters).items():
            self.metrics.dlq.labels(reason=reason).inc(n)

    # -- inference and publishing (the job runner task) ----------------------------------------

    @property
    def queue(self) -> asyncio.Queue[Job]:
        if self._queue is None:
            self._queue = asyncio.Queue(maxsize=1)  # one job waiting + one running: bounded memory
        return self._queue

    async def run_jobs(self) -> None:
        """Infer and publish queued jobs in order, forever; acks are awaited off the model's path.

        While job k waits for the broker's acks, job k+1 is already on the model; at most
        MAX_UNACKED_JOBS jobs wait for acks (backpressure when the broker is slow).
        """
        unacked: deque[asyncio.Future[None]] = deque()
        turn: asyncio.Future[None] | None = None  # the previous job's changelog handed over
        while True:
            job = await self.queue.get()
            try:
                published = await self.publish(job)
                mine = asyncio.get_running_loop().create_future()
                released = asyncio.ensure_future(self.release(job, published, turn, mine))
                turn = mine
                released.add_done_callback(self._stop_on_failure)
                unacked.append(released)
                while len(unacked) > MAX_UNACKED_JOBS or (unacked and unacked[0].done()):
                    await unacked.popleft()
            except Exception as exc:
                await self._stop(exc)
                raise
            finally:
                self.queue.task_done()

    async def publish(self, job: Job) -> Published:
        """Infer (with retries), then hand the predictions, or the events' dead letters, over."""
        if not job.targets:
            return Published([])  # every window already held its events: nothing to predict
        records = await self.predict(job.targets)
        quality = await self.quality.on_job(job, records) if self.quality is not None else []
        if records is None:
            letters = [_inference_letter(e) for e in job.events]
            return Published(await self.enqueue_letters(letters) + quality, letters=letters)
        acks = await self.publisher.enqueue(self.settings.predictions_topic, records)
        if self.shadow is not None:  # after the champion's: its scores never wait on the shadow
            acks += await self.shadow.publish(self, job)
        return Published(acks + quality, predictions=len(records))

    async def release(
        self,
        job: Job,
        published: Published,
        turn: asyncio.Future[None] | None = None,
        mine: asyncio.Future[None] | None = None,
    ) -> None:
        """Predictions acked, then the windows' changelog, then count and let offsets commit.

        The changelog record of a window goes out only after the broker acked the prediction for
        it, so a window restored after a crash always had its prediction published: a replayed
        event it already holds needs none (`update_window`). Jobs hand their records over in
        order (`turn`), so a key's newer window cannot be overtaken by an older one; a key erased
        or expired since is left out, so its tombstone stays last.
        """
        try:
            await asyncio.gather(*published.acks)
            if turn is not None:
                await turn
            table = self.sapp.windows
            records = table.still_current(job.changelog, job.tick)
            changelog = await self.publisher.enqueue(self.changelog_topic, records)
            table.forget_removals(job.tick)
        finally:
            if mine is not None and not mine.done():
                mine.set_result(None)
        await asyncio.gather(*changelog)
        done = time.monotonic()
        if published.letters:
            self._count_letters(published.letters)
        if published.predictions:
            self.metrics.predictions.inc(published.predictions)
            for target in job.targets:
                self.metrics.event_to_prediction.observe(done - target.arrival)
        for event in job.events:
            event.ack()

    def _stop_on_failure(self, released: asyncio.Future[None]) -> None:
        failure = None if released.cancelled() else released.exception()
        if failure is not None:
            self._stopper = asyncio.ensure_future(self._stop(failure))  # keep a reference

    async def _stop(self, exc: BaseException) -> None:
        # Publishing failed for good: stop rather than skip, so offsets stay uncommitted.
        if not self.stopping:
            self.stopping = True
            log.error("publishing failed, stopping the worker: %s", type(exc).__name__)
            await self.sapp.app.crash(exc)

    async def predict(self, targets: list[Target]) -> list[OutRecord] | None:
        """Prediction records for the targets, or None when every attempt failed."""
        loop = asyncio.get_running_loop()
        inputs = model_inputs(targets)
        model = self.model  # one model per batch: a hot swap takes effect from the next batch
        for attempt in range(INFERENCE_RETRIES + 1):
            started = time.monotonic()
            try:
                scores = await loop.run_in_executor(self.executor, model.predict, inputs)
                self.metrics.inference_seconds.observe(time.monotonic() - started)
                reasons = await self.reasons(inputs, scores)
                return self._records(targets, scores, reasons, model.version)
            except Exception as exc:  # noqa: BLE001 - any model failure takes the retry/DLQ path
                self.metrics.inference_failures.inc()
                log.warning(
                    "inference failed for a batch of %d windows (attempt %d/%d): %s: %s",
                    len(targets),
                    attempt + 1,
                    INFERENCE_RETRIES + 1,
                    type(exc).__name__,
                    str(exc)[:200],
                )
                if attempt < INFERENCE_RETRIES:
                    await asyncio.sleep(RETRY_BACKOFF_S * 2**attempt)
        return None

    async def reasons(
        self, inputs: list[list[dict[str, Any]]], scores: list[dict[str, float]]
    ) -> dict[int, list[dict[str, Any]]]:
        """Reasons for the windows the explain policy picks (by index), computed in one batch.

        They run on the inference thread after the scores; a failure costs only the reasons.
        """
        s, explainer = self.settings, self.explainer
        if explainer is None:
            return {}
        picked = [
            i
            for i, score in enumerate(scores)
            if should_explain(
                s.explain,
                score.get(explainer.label, 0.0),
                s.explain_min_score,
                s.explain_sample_rate,
                self.rng,
            )
        ]
        if not picked or len(scores) != len(inputs):
            return {}
        windows, picked_scores = [inputs[i] for i in picked], [scores[i] for i in picked]
        loop = asyncio.get_running_loop()
        try:
            found = await loop.run_in_executor(
                self.executor, explainer.explain, windows, picked_scores, s.explain_top_k
            )
        except Exception as exc:  # noqa: BLE001 - predictions still go out, without reasons
            log.warning(
                "explanations failed for %d windows: %s: %s",
                len(picked),
                type(exc).__name__,
                str(exc)[:200],
            )
            return {}
        return dict(zip(picked, found, strict=True))

    def _records(
        self,
        targets: list[Target],
        scores: list[dict[str, float]],
        reasons: dict[int, list[dict[str, Any]]] | None = None,
        version: str | None = None,
    ) -> list[OutRecord]:
        if len(scores) != len(targets):
            raise ValueError(f"model returned {len(scores)} results for {len(targets)} windows")
        stamp, mono = now_ms(), time.monotonic()
        records = []
        for index, (target, score) in enumerate(zip(targets, scores, strict=True)):
            prediction = build_prediction(
                target.key.decode(),
                self.pseudo.key_id,
                score,
                version if version is not None else self.model.version,
                target.window,
                latency_ms=(mono - target.arrival) * 1000,
                now_ms=stamp,
                reasons=(reasons or {}).get(index),
            )
            records.append(OutRecord(target.key, encode_prediction(prediction)))
        return records

    # -- the agent -----------------------------------------------------------------------------

    async def consume(self, stream: Any) -> None:
        """Faust agent body: micro-batches from the events topic, with the job runner alongside."""
        runner = asyncio.ensure_future(self.run_jobs())
        s = self.settings
        try:
            async for events in stream.take_events(s.max_batch, within=s.max_delay_ms / 1000):
                if runner.done():
                    runner.result()  # re-raise: a publishing failure must stop the worker
                await self.intake(events)
            await self.queue.join()
        except Exception as exc:
            # Faust would restart just this agent and leave the batch's offsets unacked forever;
            # stopping the worker instead makes the failure loud and replays from the last commit.
            log.error(
                "stream processing failed, stopping the worker: %s: %s", type(exc).__name__, exc
            )
            await self.sapp.app.crash(exc)
            raise
        finally:
            runner.cancel()


def _inference_letter(event: EventT) -> DeadLetter:
    msg = event.message
    return DeadLetter(
        msg.key,
        msg.value,
        INFERENCE_FAILED,
        "model inference failed after retries",
        msg.topic,
        msg.partition,
        msg.offset,
    )
