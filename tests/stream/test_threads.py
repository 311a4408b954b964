"""The inference-thread policy (stream.threads): the rule, the loop meter, the wrapper."""

from __future__ import annotations

import doctest
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from stream.threads import (
    AdaptiveThreads,
    LoopMeter,
    ThreadChooser,
    WaitMeter,
    choose_threads,
    plan_chunks,
    plan_slices,
    prefer_passive_openmp,
    thread_cpu_clock,
)


@pytest.mark.parametrize(
    ("cores", "busy", "threads"),
    [(2, 0.0, 2), (2, 0.35, 2), (2, 0.5, 1), (2, 1.0, 1), (1, 0.0, 1), (4, 0.2, 4), (4, 1.0, 3)],
)
def test_threads_are_the_cores_the_loop_leaves_free(cores: int, busy: float, threads: int) -> None:
    assert choose_threads(cores, busy) == threads


def test_meter_reads_the_loop_share_of_wall_time_smoothed() -> None:
    cpu, wall = [0.0], [0.0]
    meter = LoopMeter(lambda: cpu[0], lambda: wall[0])
    assert meter.read() == 0.0  # the first reading only sets the origin
    cpu[0], wall[0] = 1.0, 1.0  # fully busy for a second
    assert meter.read() == 0.5
    cpu[0], wall[0] = 1.0, 2.0  # idle for a second
    assert meter.read() == 0.25


def test_meter_without_a_thread_clock_keeps_its_estimate() -> None:
    assert LoopMeter(None).read() == 0.0


def test_the_main_threads_cpu_clock_advances_while_it_works() -> None:
    clock = thread_cpu_clock(threading.main_thread())
    assert clock is not None
    before = clock()
    sum(i * i for i in range(300_000))
    assert clock() > before


def test_wrapper_sets_torch_threads_on_the_calling_thread(tiny_bundle: Path) -> None:
    from model.runtime import Runtime

    runtime = Runtime.load(tiny_bundle, device="cpu")
    busy = [0.9]
    meter = LoopMeter(None)
    seen: list[int] = []
    calls: list[float] = []
    model = AdaptiveThreads(
        runtime, cores=2, meter=meter, on_change=seen.append, on_call=calls.append
    )
    window = [{"event_type": "cart", "ts": 1_700_000_000_000, "item_id": "7"}]
    found: list[int] = []

    def call() -> None:
        meter.busy = busy[0]
        model.predict([window])
        found.append(torch.get_num_threads())

    for load in (0.9, 0.1, 0.1):
        busy[0] = load
        worker = threading.Thread(target=call)
        worker.start()
        worker.join()
    assert model.version == runtime.version  # the rest of the runtime shows through
    assert seen == [1, 2]  # set on change only
    assert found[:2] == [1, 2]
    assert len(calls) == 3 and all(seconds > 0 for seconds in calls)  # the model's busy time


def test_a_fixed_count_wins(tiny_bundle: Path) -> None:
    from model.runtime import Runtime

    model = AdaptiveThreads(Runtime.load(tiny_bundle, device="cpu"), cores=8, fixed=1)
    assert model.next_threads() == 1


def test_below_the_cap_the_measured_cheaper_count_wins() -> None:
    chooser = ThreadChooser(explore_every=1000, explore_first=1000)
    for _ in range(2):  # the first call at each count is a warm-up
        chooser.record(2, rows=256, seconds=2.0)  # a host busy with other work: 2 threads stall
        chooser.record(1, rows=256, seconds=0.5)
    assert [chooser.pick(2) for _ in range(5)] == [1] * 5
    chooser.record(2, rows=4, seconds=0.001)  # too small a call to say anything
    assert chooser.pick(2) == 1
    assert chooser.pick(1) == 1  # never above the cap


def test_fewer_threads_must_be_clearly_cheaper_to_win() -> None:
    chooser = ThreadChooser(explore_every=1000)
    for _ in range(2):  # small calls at light load: 1 thread looks 10% cheaper per row, noise
        chooser.record(2, rows=24, seconds=0.110)
        chooser.record(1, rows=24, seconds=0.100)
    assert chooser.pick(2) == 2
    for _ in range(5):  # now 1 thread is clearly cheaper (a busy host)
        chooser.record(2, rows=24, seconds=0.300)
    assert chooser.pick(2) == 1


def test_more_threads_are_looked_at_soon_after_a_stall_then_less_often_up_to_the_limit() -> None:
    chooser = ThreadChooser(explore_every=20, explore_first=4)
    for _ in range(2):  # warm-up, then 2 threads cost half of 1
        chooser.record(2, rows=256, seconds=0.5)
        chooser.record(1, rows=256, seconds=1.0)
    chooser.record(2, rows=256, seconds=20.0)  # one stalled call: 1 thread wins for now
    looks = []
    for call in range(120):
        picked = chooser.pick(2)
        if picked == 2:
            looks.append(call)
            chooser.record(2, rows=256, seconds=20.0)  # the stall goes on
    gaps = [b - a for a, b in zip(looks, looks[1:], strict=False)]
    assert looks[0] == 4
    assert gaps[:3] == [8, 16, 20] and set(gaps[3:]) == {20}


def test_module_examples_hold() -> None:
    import stream.threads

    assert doctest.testmod(stream.threads).failed == 0


def test_a_model_bound_worker_gets_every_core_however_busy_its_loop_looks() -> None:
    clock = [0.0]
    model = AdaptiveThreads(object(), cores=2, meter=LoopMeter(None))
    model.meter.busy = 0.6  # the loop-share rule alone would keep one core for the loop
    model.waits = WaitMeter(lambda: clock[0])
    assert model.next_threads() == 1
    for _ in range(6):  # back-to-back calls: the next batch is always ready
        model.waits.start()
        clock[0] += 0.3
        model.waits.end()
    assert model.next_threads() == 2  # the cap is now 2; 2 is untried, so it is tried first


def test_the_worker_asks_openmp_to_sleep_only_before_torch_loads_and_never_over_the_user(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delitem(sys.modules, "torch", raising=False)
    fresh: dict[str, str] = {}
    chosen = {"OMP_WAIT_POLICY": "ACTIVE"}
    assert prefer_passive_openmp(fresh) and fresh == {"OMP_WAIT_POLICY": "PASSIVE"}
    assert prefer_passive_openmp(chosen) and chosen == {"OMP_WAIT_POLICY": "ACTIVE"}
    monkeypatch.setitem(sys.modules, "torch", object())
    late: dict[str, str] = {}
    assert not prefer_passive_openmp(late) and late == {}


def test_a_slow_first_call_at_a_count_does_not_decide_against_it() -> None:
    chooser = ThreadChooser(explore_every=1000)
    chooser.record(2, rows=256, seconds=20.0)  # OpenMP starts, TorchScript profiles: a warm-up
    chooser.record(2, rows=256, seconds=0.5)
    for _ in range(2):
        chooser.record(1, rows=256, seconds=1.0)
    assert chooser.pick(2) == 2


@given(rows=st.integers(1, 4096), threads=st.integers(1, 16))
def test_chunks_cover_every_row_once_in_equal_shares_per_thread(rows: int, threads: int) -> None:
    slices, _ = plan_slices(rows, threads)

    chunks = plan_chunks(rows, slices)

    assert [row for start, end in chunks for row in range(start, end)] == list(range(rows))
    assert len(chunks) % slices == 0
    sizes = [end - start for start, end in chunks]
    assert max(sizes) - min(sizes) <= 1
    assert slices == 1 or min(sizes) >= 32


def test_a_sliced_call_returns_rows_in_order_from_several_threads() -> None:
    from stream.threads import SlicedRunner

    def predict(windows: list[int]) -> list[tuple[int, int]]:
        time.sleep(0.05)  # every slice is still running when the last one starts
        return [(w, threading.get_ident()) for w in windows]

    runner = SlicedRunner(predict, cores=4)

    rows = runner(list(range(128)), threads=4)  # 4 chunks of 32, one per thread

    assert [w for w, _ in rows] == list(range(128))
    assert [w for w, _ in runner(list(range(300)), threads=4)] == list(range(300))
    assert len({ident for _, ident in rows}) == 4
    assert [w for w, _ in runner(list(range(20)), threads=4)] == list(range(20))  # one call


def test_sliced_scores_match_one_call(tiny_bundle: Path) -> None:
    from model.runtime import Runtime

    runtime = Runtime.load(tiny_bundle, device="cpu")
    windows = [
        [{"event_type": kind, "ts": 1_700_000_000_000 + i, "item_id": str(i % 7)}]
        for i, kind in enumerate(["view", "cart", "purchase", "click"] * 20)
    ]
    model = AdaptiveThreads(runtime, cores=2, fixed=2)

    sliced = model.predict(windows)

    whole = runtime.predict(windows)
    assert [s["purchase"] for s in sliced] == pytest.approx([w["purchase"] for w in whole])
