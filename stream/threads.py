"""Inference threads chosen between batches from what the worker is doing (docs/DESIGN.md).

The worker infers on one thread of its own while the event loop decodes the next batch. Before
each model call the policy reads how busy the event loop was since the previous call (CPU time of
the loop's thread / wall time, smoothed); torch may use the cores left over (the cap), and below
the cap the count with the lowest measured seconds per row wins (ThreadChooser). When the next
batch is always ready as soon as a call ends (the model is the bound: WaitMeter), the cap is all
cores, however busy the loop looks, because the loop's work then waits on the model anyway.
On a CPU a large call runs as slices of the batch, one thread each (SlicedRunner). The cap:

>>> choose_threads(cores=2, loop_busy=0.10)  # model-bound: the loop mostly waits on the model
2
>>> choose_threads(cores=2, loop_busy=0.60)  # intake-bound: keep a core for the event loop
1
>>> choose_threads(cores=8, loop_busy=1.0), choose_threads(cores=1, loop_busy=0.9)
(7, 1)
"""

from __future__ import annotations

import functools
import logging
import os
import sys
import threading
import time
from collections.abc import Callable, MutableMapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

log = logging.getLogger("bstream.threads")

# A loop busier than this share of a core gets a core of its own: two intra-op threads on 2 cores
# beat one only while the loop steals less than ~0.45 of a core (1.85x speedup measured), and the
# loop itself slows when it shares its core with a spinning OpenMP thread; 0.35 leaves a margin.
LOOP_SHARE_MAX = 0.35
SMOOTHING = 0.5  # weight of the newest interval in the moving loop-busy estimate
COST_SMOOTHING = 0.3  # weight of the newest call in a thread count's seconds-per-row estimate
EXPLORE_EVERY = 50  # re-check the runner-up count once in this many calls (<1% of batches)
# ... but the first re-check after more threads lose comes this many calls later, then twice as
# late each time they lose again: one stalled 2-thread call (a host hiccup) had a max-rate run
# on 1 thread for ~50 calls, a minute at half speed (bench run 7 of docs/DESIGN.md, part 2).
EXPLORE_FIRST = 4
# Model-bound while the inference thread waits less than this share of the time between calls
# (the hand-over of results and the next job costs a few ms per batch), intake-bound again above
# the second figure; the gap between the two keeps the cap from flapping.
MODEL_BOUND_BELOW, INTAKE_BOUND_ABOVE = 0.10, 0.30
MIN_ROWS = 8  # calls smaller than this do not update the cost estimates
# Fewer threads win only when clearly cheaper: small calls' costs are noisy, and at light load the
# extra thread is what keeps latency down (fixed load, 119 ev/s: a chooser that sometimes picked
# 1 thread gave p99 371 ms where 2 pinned threads gave 304 ms in the same run).
FEWER_THREADS_MARGIN = 0.15
# A large CPU call runs as slices on separate threads, one intra-op thread each, rather than as one
# call on N intra-op threads: no barrier between the threads, so a core taken for a moment by the
# event loop slows one slice instead of stalling every parallel region. Measured on 2 cores (the
# MiniLM bundle, batches of 256, alternating 8-s slots): 279 vs 247 preds/s idle, 277 vs 227 with
# a thread taking 8% of a core in 10-ms bursts (docs/DESIGN.md, "Inference threads").
MIN_SLICE_ROWS = 32  # smaller calls stay one call: small slices cost more per row
# Chunks per thread in a sliced call: threads that finish early take more. Measured (256 rows,
# 2 threads, a thread taking 8% of a core): chunks of 32 rows 259 preds/s, of 64 233, halves 231.
CHUNKS_PER_THREAD = 4


def plan_slices(rows: int, threads: int, min_rows: int = MIN_SLICE_ROWS) -> tuple[int, int]:
    """(slices, intra-op threads per slice) for a call of `rows` on `threads` threads.

    >>> plan_slices(256, 2), plan_slices(24, 2), plan_slices(96, 8), plan_slices(5, 1)
    ((2, 1), (1, 2), (3, 2), (1, 1))
    """
    slices = max(1, min(threads, rows // min_rows))
    return slices, max(1, threads // slices)


def plan_chunks(rows: int, slices: int, min_rows: int = MIN_SLICE_ROWS) -> list[tuple[int, int]]:
    """(start, end) of each chunk: a multiple of `slices` chunks of near-equal size.

    Equal shares matter: 224 rows as chunks of 32 are 7 chunks, so one of two threads runs a
    fourth chunk while the other waits (1/8 of the call lost); 6 chunks of 37 keep both busy.

    >>> plan_chunks(224, 2)
    [(0, 38), (38, 76), (76, 113), (113, 150), (150, 187), (187, 224)]
    >>> len(plan_chunks(256, 2)), len(plan_chunks(100, 2)), len(plan_chunks(64, 2))
    (8, 2, 2)
    """
    per_slice = max(1, min(CHUNKS_PER_THREAD, rows // (slices * min_rows)))
    count = slices * per_slice
    size, extra = divmod(rows, count)
    bounds, start = [], 0
    for k in range(count):
        end = start + size + (1 if k < extra else 0)
        bounds.append((start, end))
        start = end
    return bounds


@functools.cache
def _slice_pool(size: int) -> ThreadPoolExecutor:
    return ThreadPoolExecutor(size, thread_name_prefix="bstream-slice")


class SlicedRunner:
    """Runs `predict` on a batch as chunks on 1..N threads at once; rows back in input order.

    The threads pull the next chunk as they finish one (plan_chunks: at least MIN_SLICE_ROWS rows,
    up to CHUNKS_PER_THREAD per thread, as many for each), so a thread slowed by other work takes
    fewer chunks instead of holding up the call. The calling thread is one of them.
    """

    def __init__(self, predict: Callable[[Sequence[Any]], list[Any]], cores: int) -> None:
        self.predict = predict
        self.pool = _slice_pool(max(1, cores - 1))  # shared: a hot swap makes a new runner

    @staticmethod
    def _set_threads(threads: int) -> None:
        import torch

        # Every time, on the thread that predicts: torch's count is process-wide, but OpenMP's is
        # per OS thread, so a check of torch's getter can miss a pool thread still at its default.
        torch.set_num_threads(threads)

    def __call__(self, windows: Sequence[Any], threads: int) -> list[Any]:
        """Scores of `windows` on `threads` threads in all (see plan_slices)."""
        slices, per_slice = plan_slices(len(windows), threads)
        if slices == 1:
            self._set_threads(per_slice)
            return self.predict(windows)
        chunks = [windows[start:end] for start, end in plan_chunks(len(windows), slices)]
        out: list[list[Any]] = [[] for _ in chunks]
        order = iter(range(len(chunks)))
        lock = threading.Lock()

        def work() -> None:
            self._set_threads(per_slice)
            while True:
                with lock:
                    k = next(order, None)
                if k is None:
                    return
                out[k] = self.predict(chunks[k])

        helpers = [self.pool.submit(work) for _ in range(slices - 1)]
        work()
        for helper in helpers:
            helper.result()
        return [row for chunk in out for row in chunk]


def prefer_passive_openmp(environ: MutableMapping[str, str] = os.environ) -> bool:
    """Ask OpenMP to sleep, not spin, between parallel regions; False if torch already loaded.

    libgomp reads OMP_WAIT_POLICY once, when torch loads it, so this must run before the first
    `import torch`. A value the user set wins. Why: two intra-op threads on 2 cores spin after
    every region and take the event loop's core; measured in one `bstream bench --thread-sweep`
    each (real MiniLM bundle, 8,000 Taobao events): the worker pinned to 2 threads delivered 287
    predictions/s spinning and 318 passive (docs/DESIGN.md, "Inference threads").
    """
    if "torch" in sys.modules:
        return False
    environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    return True


def choose_threads(cores: int, loop_busy: float, share_max: float = LOOP_SHARE_MAX) -> int:
    """Intra-op threads for the next model call: cores minus the cores the loop needs (>= 1)."""
    return max(1, min(cores, int(cores + share_max - loop_busy)))


def thread_cpu_clock(thread: threading.Thread) -> Callable[[], float] | None:
    """A function giving `thread`'s CPU seconds, or None where the OS cannot tell (not Linux)."""
    ident = thread.ident
    if ident is None or not hasattr(time, "pthread_getcpuclockid"):
        return None
    try:
        clock = time.pthread_getcpuclockid(ident)
        time.clock_gettime(clock)
    except (OSError, AttributeError):
        return None
    return lambda: time.clock_gettime(clock)


class LoopMeter:
    """The event loop thread's CPU share of wall time since the previous reading, smoothed."""

    def __init__(
        self,
        cpu_clock: Callable[[], float] | None,
        wall_clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.cpu_clock, self.wall_clock = cpu_clock, wall_clock
        self.busy = 0.0
        self._last: tuple[float, float] | None = None

    def read(self) -> float:
        """Update the estimate with the interval since the last read and return it."""
        if self.cpu_clock is None:
            return self.busy
        now = (self.cpu_clock(), self.wall_clock())
        if self._last is not None:
            cpu, wall = now[0] - self._last[0], now[1] - self._last[1]
            if wall > 0:
                self.busy += SMOOTHING * (min(1.0, cpu / wall) - self.busy)
        self._last = now
        return self.busy


class WaitMeter:
    """How long the inference thread waits for the next batch, as a smoothed share of its time.

    >>> clock = [0.0]
    >>> meter = WaitMeter(lambda: clock[0])
    >>> for _ in range(6):  # each call takes 1 s and the next batch is ready at once
    ...     meter.start(); clock[0] += 1.0; meter.end()
    >>> meter.model_bound
    True
    >>> for _ in range(6):  # now it waits 1 s for every batch: intake is the bound
    ...     clock[0] += 1.0; meter.start(); clock[0] += 1.0; meter.end()
    >>> round(meter.waiting, 2), meter.model_bound
    (0.49, False)
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.waiting = 1.0  # unknown at first: not model-bound until calls show it
        self.model_bound = False
        self._ended: float | None = None
        self._started = 0.0

    def start(self) -> None:
        self._started = self.clock()

    def end(self) -> None:
        now = self.clock()
        if self._ended is not None:
            wait, busy = self._started - self._ended, now - self._started
            if wait + busy > 0:
                self.waiting += SMOOTHING * (wait / (wait + busy) - self.waiting)
        self._ended = now
        if self.waiting < MODEL_BOUND_BELOW:
            self.model_bound = True
        elif self.waiting > INTAKE_BOUND_ABOVE:
            self.model_bound = False


class ThreadChooser:
    """Picks 1..cap threads per call: the lowest measured seconds per row (more threads within
    FEWER_THREADS_MARGIN of it win), rechecked now and then.

    The loop-share rule gives the cap; measured cost decides below it, because on a host shared
    with other work two intra-op threads can be many times slower than one (a descheduled thread
    holds up every parallel region), which no reading of our own loop shows.

    The first call at each count is a warm-up and is not counted: it pays for OpenMP starting
    its threads and TorchScript profiling its first runs (measured: with it counted, a max-rate
    run kept 1 thread for 4 minutes, 0.50 of the ceiling, where 2 threads gave 0.93). A count
    looked at again after losing gets the new call's cost, not a blend with its stale one.

    >>> chooser = ThreadChooser(explore_every=8, explore_first=2)
    >>> chooser.pick(2)  # each count is tried, the cap first
    2
    >>> chooser.record(2, rows=256, seconds=5.0)  # warm-up: not counted
    >>> chooser.pick(2)
    2
    >>> chooser.record(2, rows=256, seconds=0.5)
    >>> chooser.pick(2), chooser.record(1, rows=256, seconds=1.0)
    (1, None)
    >>> chooser.pick(2), chooser.record(1, rows=256, seconds=1.0)
    (1, None)
    >>> [chooser.pick(2) for _ in range(4)]  # the cheapest
    [2, 2, 2, 2]
    >>> chooser.record(2, rows=256, seconds=9.0)  # other work arrives: 2 threads now stall
    >>> [chooser.pick(2) for _ in range(3)]  # 1 wins; 2 is looked at again after 2 calls
    [1, 1, 2]
    >>> chooser.record(2, rows=256, seconds=9.0)  # still slow: the next look comes twice as late
    >>> [chooser.pick(2) for _ in range(4)]  # (and never later than `explore_every` calls)
    [1, 1, 1, 2]
    >>> chooser.record(2, rows=256, seconds=0.5)  # the load is gone: 2 wins again at once
    >>> chooser.pick(2)
    2
    """

    def __init__(self, explore_every: int = EXPLORE_EVERY, explore_first: int = EXPLORE_FIRST):
        self.explore_every = explore_every
        self.explore_first = min(explore_first, explore_every)
        self.look_gap = self.explore_first  # calls until more threads are looked at again
        self.next_look: int | None = None  # the call that looks; None: the most threads win
        self.cost: dict[int, float] = {}  # threads -> smoothed seconds per row
        self.counted: dict[int, int] = {}  # threads -> calls recorded (the first is a warm-up)
        self.calls = 0
        self.exploring: int | None = None  # the count of a call made to look at it again

    def pick(self, cap: int) -> int:
        """The thread count for the next call, at most `cap`."""
        self.calls += 1
        self.exploring = None
        untried = [n for n in range(cap, 0, -1) if n not in self.cost]
        if untried:
            return untried[0]
        ranked = sorted(range(1, cap + 1), key=lambda n: self.cost[n])
        limit = self.cost[ranked[0]] * (1 + FEWER_THREADS_MARGIN)
        best = max(n for n in ranked if self.cost[n] <= limit)
        more = [n for n in ranked if n > best]
        if not more:
            self.look_gap, self.next_look = self.explore_first, None
            return best
        if self.next_look is None:
            self.next_look = self.calls + self.look_gap
        if self.calls >= self.next_look:
            # The best count's own calls keep its cost fresh; a count with more threads that lost
            # under load has only a stale cost, so it is looked at again once the load may be gone:
            # soon after it lost (a stall passes), then less often while it keeps losing.
            self.look_gap = min(2 * self.look_gap, self.explore_every)
            self.next_look = self.calls + self.look_gap
            self.exploring = more[0]
            return more[0]
        return best

    def record(self, threads: int, rows: int, seconds: float) -> None:
        """Fold one call's cost into the estimate for its thread count."""
        if rows < MIN_ROWS or seconds <= 0:
            return  # tiny calls cost mostly fixed overhead: they say little about threads
        self.counted[threads] = self.counted.get(threads, 0) + 1
        if self.counted[threads] == 1:
            return  # the warm-up call
        per_row = seconds / rows
        old = self.cost.get(threads)
        if old is None or self.exploring == threads:
            self.cost[threads] = per_row  # a first look, or a fresh look after losing
        else:
            self.cost[threads] = old + COST_SMOOTHING * (per_row - old)


class AdaptiveThreads:
    """Wraps the runtime; each `predict` (on the inference thread) first sets torch's threads.

    `fixed` pins the count (BSTREAM_TORCH_THREADS); `on_change` sees every new count (a gauge);
    `on_call` gets each call's seconds (the model's busy time).
    """

    def __init__(
        self,
        model: Any,
        cores: int | None = None,
        fixed: int | None = None,
        meter: LoopMeter | None = None,
        on_change: Callable[[int], None] | None = None,
        on_call: Callable[[float], None] | None = None,
    ) -> None:
        self.model = model
        self.cores = max(1, cores or os.cpu_count() or 1)
        self.fixed = fixed
        self.meter = meter or LoopMeter(thread_cpu_clock(threading.main_thread()))
        self.chooser = ThreadChooser()
        self.waits = WaitMeter()
        self.on_change, self.on_call = on_change, on_call
        self.threads = 0  # threads of the latest call
        on_cpu = getattr(model, "device", "cpu") == "cpu"
        self.sliced = SlicedRunner(lambda w: self.model.predict(w), self.cores) if on_cpu else None

    def __getattr__(self, name: str) -> Any:
        return getattr(self.model, name)  # version, labels, device, ... of the real runtime

    def next_threads(self) -> int:
        """The count for the next call: fixed, or measured-best below the cap (all cores while
        the model is the bound, else what the loop leaves free)."""
        busy = self.meter.read()
        cap = self.cores if self.waits.model_bound else choose_threads(self.cores, busy)
        return self.fixed or self.chooser.pick(cap)

    def predict(self, windows: Sequence[Sequence[Any]]) -> list[dict[str, float]]:
        wanted = self.next_threads()
        if wanted != self.threads:
            self.threads = wanted
            log.debug("inference threads -> %d (event loop busy %.2f)", wanted, self.meter.busy)
            if self.on_change is not None:
                self.on_change(wanted)
        self.waits.start()
        started = time.perf_counter()
        if self.sliced is not None:
            scores = self.sliced(windows, wanted)
        else:
            import torch

            torch.set_num_threads(wanted)  # a GPU call: these threads only feed it
            scores = self.model.predict(windows)
        seconds = time.perf_counter() - started
        self.chooser.record(wanted, len(windows), seconds)
        self.waits.end()
        if self.on_call is not None:
            self.on_call(seconds)
        return scores  # type: ignore[no-any-return]
