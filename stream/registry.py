"""The model registry: records on the compacted `behavior.models` topic, and reading it back.

One partition, so the records have one order. Keys and values (JSON):

    champion            {"v": 1, "type": "model", "role": "champion", "name", "version",
                         "location", "sha256", "labels", "window", "promoted_by", "promoted_at",
                         "history": [earlier champions, newest last], ...}
    challenger          the same with role "challenger" and "share" (a tombstone retires it)
    worker/<app>/<id>   {"type": "worker", "champion": version, "challenger": version | null,
                         "error": last failed load | null, "at": ms}  (tombstone on shutdown)
    decision/<ms>-<v>   {"type": "decision", "action", "version", "figures", "at": ms}

Compaction keeps the newest record per key: the current champion (with the champions before it,
for `promote --rollback`), the current challenger, one status per running worker, every decision.
`sha256` is the sha256 of the bundle's model.ts (as in bundle.json's `files`).

>>> a = Announcement("champion", "tiny", "v2", "/b/v2", "ab", ["purchase"], 20, "me", 5)
>>> state = fold([(b"champion", encode(a))])
>>> state.champion.version, state.challenger
('v2', None)
>>> b = champion_after(state.champion, replace(a, version="v3", location="/b/v3"))
>>> [h.version for h in b.earlier()]
['v2']
>>> rolled = rollback_of(b, "me", 9)
>>> rolled.version, rolled.note, rolled.earlier()
('v2', 'rollback from v3', [])
"""

from __future__ import annotations

import getpass
import socket
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal
from urllib.parse import unquote, urlparse

import orjson

from stream.kafka import KafkaUnavailable, check_reachable
from stream.kafka.clients import Sender, TopicReader
from stream.settings import Settings

VERSION = 1
CHAMPION: Literal["champion"] = "champion"
CHALLENGER: Literal["challenger"] = "challenger"
ROLES = (CHAMPION, CHALLENGER)
HISTORY = 10  # earlier champions kept in the champion record (rollback depth)

Role = Literal["champion", "challenger"]


class RegistryError(ValueError):
    """A registry record that cannot be parsed, or an operation the registry cannot do."""


@dataclass(frozen=True)
class Announcement:
    """One model announced in a role."""

    role: str
    name: str
    version: str
    location: str  # a path or file:// URL the workers can read
    sha256: str  # of model.ts
    labels: list[str]
    window: int  # events the bundle's encoder reads per window
    promoted_by: str
    promoted_at: int  # ms since the epoch
    share: float | None = None  # challengers: share of batches scored in shadow
    history: list[dict[str, Any]] = field(default_factory=list)
    note: str = ""

    @property
    def path(self) -> Path:
        return location_path(self.location)

    def replace_history(self, history: list[Announcement]) -> Announcement:
        return replace(self, history=[_brief(a) for a in history][-HISTORY:])

    def earlier(self) -> list[Announcement]:
        """The champions before this one, oldest first."""
        return [_announcement(h) for h in self.history]


def _brief(a: Announcement) -> dict[str, Any]:
    return {k: v for k, v in asdict(a).items() if k != "history"}


def _announcement(obj: dict[str, Any]) -> Announcement:
    try:
        known = {k: obj[k] for k in Announcement.__dataclass_fields__ if k in obj}
        made = Announcement(**known)
    except TypeError as exc:
        raise RegistryError(f"bad model record: {exc}") from None
    if made.role not in ROLES or not made.version or not made.location:
        raise RegistryError("bad model record: role, version or location missing")
    return made


def location_path(location: str) -> Path:
    """A bundle location (a path or a file:// URL) as a local path."""
    if location.startswith("file:"):
        parsed = urlparse(location)
        return Path(unquote(parsed.path))
    if "://" in location:
        raise RegistryError(f"unsupported bundle location {location!r}: use a path or file:// URL")
    return Path(location)


def encode(record: Announcement) -> bytes:
    """JSON bytes of an announcement."""
    return orjson.dumps({"v": VERSION, "type": "model", **asdict(record)})


def worker_key(app_id: str, worker: str) -> bytes:
    return f"worker/{app_id}/{worker}".encode()


def worker_status(
    app_id: str,
    worker: str,
    champion: str,
    challenger: str | None,
    error: str | None,
    at: int,
) -> bytes:
    """JSON bytes of one worker's status record."""
    return orjson.dumps(
        {
            "v": VERSION,
            "type": "worker",
            "app_id": app_id,
            "worker": worker,
            "champion": champion,
            "challenger": challenger,
            "error": error,
            "at": at,
        }
    )


def decision_record(action: str, version: str, figures: dict[str, Any], at: int) -> bytes:
    """JSON bytes of a retrain/promote decision with its figures."""
    return orjson.dumps(
        {"v": VERSION, "type": "decision", "action": action, "version": version,
         "figures": figures, "at": at}
    )  # fmt: skip


def decision_key(version: str, at: int) -> bytes:
    return f"decision/{at}-{version}".encode()


@dataclass
class RegistryState:
    """What the topic says now (newest record per key)."""

    champion: Announcement | None = None
    challenger: Announcement | None = None
    workers: dict[str, dict[str, Any]] = field(default_factory=dict)
    decisions: list[dict[str, Any]] = field(default_factory=list)
    skipped: int = 0  # unparseable records

    def apply(self, key: bytes | None, value: bytes | None) -> Announcement | None:
        """Take in one record; returns the announcement it makes (None for other records)."""
        name = (key or b"").decode(errors="replace")
        if name.startswith("worker/"):
            if value is None:
                self.workers.pop(name, None)
            else:
                self.workers[name] = _json(value)
            return None
        if name in ROLES and value is None:
            setattr(self, name, None)  # retired
            return None
        if value is None:
            return None
        try:
            obj = _json(value)
            if obj.get("type") == "decision":
                self.decisions.append(obj)
                return None
            made = _announcement(obj)
        except RegistryError:
            self.skipped += 1
            return None
        setattr(self, made.role, made)
        return made


def _json(value: bytes) -> dict[str, Any]:
    try:
        obj = orjson.loads(value)
    except orjson.JSONDecodeError:
        raise RegistryError("not JSON") from None
    if not isinstance(obj, dict) or obj.get("v") != VERSION:
        raise RegistryError(f"not a v{VERSION} registry record")
    return obj


def fold(records: Iterable[tuple[bytes | None, bytes | None]]) -> RegistryState:
    """The registry state after these records, in topic order."""
    state = RegistryState()
    for key, value in records:
        state.apply(key, value)
    return state


def who() -> str:
    """Who promotes: user@host (no secret, no user id of the stream)."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


def now_ms() -> int:
    return int(time.time() * 1000)


def champion_after(current: Announcement | None, new: Announcement) -> Announcement:
    """A new champion record carrying the history (the current champion appended)."""
    history = current.earlier() + [current] if current is not None else []
    history = [h for h in history if h.version != new.version]
    return new.replace_history(history)


def rollback_of(current: Announcement | None, by: str, at: int) -> Announcement:
    """The previous champion, announced again (its history: the ones before it)."""
    if current is None:
        raise RegistryError("no champion announced: nothing to roll back")
    earlier = current.earlier()
    if not earlier:
        raise RegistryError("no previous champion to roll back to")
    previous = earlier[-1]
    return replace(
        previous, promoted_by=by, promoted_at=at, note=f"rollback from {current.version}"
    ).replace_history(earlier[:-1])


# -- Kafka I/O (confluent-kafka) ---------------------------------------------------------------


def read_state(settings: Settings, timeout: float = 10.0) -> RegistryState:
    """Read the models topic to its end; an absent topic is an empty registry."""
    reader = RegistryReader(settings, timeout)
    try:
        reader.catch_up(timeout)
        return reader.state
    finally:
        reader.close()


class RegistryReader:
    """Reads the models topic from its start (no group); an absent topic is an empty registry."""

    def __init__(self, settings: Settings, timeout: float = 10.0) -> None:
        check_reachable(settings.bootstrap)
        self.state = RegistryState()
        # never joins the group: partitions are assigned
        self.reader = TopicReader(
            settings, settings.models_topic, f"{settings.app_id}-registry", timeout, missing_ok=True
        )

    def poll(self, wait: float = 0.0) -> list[Announcement]:
        """Take in fetched records; the announcements among them, in order."""
        made = []
        for key, value in self.reader.poll(wait, 1000):
            found = self.state.apply(key, value)
            if found is not None:
                made.append(found)
        return made

    def caught_up(self) -> bool:
        return self.reader.caught_up()

    def catch_up(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not self.caught_up() and time.monotonic() < deadline:
            self.poll(0.2)

    def close(self) -> None:
        self.reader.close()


class RegistryWriter:
    """Writes registry records and waits for the broker's acknowledgement."""

    def __init__(self, settings: Settings) -> None:
        self.topic = settings.models_topic
        self.errors: list[str] = []
        self.sender = Sender(settings, self._delivered)

    def _delivered(self, error: str | None) -> None:
        if error is not None:
            self.errors.append(error)

    def send(self, key: bytes, value: bytes | None, timeout: float = 15.0) -> None:
        """Write one record (None: a tombstone); KafkaUnavailable unless the broker acked it."""
        self.errors.clear()
        refused = self.sender.send(self.topic, key, value)
        if refused is None and self.sender.flush(timeout) == 0 and not self.errors:
            return
        reason = refused or (self.errors[0] if self.errors else "no acknowledgement")
        raise KafkaUnavailable(f"cannot write to {self.topic!r}: {reason}")

    def send_nowait(self, key: bytes, value: bytes | None) -> None:
        """Queue a record (worker status); delivered by later polls/flush."""
        self.sender.send(self.topic, key, value)
        self.sender.poll(0)

    def flush(self, timeout: float = 5.0) -> None:
        self.sender.flush(timeout)
