"""Control-topic records (erase requests, confirmations) and the erasure ledger, as plain data.

Every worker reads every partition of the control topic (it is a broadcast, not a consumer
group): an erase request names a raw user id, and only the worker that owns the events partition
holding that user's window can delete it, whatever partitioner the event producers used. Each
worker answers for the events partitions it owns with a confirmation; a request is done once the
confirmations cover every events partition.

Records are JSON, keyed by the request id (never by the user id):

    {"v": 1, "type": "erase", "request_id": "…", "user_id": "<raw id>", "requested_at": ms}
    {"v": 1, "type": "erase_done", "request_id": "…", "user": "<pseudonym>", "key_id": "k1",
     "erased": true, "partitions": [0, 1], "worker": "host:pid", "done_at": ms}

>>> req = parse_record(encode_record(erase_request("42", request_id="r1", now_ms=5)))
>>> (req.request_id, req.user_id, req.requested_at)
('r1', '42', 5)
>>> ledger = Ledger(partitions=2, horizon_ms=1000)
>>> ledger.observe(req, now_ms=10)
>>> ledger.due(owned={1}, now_ms=10)
[(EraseRequest(request_id='r1', user_id='42', requested_at=5), [1])]
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import orjson

VERSION = 1
HORIZON_S = 15 * 60  # erase requests older than this are not applied when a worker (re)starts
ERASE = "erase"
ERASE_DONE = "erase_done"


class BadControlRecord(ValueError):
    """A control-topic record that is not a valid v1 erase request or confirmation."""


@dataclass(frozen=True, slots=True)
class EraseRequest:
    """Erase one user's window (the raw id travels here only: the client holds no HMAC key)."""

    request_id: str
    user_id: str
    requested_at: int


@dataclass(frozen=True, slots=True)
class EraseDone:
    """One worker's answer for the events partitions it owns (`erased`: it held a window)."""

    request_id: str
    user: str
    key_id: str | None
    erased: bool
    partitions: tuple[int, ...]
    worker: str
    done_at: int


ControlRecord = EraseRequest | EraseDone


def erase_request(user_id: str, *, now_ms: int, request_id: str | None = None) -> EraseRequest:
    """A new erase request with a fresh request id."""
    if not user_id:
        raise BadControlRecord("user id must not be empty")
    return EraseRequest(request_id or uuid.uuid4().hex, user_id, now_ms)


def encode_record(record: ControlRecord) -> bytes:
    """JSON bytes for the control topic."""
    kind = ERASE if isinstance(record, EraseRequest) else ERASE_DONE
    return orjson.dumps({"v": VERSION, "type": kind, **asdict(record)})


def record_key(record: ControlRecord) -> bytes:
    """The Kafka key: the request id, so a request and its confirmations share a partition."""
    return record.request_id.encode()


def _field(obj: Mapping[str, Any], name: str, kind: type | tuple[type, ...]) -> Any:
    value = obj.get(name)
    if not isinstance(value, kind) or isinstance(value, bool) and kind is int:
        raise BadControlRecord(f"field {name!r} is missing or has the wrong type")
    return value


def parse_record(raw: bytes | None) -> ControlRecord:
    """Parse one control record; BadControlRecord says why it is not one (content never echoed)."""
    try:
        obj = orjson.loads(raw or b"")
    except orjson.JSONDecodeError:
        raise BadControlRecord("not JSON") from None
    if not isinstance(obj, dict) or obj.get("v") != VERSION:
        raise BadControlRecord(f"not a v{VERSION} control record")
    request_id = _field(obj, "request_id", str)
    if obj.get("type") == ERASE:
        user_id = _field(obj, "user_id", str)
        if not user_id:
            raise BadControlRecord("field 'user_id' is empty")
        return EraseRequest(request_id, user_id, _field(obj, "requested_at", int))
    if obj.get("type") == ERASE_DONE:
        partitions = _field(obj, "partitions", list)
        if not all(isinstance(p, int) and not isinstance(p, bool) for p in partitions):
            raise BadControlRecord("field 'partitions' must list integers")
        key_id = obj.get("key_id")
        return EraseDone(
            request_id,
            _field(obj, "user", str),
            key_id if isinstance(key_id, str) else None,
            _field(obj, "erased", bool),
            tuple(partitions),
            _field(obj, "worker", str),
            _field(obj, "done_at", int),
        )
    raise BadControlRecord("unknown control record type")


def covered(confirmations: Iterable[EraseDone]) -> set[int]:
    """Events partitions the confirmations answer for."""
    return {p for done in confirmations for p in done.partitions}


@dataclass
class Ledger:
    """Which erase requests still need applying to which events partitions.

    A request is applied to each events partition once, by the first worker that owns it after the
    request was published; confirmations from any worker (read back from the control topic) mark
    partitions done. Requests older than `horizon_ms` are ignored, so a worker that starts (and
    replays the control topic) applies only recent requests that no confirmation covers yet.
    """

    partitions: int
    horizon_ms: int
    pending: dict[str, EraseRequest] = field(default_factory=dict)
    done: dict[str, set[int]] = field(default_factory=dict)

    def observe(self, record: ControlRecord, now_ms: int) -> None:
        """Take in one record read from the control topic."""
        if isinstance(record, EraseDone):
            self.mark(record.request_id, record.partitions)
        elif now_ms - record.requested_at <= self.horizon_ms:
            self.pending.setdefault(record.request_id, record)

    def mark(self, request_id: str, partitions: Iterable[int]) -> None:
        """Record that these partitions have been answered for."""
        self.done.setdefault(request_id, set()).update(partitions)

    def due(self, owned: set[int], now_ms: int) -> list[tuple[EraseRequest, list[int]]]:
        """Pending requests with the owned partitions still to apply them to (oldest first)."""
        self._forget(now_ms)
        out = []
        for request in sorted(self.pending.values(), key=lambda r: r.requested_at):
            todo = sorted(owned - self.done.get(request.request_id, set()))
            if todo:
                out.append((request, todo))
        return out

    def _forget(self, now_ms: int) -> None:
        every = set(range(self.partitions))
        for request_id, request in list(self.pending.items()):
            finished = self.done.get(request_id, set()) >= every
            if finished or now_ms - request.requested_at > self.horizon_ms:
                del self.pending[request_id]
        self.done = {rid: parts for rid, parts in self.done.items() if rid in self.pending}


def caught_up(positions: Mapping[int, int], ends: Mapping[int, int]) -> bool:
    """True once every partition has been read up to its end offset at startup."""
    return all(positions.get(partition, 0) >= end for partition, end in ends.items())
