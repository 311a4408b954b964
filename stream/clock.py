"""Wall-clock time in epoch milliseconds, the unit of event `ts` and of every record stamp."""

from __future__ import annotations

import time


def now_ms() -> int:
    """Milliseconds since the epoch, now."""
    return int(time.time() * 1000)
