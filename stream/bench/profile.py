"""Optional py-spy profile of a worker during a phase, summarised into hot functions.

>>> top_functions(["t1;a (m.py);b (m.py) 3", "t1;a (m.py) 1"], n=2)["self"]
[{'function': 'b (m.py)', 'pct': 75.0}, {'function': 'a (m.py)', 'pct': 25.0}]
>>> thread_name("thread (4242): Thread-40 (process_request_thread)")
'Thread-N (process_request_thread)'
"""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any


def py_spy() -> str | None:
    """The py-spy executable next to this Python, or on PATH."""
    local = Path(sys.executable).parent / "py-spy"
    return str(local) if local.is_file() else shutil.which("py-spy")


class Profiler:
    """`py-spy record` attached to a pid, raw (collapsed) stacks per thread, stopped with SIGINT."""

    def __init__(self, pid: int, output: Path, rate: int = 100) -> None:
        exe = py_spy()
        if exe is None:
            raise RuntimeError("py-spy is not installed: .venv/bin/pip install py-spy")
        self.output = output
        cmd = [exe, "record", "--pid", str(pid), "--rate", str(rate), "--format", "raw"]
        cmd += ["--nolineno", "--threads", "--nonblocking", "--output", str(output)]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self.rate, self.started = rate, time.monotonic()

    def stop(self, timeout: float = 30.0) -> dict[str, Any]:
        """Stop sampling and summarise the samples (shares are % of all samples)."""
        seconds = time.monotonic() - self.started
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        if not self.output.is_file():
            err = (
                self.proc.stderr.read().decode(errors="replace")[-300:] if self.proc.stderr else ""
            )
            return {"error": f"py-spy wrote no profile: {err.strip()}"}
        raw = self.output.read_text().splitlines()
        summary = {**top_functions(raw), "main_thread": loop_breakdown(raw)}
        # Share of wall time each thread was busy (on CPU or runnable): 100% = one saturated core.
        for thread in summary["threads"]:
            thread["busy_pct_of_wall"] = round(
                100 * thread["pct"] / 100 * summary["samples"] / (self.rate * seconds), 1
            )
        return {"file": str(self.output), "seconds": round(seconds, 1), **summary}


def thread_name(frame: str) -> str:
    """py-spy's thread frame without the id, numbered threads folded together."""
    return re.sub(r"Thread-\d+", "Thread-N", re.sub(r"^thread \(\d+\): ", "", frame))


def is_project(frame: str) -> bool:
    """A frame from this repository's packages (py-spy shortens paths to the package part)."""
    return "(stream/" in frame or "(model/" in frame


# Where the event loop's time goes, by the first marker found in a stack (checked in this order;
# py-spy's non-blocking stacks are sometimes cut short, hence leaf functions as markers too).
# The Faust part is what handing whole fetched batches to the agent could save at most.
LOOP_PARTS = (
    ("live quality (outcomes, online metrics)", ("Quality.on_job", "(stream/outcomes.py)")),
    ("model inputs and prediction records", ("Inference.predict", "(model/")),
    ("worker intake (decode, pseudonymise, window update)",
     ("StreamWorker.intake", "(stream/intake.py)", "(stream/windows.py)", "(schemas/")),
    ("Faust per-message path (fetch -> Event -> stream, acks)",
     ("Fetcher._fetcher", "Stream._passive_drainer", "Event.ack", "App.create_event",
      "Consumer._to_message", "Consumer.getmany", "Channel.__anext__", "Stream._c_aiter",
      "eager_wait_first", "SensorDelegate.on_stream_event_in", "on_message (faust/")),
    ("batch hand-off, publish, offsets", ("StreamWorker.", "TableStore.")),
    ("producer and consumer I/O (aiokafka)", ("(aiokafka/",)),
    ("other Faust machinery (producer buffer, flow control)", ("(faust/",)),
    ("idle (waiting in select)", ("select (",)),
)  # fmt: skip


def loop_breakdown(lines: Iterable[str]) -> list[dict[str, Any]]:
    """The main thread's samples split into LOOP_PARTS (% of its samples), plus "other" (mostly
    asyncio's own scheduling).

    >>> [p["pct"] for p in loop_breakdown(["MainThread;StreamWorker.intake (x) 3", "MainThread 1"])]
    [75.0, 25.0]
    """
    found: Counter[str] = Counter()
    for line in lines:
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit() or "MainThread" not in stack.split(";", 1)[0]:
            continue
        part = next((name for name, marks in LOOP_PARTS if any(m in stack for m in marks)), "other")
        found[part] += int(count)
    total = sum(found.values())
    return [{"part": k, "pct": round(100 * v / total, 1)} for k, v in found.most_common()]


def top_functions(lines: Iterable[str], n: int = 15) -> dict[str, Any]:
    """Self and inclusive share (% of samples) of the top functions, and the share per thread."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    threads: Counter[str] = Counter()
    total = 0
    for line in lines:
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = stack.split(";")
        weight = int(count)
        total += weight
        threads[thread_name(frames[0])] += weight
        own[frames[-1]] += weight
        for frame in set(frames[1:]):
            inclusive[frame] += weight

    def top(counter: Counter[str]) -> list[dict[str, Any]]:
        return [
            {"function": f, "pct": round(100 * c / total, 1)} for f, c in counter.most_common(n)
        ]

    if total == 0:
        return {"samples": 0, "self": [], "inclusive": [], "project_inclusive": [], "threads": []}
    return {
        "samples": total,
        "self": top(own),
        "inclusive": top(inclusive),
        "project_inclusive": top(Counter({f: c for f, c in inclusive.items() if is_project(f)})),
        "threads": [
            {"thread": t, "pct": round(100 * c / total, 1)} for t, c in threads.most_common(6)
        ],
    }
