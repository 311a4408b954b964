"""Throttle repeated client-library log lines, so an outage reads as a few clear lines, not a flood.

While the broker is down, aiokafka retries every 100 ms and logs an ERROR each time (measured:
~60 lines/s, ~14 KB/s). The worker's own `broker ... is UNREACHABLE` line says what is wrong;
these filters let the first line of each kind through and then one per interval, with a count.

>>> now = [0.0]
>>> f = RepeatFilter(interval_s=30, clock=lambda: now[0])
>>> rec = lambda: logging.LogRecord("aiokafka", 40, "", 0, "Unable to connect %s", ("x",), None)
>>> [f.filter(rec()) for _ in range(3)]
[True, False, False]
>>> now[0] = 31.0
>>> r = rec(); f.filter(r), r.getMessage()
(True, 'Unable to connect x [2 more like this in 31s]')
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable

# Loggers that repeat one line per retry while the broker is unreachable.
CLIENT_LOGGERS = (
    "aiokafka",  # aiokafka.client logs as "aiokafka"
    "aiokafka.conn",
    "aiokafka.consumer.fetcher",
    "aiokafka.consumer.group_coordinator",
    "aiokafka.consumer.consumer",
    "aiokafka.producer.sender",
    "aiokafka.producer.producer",
    "bstream.librdkafka",
)


class RepeatFilter(logging.Filter):
    """Passes the first record of each (logger, message template), then one per `interval_s`."""

    def __init__(self, interval_s: float = 30.0, clock: Callable[[], float] = time.monotonic):
        super().__init__()
        self.interval_s = interval_s
        self.clock = clock
        self._seen: dict[tuple[str, str], tuple[float, int]] = {}  # -> (last passed, suppressed)

    def filter(self, record: logging.LogRecord) -> bool:
        key = (record.name, str(record.msg))
        now = self.clock()
        last = self._seen.get(key)
        if last is not None and now - last[0] < self.interval_s:
            self._seen[key] = (last[0], last[1] + 1)
            return False
        if last is not None and last[1]:
            record.msg = f"{record.msg} [{last[1]} more like this in {now - last[0]:.0f}s]"
        self._seen[key] = (now, 0)
        return True


def install(names: Iterable[str] = CLIENT_LOGGERS, interval_s: float = 30.0) -> RepeatFilter:
    """Attach one shared RepeatFilter to each named logger; returns it."""
    repeat = RepeatFilter(interval_s)
    for name in names:
        logging.getLogger(name).addFilter(repeat)
    return repeat
