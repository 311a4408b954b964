"""Repeated client log lines are throttled: first one passes, then one per interval with a count."""

from __future__ import annotations

import logging

from stream.logthrottle import RepeatFilter, install


def record(msg: str = "Unable connect to node %s", name: str = "aiokafka") -> logging.LogRecord:
    return logging.LogRecord(name, logging.ERROR, __file__, 1, msg, ("111",), None)


def test_repeats_are_suppressed_within_the_interval_then_summarised() -> None:
    now = [0.0]
    repeat = RepeatFilter(interval_s=30, clock=lambda: now[0])

    passed = [repeat.filter(record()) for _ in range(100)]
    now[0] = 30.0
    later = record()

    assert passed == [True] + [False] * 99
    assert repeat.filter(later)
    assert later.getMessage() == "Unable connect to node 111 [99 more like this in 30s]"


def test_different_messages_and_loggers_are_throttled_separately() -> None:
    repeat = RepeatFilter(interval_s=30, clock=lambda: 0.0)

    assert repeat.filter(record("a %s"))
    assert repeat.filter(record("b %s"))
    assert repeat.filter(record("a %s", name="aiokafka.conn"))
    assert not repeat.filter(record("a %s"))


def test_install_filters_the_named_loggers() -> None:
    name = "tests.logthrottle.example"
    repeat = install([name], interval_s=60)
    try:
        logger = logging.getLogger(name)
        assert repeat in logger.filters
        assert logger.filter(record(name=name)) and not logger.filter(record(name=name))
    finally:
        logging.getLogger(name).removeFilter(repeat)
