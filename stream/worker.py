"""The stream worker, a Faust shell: take events, hold their offsets, run jobs, stop on failure.

It orders the steps of docs/DESIGN.md, "The path of one event": `stream.intake`,
`stream.kafka.store`, `stream.inference`, `stream.outputs`.

Delivery (at-least-once): each record's message gets an extra reference before the batch body
returns, so `take_events` acking it does not make its offset committable; the reference is released
only after the broker acknowledged the predictions reflecting it (or its DLQ copy) and its window's
changelog record, and after every earlier job's (acks in job order). Changelog records and
predictions go out in one producer batch per partition (`Publisher.enqueue`), not through Faust's
per-key table path.

Overlap: the body hands each coalesced batch to a one-slot queue and returns, so batch k+1 is
decoded and written to its windows while batch k is on the inference thread. A queued job's call
starts as it is queued, so it runs right after batch k's while the loop publishes batch k (not with
explanations: a job's reasons would wait behind it). Jobs are inferred and handed to the producer
in order; up to MAX_UNACKED_JOBS then wait for the broker's acks.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol

from stream.clock import now_ms
from stream.inference import Call, Inference, Queued
from stream.intake import Event, Job, Target, UserUpdate, next_window, plan_groups, read_batch
from stream.kafka.store import Sink, WindowStore
from stream.metrics import Metrics
from stream.outputs import DeadLetter, OutRecord, dlq_records, inference_letter
from stream.privacy import Pseudonymizer
from stream.settings import Settings
from stream.windows import unchanged

log = logging.getLogger("bstream.worker")
MAX_UNACKED_JOBS = 4


class Shadow(Protocol):
    """A challenger scoring next to the champion (stream.modelswap.ShadowScorer)."""

    async def publish(self, worker: StreamWorker, job: Job) -> list[Awaitable[Any]]: ...


@dataclass
class Published:
    """A job's output handed to the producer: the ack futures, and what to count once acked."""

    acks: list[Awaitable[Any]]
    predictions: int = 0
    letters: Sequence[DeadLetter] = ()


class StreamWorker:
    """Holds the store, sink, model, pseudonymizer and metrics; `consume` is the Faust agent."""

    def __init__(
        self,
        settings: Settings,
        store: WindowStore,
        publisher: Sink,
        inference: Inference,
        pseudonymizer: Pseudonymizer,
        metrics: Metrics,
        crash: Callable[[BaseException], Awaitable[Any]],
    ) -> None:
        self.settings, self.store, self.publisher = settings, store, publisher
        self.inference, self.pseudo = inference, pseudonymizer
        self.metrics, self.crash = metrics, crash
        self.executor = inference.executor  # the inference thread (stream.modelswap shadows on it)
        self.next_offset: dict[int, int] = {}  # events partition -> next offset to consume
        self.in_memory = settings.store.startswith("memory:")
        self.queue: asyncio.Queue[Queued] = asyncio.Queue(maxsize=1)  # one waiting + one running
        self.quality: Any = None  # stream.quality.Quality: outcomes, online metrics, drift
        self.stopping = False
        self._stopper: asyncio.Future[None] | None = None
        self.shadow: Shadow | None = None  # a challenger scoring in shadow (stream/modelswap.py)
        # Clear from a broker outage until the broker is known to still hold our changelog
        # (stream.kafka.rejoin.StateCheck): events fetched meanwhile wait, unprocessed.
        self.broker_checked: asyncio.Event | None = None

    # -- intake (inside the take_events body) --------------------------------------------------

    async def intake(self, events: Sequence[Event]) -> None:
        """Process one consumed batch: DLQ the invalid, update windows, queue inference jobs."""
        if self.broker_checked is not None and not self.broker_checked.is_set():
            await self.broker_checked.wait()
        messages = [event.message for event in events]
        consumed = self.next_offset
        for msg in messages:
            consumed[msg.partition] = max(consumed.get(msg.partition, 0), msg.offset + 1)
        batch = read_batch(messages, self.pseudo, self.settings.max_event_bytes, time.monotonic())
        self.metrics.count_batch(batch)
        # Dead-lettered records ride with the batch's first job (or a job of their own), so their
        # offsets become committable in job order too, never ahead of earlier jobs' events.
        held: list[Event] = []
        if batch.letters:
            await self.dead_letter(batch.letters)
            valid = {item.ref for item in batch.items}
            held = [event for ref, event in enumerate(events) if ref not in valid]
        jobs = 0
        for group in plan_groups(batch.items, self.settings.naive):
            changelog: list[OutRecord] = []
            updated = [
                (self.update_window(update, events[update.refs[-1]], changelog), update.entries)
                for update in group
            ]
            targets = [target for target, _ in updated if target is not None]
            entries = [new for target, new in updated if target is not None]
            refs = [events[ref] for update in group for ref in update.refs]
            await self.hand_over(Job(targets, refs, changelog, self.store.tick, entries, held))
            held, jobs = [], jobs + 1
        if held and not jobs:
            await self.hand_over(Job([], [], [], self.store.tick, held=held))

    async def hand_over(self, job: Job) -> None:
        """Hold the job's events (released in `release`, after the broker acks), then queue it.

        Its model call starts once it is queued, so it runs as soon as the call ahead of it ends.
        """
        for event in (*job.events, *job.held):
            event.message.incref()
        queued = Queued(job)
        await self.queue.put(queued)
        if job.targets and self.inference.explainer is None:
            queued.call = self.inference.start(job.targets)  # before the runner can take it

    def update_window(
        self, update: UserUpdate, last: Event, changelog: list[OutRecord]
    ) -> Target | None:
        """Apply a user's new entries; store the window once and add its changelog record.

        None when the window already held every entry (a replay after a crash, a redelivery) and
        the store is in memory: it stays as it is and gets no new prediction, since the one for it
        went out before its changelog record was written (see `release`).
        """
        previous = self.store.get(update.key)
        applied = next_window(previous, update, self.settings, now_ms())
        if applied.duplicates:
            self.metrics.duplicates.inc(applied.duplicates)
        # Only with the memory store is a window always one whose prediction went out: RocksDB
        # keeps local writes across a crash, ahead of their predictions and changelog records.
        if self.in_memory and unchanged(previous, applied):
            self.metrics.unchanged_windows.inc()
            return None
        if previous is None:
            self.metrics.active_windows.inc()
        changelog.append(self.store.put(update.key, applied.window, event=last))
        return Target(update.key, applied.window, update.arrival)

    async def dead_letter(self, letters: Sequence[DeadLetter]) -> None:
        """Write to the DLQ, wait for the acks, count per reason."""
        await asyncio.gather(*await self.enqueue_letters(letters))
        self.metrics.count_letters(letters)

    async def enqueue_letters(self, letters: Sequence[DeadLetter]) -> list[Awaitable[Any]]:
        """Hand dead letters to the producer; futures resolve on the broker's acks.

        With a pseudonymisation key the record key (a raw user id) becomes its pseudonym; the
        value stays the original bytes (docs/privacy.md, "Dead letters").
        """
        letters = [replace(d, key=self.pseudo.record_key(d.key)) for d in letters]
        return await self.publisher.enqueue(self.settings.dlq_topic, dlq_records(letters))

    # -- inference and publishing (the job runner task) ----------------------------------------

    async def run_jobs(self) -> None:
        """Infer and publish queued jobs in order, forever; acks are awaited off the model's path.

        While job k waits for the broker's acks, job k+1 is already on the model; at most
        MAX_UNACKED_JOBS jobs wait for acks (backpressure when the broker is slow).
        """
        unacked: deque[asyncio.Future[None]] = deque()
        turn: asyncio.Future[None] | None = None  # the previous job's changelog handed over
        acked: asyncio.Future[bool] | None = None  # the previous job's events acked (True)
        while True:
            queued = await self.queue.get()
            job = queued.job
            try:
                published = await self.publish(job, queued.call)
                loop = asyncio.get_running_loop()
                mine, done = loop.create_future(), loop.create_future()
                released = asyncio.ensure_future(
                    self.release(job, published, turn, mine, acked, done)
                )
                turn, acked = mine, done
                released.add_done_callback(self._stop_on_failure)
                unacked.append(released)
                while len(unacked) > MAX_UNACKED_JOBS or (unacked and unacked[0].done()):
                    await unacked.popleft()
            except Exception as exc:
                await self._stop(exc)
                raise
            finally:
                self.queue.task_done()

    async def publish(self, job: Job, call: Call | None = None) -> Published:
        """Infer (with retries), then hand the predictions, or the events' dead letters, over."""
        if not job.targets:
            return Published([])  # every window already held its events: nothing to predict
        records = await self.inference.predict(job.targets, call)
        quality = await self.quality.on_job(job, records) if self.quality is not None else []
        if records is None:
            letters = [inference_letter(e.message) for e in job.events]
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
        after: asyncio.Future[bool] | None = None,
        done: asyncio.Future[bool] | None = None,
    ) -> None:
        """Predictions acked, then the windows' changelog, then count and let offsets commit.

        The changelog record of a window goes out only after the broker acked the prediction for
        it, so a window restored after a crash always had its prediction published: a replayed
        event it already holds needs none (`update_window`). Jobs hand their records over in
        order (`turn`), so a key's newer window cannot be overtaken by an older one; a key erased
        or expired since is left out, so its tombstone stays last.

        Events are acked in job order (`after`), so a later job acked first never makes offsets
        committable past an earlier job's: Faust's gap check misses that with no committed offset
        (a start, `stream.kafka.rejoin.forget`) or a gap of one (consumer.py `_new_offset`).
        """
        ok = False
        try:
            try:
                await asyncio.gather(*published.acks)
                if turn is not None:
                    await turn
                store = self.store
                changelog = await store.publish(store.still_current(job.changelog, job.tick))
                store.forget_removals(job.tick)
            finally:
                if mine is not None and not mine.done():
                    mine.set_result(None)
            await asyncio.gather(*changelog)
            if after is not None and not await after:
                return  # an earlier job failed: the worker stops; its offsets stay uncommitted
            now = time.monotonic()
            if published.letters:
                self.metrics.count_letters(published.letters)
            if published.predictions:
                self.metrics.predictions.inc(published.predictions)
                for target in job.targets:
                    self.metrics.event_to_prediction.observe(now - target.arrival)
            for event in (*job.events, *job.held):
                event.ack()
            ok = True
        finally:
            if done is not None and not done.done():
                done.set_result(ok)

    def _stop_on_failure(self, released: asyncio.Future[None]) -> None:
        failure = None if released.cancelled() else released.exception()
        if failure is not None:
            self._stopper = asyncio.ensure_future(self._stop(failure))  # keep a reference

    async def _stop(self, exc: BaseException) -> None:
        # Publishing failed for good: stop rather than skip, so offsets stay uncommitted.
        if not self.stopping:
            self.stopping = True
            log.error("publishing failed, stopping the worker: %s", type(exc).__name__)
            await self.crash(exc)

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
            await self.crash(exc)
            raise
        finally:
            runner.cancel()
