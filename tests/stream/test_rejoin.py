"""Rejoin bookkeeping: assigned partitions lose Faust's stale read/ack/commit marks."""

from __future__ import annotations

from typing import Any

import faust
from faust.types import TP

from stream.kafka.rejoin import forget


def consumer_with_marks(*tps: TP) -> Any:
    """Faust's real consumer (never started) with read/commit/ack marks for `tps`."""
    consumer: Any = faust.App("rejoin-test", broker="kafka://127.0.0.1:1").consumer
    for tp in tps:
        consumer._read_offset[tp] = 41
        consumer._committed_offset[tp] = 40
        consumer._acked[tp] = [41]
    return consumer


def test_forget_clears_the_marks_of_assigned_partitions_only() -> None:
    kept, again = TP("events", 0), TP("events", 1)
    consumer = consumer_with_marks(kept, again)
    next_offset = {0: 42, 1: 42}

    stale = forget(consumer, {again}, next_offset, "events")

    assert stale == 1
    assert again not in consumer._read_offset and again not in consumer._committed_offset
    assert consumer._read_offset[kept] == 41
    assert next_offset == {0: 42}


def test_forget_is_a_no_op_after_a_normal_revocation() -> None:
    consumer = consumer_with_marks()

    assert forget(consumer, {TP("events", 0)}, {}, "events") == 0
