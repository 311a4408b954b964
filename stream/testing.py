"""An in-process worker, like Bytewax's `testing` module: records in, what it publishes out.

The real `StreamWorker` with its real steps (intake, `WindowStore`, inference, outputs) runs on a
dict for the windows table and a list per topic for the producer: no broker, no Faust. A record is
delivered the way Faust's `take_events` delivers it (a reference per record, acked once the batch
body returns), so `committed` shows which offsets the worker let go. Idle expiry and erasure run
through the same functions as the worker's timers (`stream.upkeep.expire_idle`,
`stream.erasure.Eraser`).

    harness = Harness(runtime)                  # e.g. the tiny bundle's model.runtime.Runtime
    out = harness.run([event(user_id="u1", ts=5)], [event(user_id="u1", ts=6)])
    out.predictions[-1]["window_size"]          # 2
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from collections.abc import Awaitable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from stream.control import EraseDone, EraseRequest
from stream.erasure import Eraser
from stream.inference import Explaining, Inference, Model
from stream.kafka.store import WindowStore
from stream.metrics import Metrics
from stream.outputs import OutRecord, headers_dict
from stream.privacy import Pseudonymizer
from stream.settings import Settings
from stream.upkeep import expire_idle
from stream.worker import StreamWorker

TEST_KEY = b"an-in-process-test-key-0123456789"
WAIT_S = 60.0  # a guard against a hung run, never a timing check


def event(user_id: str = "u1", ts: int = 1_000, event_type: str = "view", **extra: Any) -> bytes:
    """One UserEvent v1 record value (item `i1` unless given)."""
    fields = {"user_id": user_id, "event_type": event_type, "ts": ts, "item_id": "i1", **extra}
    return orjson.dumps(fields)


class Message:
    """A consumed record with Faust's fields and its reference count."""

    def __init__(self, value: bytes | None, key: bytes | None, partition: int, offset: int):
        self.value, self.key, self.partition, self.offset = value, key, partition, offset
        self.topic, self.time_in, self.refcount = "behavior.events", time.monotonic(), 1

    def incref(self) -> None:
        self.refcount += 1


class Delivered:
    """A consumed event: its message, acked like a Faust event (a reference released)."""

    def __init__(self, message: Message) -> None:
        self.message = message

    def ack(self) -> bool:
        self.message.refcount -= 1
        return self.message.refcount == 0


class ListSink:
    """The producer: records per topic in hand-over order; every send is acknowledged at once."""

    def __init__(self) -> None:
        self.topics: dict[str, list[OutRecord]] = defaultdict(list)

    async def enqueue(self, topic: str, records: Sequence[OutRecord]) -> list[Awaitable[Any]]:
        if not records:
            return []
        self.topics[topic].extend(records)
        acked = asyncio.get_running_loop().create_future()
        acked.set_result(None)
        return [acked]

    async def send(self, topic: str, records: Sequence[OutRecord]) -> None:
        await asyncio.gather(*await self.enqueue(topic, records))


class _Stream:
    """Faust's `take_events` over given batches: the body's events are acked once it returns."""

    def __init__(self, batches: list[list[Delivered]]) -> None:
        self.batches = batches

    async def take_events(self, max_batch: int, within: float) -> Any:
        for batch in self.batches:
            for start in range(0, len(batch), max_batch):
                chunk = batch[start : start + max_batch]
                yield chunk
                for delivered in chunk:
                    delivered.ack()


@dataclass
class Output:
    """What the worker published, per topic, in order."""

    predictions: list[dict[str, Any]]
    changelog: list[OutRecord]  # windows: key, window bytes or None (a tombstone), partition
    dead_letters: list[tuple[bytes | None, bytes | None, dict[str, str]]]  # key, value, headers
    committed: list[int] = field(default_factory=list)  # offsets released, in delivery order
    crashed: BaseException | None = None


class Harness:
    """One worker's state across runs: its windows, metrics and everything it published."""

    def __init__(
        self,
        model: Model,
        settings: Settings | None = None,
        explainer: Explaining | None = None,
        changelog_topic: str = "windows-changelog",
    ) -> None:
        self.settings = settings or Settings(store="memory://")
        self.sink = ListSink()
        self.store = WindowStore({}, changelog_topic, self.sink)
        self.metrics = Metrics()
        self.pseudo = Pseudonymizer(TEST_KEY, "test")
        inference = Inference(self.settings, self.metrics, model, self.pseudo.key_id, explainer)
        self.worker = StreamWorker(
            self.settings, self.store, self.sink, inference, self.pseudo, self.metrics, self._crash
        )
        self.crashed: BaseException | None = None
        self.loop = asyncio.new_event_loop()  # one loop: the worker's queue belongs to it
        self.offset = 0

    async def _crash(self, exc: BaseException) -> None:
        self.crashed = exc

    def user_key(self, user_id: str) -> bytes:
        """The windows-table key (pseudonym bytes) of a raw user id."""
        return self.pseudo(user_id).encode()

    def run(self, *batches: Iterable[bytes | None], partition: int = 0) -> Output:
        """Deliver each batch of record values (in order) and wait until the worker is done."""
        delivered = []
        for batch in batches:
            delivered.append([Delivered(self._message(value, partition)) for value in batch])
        self.loop.run_until_complete(self._run(delivered))
        return self.output([d.message for batch in delivered for d in batch])

    def _message(self, value: bytes | None, partition: int) -> Message:
        self.offset += 1
        return Message(value, None, partition, self.offset - 1)

    async def _run(self, batches: list[list[Delivered]]) -> None:
        try:
            await self.worker.consume(_Stream(batches))
        except Exception:  # noqa: BLE001 - `crashed` says what stopped the worker
            return
        messages = [d.message for batch in batches for d in batch]
        deadline = time.monotonic() + WAIT_S
        while any(m.refcount for m in messages) and self.crashed is None:
            if time.monotonic() > deadline:
                raise TimeoutError("the worker did not release every record")
            await asyncio.sleep(0.001)  # the jobs' release tasks run meanwhile

    def output(self, messages: Sequence[Message] = ()) -> Output:
        """Everything published so far, decoded; `messages`' released offsets."""
        topics, s = self.sink.topics, self.settings
        return Output(
            [orjson.loads(r.value or b"") for r in topics[s.predictions_topic]],
            list(topics[self.store.changelog_topic]),
            [(r.key, r.value, headers_dict(r.headers)) for r in topics[s.dlq_topic]],
            [m.offset for m in messages if m.refcount == 0],
            self.crashed,
        )

    def expire(self, now_ms: int, owned: Iterable[int] = (0,)) -> int:
        """Run one idle-expiry sweep at wall time `now_ms`; the windows it removed."""
        sweep = expire_idle(self.store, set(owned), self.settings.idle_ttl_s, self.metrics, now_ms)
        return self.loop.run_until_complete(sweep)

    def erase(self, user_id: str, owned: Iterable[int] = (0,)) -> EraseDone:
        """Apply one erase request as the erasure agent does; its tombstone is published."""
        tombstones: list[OutRecord] = []
        request = EraseRequest(f"erase-{user_id}", user_id, int(time.time() * 1000))
        done = Eraser(self.store, self.pseudo, self.metrics).apply(request, list(owned), tombstones)
        self.loop.run_until_complete(self.store.publish(tombstones))
        return done

    def close(self) -> None:
        self.worker.executor.shutdown(wait=True)
        self.loop.close()
