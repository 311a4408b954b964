"""The bench phases: model ceiling, optimized, naive, fixed load, memory per window."""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import json
import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from stream.bench.ceiling import measure_ceiling
from stream.bench.data import (
    BenchData,
    Event,
    hot_user_events,
    memory_events,
    prefix_windows,
    sample_batches,
)
from stream.bench.memory import rss_bytes_per_window, store_bytes_per_window
from stream.bench.pipeline import PhaseSpec, e2e_latencies, run_phase, summarize
from stream.bench.report import host_cpu_ticks, steal_pct
from stream.bench.workerproc import BENCH_KEY
from stream.kafka.broker import EmbeddedBroker
from stream.privacy import pseudonym

if TYPE_CHECKING:
    from stream.bench.runner import BenchOptions, Say


def is_tiny(bundle: Path) -> bool:
    """A bundle made by model.tiny (its base model says so)."""
    meta = json.loads((bundle / "bundle.json").read_text())
    return str(meta.get("base_model", "")).startswith("tiny")


class AtThreads:
    """The runtime called as the worker calls it on `threads` CPU threads (sliced batches)."""

    def __init__(self, runtime: Any, threads: int) -> None:
        from stream.threads import SlicedRunner

        self.runner, self.threads = SlicedRunner(runtime.predict, threads), threads

    def predict(self, windows: Sequence[list[Event]]) -> list[dict[str, float]]:
        return self.runner(windows, self.threads)


def at_threads(runtime: Any, threads: int) -> Any:
    """What the ceiling times at `threads`: on a CPU the worker's sliced call, else the runtime."""
    import torch

    torch.set_num_threads(threads)
    return AtThreads(runtime, threads) if runtime.device == "cpu" else runtime


@dataclass
class CeilingProbe:
    """The ceiling's runtime and batches, kept to measure the ceiling again after a run."""

    runtime: Any
    batches: list[list[list[Event]]]
    threads: int
    batch_size: int = 256
    window_size: int = 50

    def use_events(self, events: Sequence[Event]) -> None:
        """Measure from now on the windows that these events leave (the run's own mix)."""
        windows = prefix_windows(events, self.window_size)
        self.batches = sample_batches(windows, self.batch_size, batches=4)

    def measure(self, seconds: float, progress: bool) -> dict[str, Any]:
        """The ceiling at `threads` now (the host's speed drifts: docs/DESIGN.md says how much)."""
        import torch

        before = torch.get_num_threads()
        try:
            model = at_threads(self.runtime, self.threads)
            return measure_ceiling(model, self.batches, seconds, progress).as_dict()
        finally:
            torch.set_num_threads(before)


def pooled_rate(*measured: Mapping[str, Any]) -> float | None:
    """All predictions over all batch time of several ceiling measurements (their mean rate).

    >>> pooled_rate({"batches": 10, "batch_size": 100, "preds_per_s_mean": 200.0},
    ...             {"batches": 30, "batch_size": 100, "preds_per_s_mean": 300.0})
    266.667
    """
    done = [m["batches"] * m["batch_size"] for m in measured]
    seconds = sum(n / m["preds_per_s_mean"] for n, m in zip(done, measured, strict=True))
    return round(sum(done) / seconds, 3) if seconds > 0 else None


def phase_ceiling(
    opts: BenchOptions, bundle: Path, data: BenchData, say: Say
) -> tuple[dict[str, Any], dict[str, Any], CeilingProbe]:
    """Raw runtime throughput at the worker's batch size, on the data's own window mix."""
    import torch

    from model.runtime import Runtime

    if opts.torch_threads:
        torch.set_num_threads(opts.torch_threads)
    runtime = Runtime.load(bundle, device=opts.device)
    info = {
        "path": str(bundle),
        "version": runtime.version,
        "device": runtime.device,
        "base_model": runtime.meta.base_model,
        "max_len": runtime.max_len,
        "tiny": is_tiny(bundle),
    }
    windows = prefix_windows(data.events, opts.window_size)
    batches = sample_batches(windows, opts.max_batch, batches=4)
    threads = torch.get_num_threads()
    ceiling = measure_ceiling(
        at_threads(runtime, threads), batches, opts.ceiling_seconds, opts.progress
    ).as_dict()
    ceiling["torch_threads"] = threads
    say(
        f"  ceiling: {ceiling['preds_per_s']:,.0f} preds/s with {ceiling['torch_threads']} torch "
        f"threads, one batch of {ceiling['batch_size']}: {ceiling['batch_ms_p50']:.1f} ms (p50)"
    )
    rows = {threads: ceiling}
    if runtime.device == "cpu" and not opts.torch_threads:
        # The worker picks 1..cores threads per batch (stream.threads): measure each count.
        for count in thread_counts(os.cpu_count() or 1):
            if count not in rows:
                rows[count] = measure_ceiling(
                    at_threads(runtime, count), batches, opts.ceiling_seconds, opts.progress
                ).as_dict()
                rate = rows[count]["preds_per_s"]
                say(f"  ceiling with {count} torch threads: {rate:,.0f} preds/s")
        torch.set_num_threads(threads)
    ceiling["by_threads"] = [
        {"threads": n, **{k: rows[n][k] for k in THREAD_ROW}} for n in sorted(rows)
    ]
    best = max(rows, key=lambda n: rows[n]["preds_per_s"])
    ceiling["best_preds_per_s"], ceiling["best_torch_threads"] = rows[best]["preds_per_s"], best
    ceiling["best_preds_per_cpu_s"] = max(r["preds_per_cpu_s"] for r in rows.values())
    if 1 in rows and threads != 1:
        ceiling["preds_per_s_1_thread"] = rows[1]["preds_per_s"]
        ceiling["preds_per_cpu_s_1_thread"] = rows[1]["preds_per_cpu_s"]
    return info, ceiling, CeilingProbe(runtime, batches, best, opts.max_batch, opts.window_size)


def pair_with_probes(
    phase: dict[str, Any], probes: Sequence[Mapping[str, Any]], ceiling: dict[str, Any]
) -> None:
    """Compare each part of the max-rate run with the ceiling measured on both sides of it.

    The host's own speed drifts by tens of percent within seconds (a shared machine), so the
    pipeline is compared with the ceiling on its own windows, measured next to each part, as
    mean rates (stalls count, as they do in the pipeline), not with one median taken before.
    The paired ratio is the time the parts would take at their ceilings over the time they took.
    """
    ceiling["probes"] = list(probes)
    ceiling["around_optimized_preds_per_s"] = pooled_rate(*probes) if probes else None
    expected_s = taken_s = 0.0
    for k, part in enumerate(phase.get("parts") or []):
        if k + 1 >= len(probes) or not part["preds_per_s"]:
            continue
        rate = pooled_rate(probes[k], probes[k + 1])
        if not rate:
            continue
        part["ceiling_preds_per_s"] = rate
        part["over_ceiling"] = round(part["preds_per_s"] / rate, 3)
        expected_s += part["predictions"] / rate
        taken_s += part["predictions"] / part["preds_per_s"]
    ceiling["paired_over_ceiling"] = round(expected_s / taken_s, 3) if taken_s > 0 else None


THREAD_ROW = ("preds_per_s", "preds_per_cpu_s", "batch_ms_p50")


def thread_counts(cores: int) -> list[int]:
    """Thread counts the ceiling is measured at: each up to 4 cores, then powers of 2 and all.

    >>> thread_counts(2), thread_counts(12)
    ([1, 2], [1, 2, 3, 4, 8, 12])
    """
    small = list(range(1, min(cores, 4) + 1))
    return sorted({*small, *(2**k for k in range(3, cores.bit_length()) if 2**k < cores), cores})


class OtherCpu:
    """CPU that the broker and the bench itself (replay, reader) take from the worker's cores.

    Counted while running: `pause` stops the count (a ceiling probe between parts is the bench's
    own work, not the pipeline's), `resume` starts it again; `cores_busy` is over the time counted.
    """

    def __init__(self, broker: EmbeddedBroker) -> None:
        import psutil

        pid = broker.process.pid if broker.process is not None else None
        self.procs = {"broker": psutil.Process(pid) if pid else None, "bench": psutil.Process()}
        self.wall = 0.0
        self.used: dict[str, float | None] = dict.fromkeys(self.procs, 0.0)
        self.running = False
        self.resume()

    @staticmethod
    def _cpu(proc: Any) -> float | None:
        if proc is None:
            return None
        times = proc.cpu_times()
        return float(times.user + times.system)

    def resume(self) -> None:
        self.started = time.monotonic()
        self.cpu = {name: self._cpu(proc) for name, proc in self.procs.items()}
        self.running = True

    def pause(self) -> None:
        if not self.running:
            return
        self.running = False
        self.wall += time.monotonic() - self.started
        for name, proc in self.procs.items():
            before, now, used = self.cpu[name], self._cpu(proc), self.used[name]
            ok = before is not None and now is not None and used is not None
            self.used[name] = used + now - before if ok else None  # type: ignore[operator]

    def cores_busy(self) -> dict[str, float | None]:
        """{"broker_cores_busy": ..., "bench_cores_busy": ...} over the time counted."""
        self.pause()
        out: dict[str, float | None] = {}
        for name, used in self.used.items():
            busy = used / self.wall if used is not None and self.wall > 0 else None
            out[f"{name}_cores_busy"] = round(busy, 3) if busy is not None else None
        return out


def counted_apart(
    pause: Callable[[int], None], others: OtherCpu, parts: int
) -> Callable[[int], None]:
    """`pause`, with the broker's and the bench's CPU counted only from it to the next pause:
    over the parts, not the worker's start, the ceiling probes or the wait after the last part."""
    others.pause()

    def run(k: int) -> None:
        others.pause()
        pause(k)
        if k < parts:
            others.resume()

    return run


@dataclass
class Stage:
    """What every pipeline phase shares: options, broker, bundle, progress, collected latencies."""

    opts: BenchOptions
    broker: EmbeddedBroker
    bundle: Path
    say: Say
    latencies: dict[str, list[float]] = field(default_factory=dict)

    def run(self, spec: PhaseSpec) -> dict[str, Any]:
        """Run one pipeline phase, print its headline figures, keep latencies for the CDF."""
        opts = self.opts
        ticks, others = host_cpu_ticks(), OtherCpu(self.broker)
        if spec.pause is not None:
            spec = dataclasses.replace(spec, pause=counted_apart(spec.pause, others, spec.parts))
        obs = run_phase(
            spec, self.broker.bootstrap, self.bundle, opts.out, opts.partitions, opts.progress
        )
        phase = summarize(spec, obs)
        phase["host_steal_pct"] = steal_pct(ticks, host_cpu_ticks())
        phase.update(others.cores_busy())
        if spec.name != "memory":
            self.latencies[f"{spec.name} latency_ms"] = [p["latency_ms"] for p in obs.predictions]
        if spec.name == "fixed_load":
            key = BENCH_KEY.encode()
            raw_of = {pseudonym(key, e["user_id"]): e["user_id"] for e in spec.events}
            self.latencies["fixed_load produce->predicted_at"] = e2e_latencies(obs, raw_of)
        lat = phase["latency_ms"] or {}
        self.say(
            f"  {spec.name}: {phase['events_predicted']:,} events predicted, "
            f"{phase['events_per_s'] or 0:,.0f} ev/s, {phase['preds_per_s'] or 0:,.0f} preds/s, "
            f"p50/p99 {lat.get('p50')}/{lat.get('p99')} ms, every user predicted: "
            f"{phase['every_user_predicted']}, peak RSS {phase['peak_rss_mb']} MB, "
            f"host CPU steal {phase['host_steal_pct']}%"
        )
        return phase


def warmup_events(events: Sequence[Event], share: float = 0.05, most: int = 2_000) -> list[Event]:
    """The run's first events under users of their own, so the measured windows stay the same.

    >>> warmup_events([{"user_id": "a", "ts": 1}, {"user_id": "b", "ts": 2}], share=0.5)
    [{'user_id': 'warmup-a', 'ts': 1}]
    """
    n = min(most, int(len(events) * share))
    return [{**e, "user_id": f"warmup-{e['user_id']}"} for e in events[:n]]


def phase_optimized(
    stage: Stage,
    events: list[Event],
    probe: CeilingProbe | None = None,
    ceiling: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The worker as designed, replay at max rate in `opts.parts` parts; with a probe, the
    ceiling on the run's windows before, between and after them (the worker up and idle)."""
    opts, say = stage.opts, stage.say
    parts = f" in {opts.parts} parts" if opts.parts > 1 else ""
    warmup = warmup_events(events)
    say(
        f"[2/6] optimized pipeline: {len(events):,} events at max rate{parts}, after "
        f"{len(warmup):,} warm-up events of other users (not counted)"
    )
    probes: list[dict[str, Any]] = []

    def measure(k: int) -> None:
        assert probe is not None
        probes.append(probe.measure(opts.ceiling_seconds, opts.progress))
        where = "before part 1" if k == 0 else f"after part {k}"
        say(f"  ceiling {where}: {probes[-1]['preds_per_s_mean']:,.0f} preds/s (mean rate)")

    if probe is not None:
        probe.use_events(events)
    spec = PhaseSpec(
        "optimized",
        events,
        opts.worker_args(),
        profile=opts.profile,
        parts=opts.parts,
        pause=measure if probe is not None else None,
        warmup=warmup,
    )
    phase = stage.run(spec)
    if probe is not None and ceiling is not None:
        pair_with_probes(phase, probes, ceiling)
        say(
            f"  pipeline / ceiling next to each part: {ceiling['paired_over_ceiling']}; "
            f"parts {[part.get('over_ceiling') for part in phase.get('parts', [])]}; "
            f"idle worker during the probes: {phase.get('paused_cores_busy')} cores"
        )
        del probe.runtime
        gc.collect()
    return phase


def phase_intake(stage: Stage, outcomes: bool = True) -> dict[str, Any]:
    """The optimized worker at max rate on few, busy users: intake when coalescing is high."""
    opts = stage.opts
    users, n = opts.intake_users, opts.intake_events
    off = "" if outcomes else " (outcomes off)"
    stage.say(f"[3/6] high-coalescing intake{off}: {n:,} events from {users} users at max rate")
    events = hot_user_events(users, n)
    args = opts.worker_args() if outcomes else [*opts.worker_args(), "--no-outcomes"]
    name = "intake" if outcomes else "intake_no_outcomes"
    return stage.run(PhaseSpec(name, events, args, profile=opts.profile and outcomes))


def intake_processes(cores: int, partitions: int) -> int:
    """Worker processes for the N-processes intake option: one per core, at most one per partition.

    >>> intake_processes(2, 4), intake_processes(16, 4), intake_processes(1, 4)
    (2, 4, 1)
    """
    return max(1, min(cores, partitions))


def phase_intake_options(stage: Stage) -> dict[str, dict[str, Any]]:
    """The high-coalescing intake run again with each intake option that runs (issue 17, item 3).

    Faust's confluent driver is not one: it never gets partitions (DESIGN.md, "Intake options").
    """
    opts = stage.opts
    events = hot_user_events(opts.intake_users, opts.intake_events)
    cores = os.cpu_count() or 1
    found: dict[str, dict[str, Any]] = {}
    n = intake_processes(cores, opts.partitions)
    if n > 1:
        # each process gets its share of the cores, so N processes never oversubscribe the host
        threads = str(max(1, cores // n))
        stage.say(
            f"  intake option: {n} worker processes in one group, {threads} torch thread(s) each"
        )
        spec = PhaseSpec(
            "intake_processes",
            events,
            opts.worker_args(),
            workers=n,
            env={"BSTREAM_TORCH_THREADS": threads},
        )
        found["intake_processes"] = stage.run(spec)
    return found


def phase_limit(stage: Stage, events: list[Event]) -> dict[str, Any]:
    """The plain confluent-kafka loop (no Faust) on the intake and the max-rate runs' events."""
    from stream.bench.limit import measure_limit

    opts = stage.opts
    sets = {
        "intake": hot_user_events(opts.intake_users, opts.intake_events),
        "optimized": events,
    }
    found: dict[str, Any] = {}
    for name, chosen in sets.items():
        stage.say(f"  intake limit (plain confluent-kafka loop, no Faust): {name} events")
        limit = measure_limit(
            stage.broker.bootstrap,
            opts.partitions,
            chosen,
            key=BENCH_KEY,
            window_size=opts.window_size,
            max_batch=opts.max_batch,
            progress=opts.progress,
        )
        found[name] = limit.as_dict()
        stage.say(
            f"  limit on the {name} events: {limit.events_per_s or 0:,.0f} ev/s, "
            f"{limit.events_per_cpu_s or 0:,.0f} ev/CPU-s"
        )
    return found


@contextlib.contextmanager
def worker_threads(threads: int | None) -> Iterator[None]:
    """Bench workers started inside pin torch to `threads` (BSTREAM_TORCH_THREADS)."""
    saved = os.environ.get("BSTREAM_TORCH_THREADS")
    if threads is not None:
        os.environ["BSTREAM_TORCH_THREADS"] = str(threads)
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop("BSTREAM_TORCH_THREADS", None)
        else:
            os.environ["BSTREAM_TORCH_THREADS"] = saved


def phase_thread_sweep(
    stage: Stage, events: list[Event], best_rate: float, load_rate: float | None = None
) -> dict[str, Any]:
    """The optimized run again with the worker pinned to each thread count (the rule's evidence).

    With `load_rate`, each count also runs the fixed-load phase: p99 of the old rule (pinned to
    cores - 1) beside the adaptive worker's, in the same run.
    """
    opts = stage.opts
    n = max(1, min(len(events), int(best_rate * opts.sweep_seconds)))
    found: dict[str, Any] = {}
    for count in thread_counts(os.cpu_count() or 1):
        stage.say(f"  thread sweep: worker pinned to {count} torch threads, {n:,} events")
        with worker_threads(count):
            found[str(count)] = stage.run(
                PhaseSpec(f"threads_{count}", events[:n], opts.worker_args())
            )
            if load_rate:
                k = max(1, min(len(events), int(load_rate * opts.load_seconds)))
                stage.say(f"  thread sweep: {count} torch threads at {load_rate:,.0f} ev/s")
                spec = PhaseSpec(f"threads_{count}_fixed_load", events[:k], opts.worker_args(),
                                 rate=load_rate)  # fmt: skip
                found[str(count)]["fixed_load"] = stage.run(spec)
    return found


def fixed_rate(opts: BenchOptions, max_rate: float) -> float:
    """The fixed-load phase's offered rate: --load-rate, else a fraction of the max rate."""
    return opts.load_rate or opts.load_fraction * max_rate


def phase_naive(stage: Stage, events: list[Event]) -> dict[str, Any]:
    """`--naive` worker on a prefix of the same events (it is slow), with a time cap."""
    opts = stage.opts
    k = min(opts.naive_events, len(events))
    cap = f"{opts.naive_seconds:.0f} s"
    stage.say(f"[4/6] naive pipeline (--naive): first {k:,} events, capped at {cap}")
    opts.notes.append(
        f"naive ran on the first {k:,} events (capped at {cap}); the ratio compares rates"
    )
    args = [*opts.worker_args(), "--naive"]
    return stage.run(PhaseSpec("naive", events[:k], args, time_cap_s=opts.naive_seconds))


def phase_fixed_load(stage: Stage, events: list[Event], max_rate: float) -> dict[str, Any]:
    """The optimized worker at `load_fraction` of its measured max rate."""
    opts = stage.opts
    rate = fixed_rate(opts, max_rate)  # --load-rate: like for like across runs
    n = max(1, min(len(events), int(rate * opts.load_seconds)))
    share = rate / max_rate if max_rate else 0.0
    stage.say(f"[5/6] fixed load: {rate:,.0f} ev/s ({share:.0%} of max), {n:,} events")
    phase = stage.run(PhaseSpec("fixed_load", events[:n], opts.worker_args(), rate=rate))
    achieved = phase["events_per_s"] or 0.0
    if achieved < 0.9 * rate:
        opts.notes.append(
            f"the worker did not keep up with the fixed load ({achieved:,.0f} of {rate:,.0f} "
            "ev/s offered): its latency includes queueing"
        )
    return phase


METHOD = (
    "rss_bytes_per_window = (worker RSS once every user was predicted - RSS when ready) / "
    "bstream_active_windows; store = tracemalloc of the memory:// table contents (pseudonym key "
    "-> encoded window) built with the worker's own window functions"
)


def phase_memory(stage: Stage) -> dict[str, Any]:
    """RSS growth of a worker holding `memory_users` windows, and the store measured directly."""
    opts = stage.opts
    users, per_user = opts.memory_users, opts.memory_events_per_user
    stage.say(f"[6/6] memory: {users:,} users x {per_user} events through the worker")
    events = memory_events(users, per_user)
    phase = stage.run(PhaseSpec("memory", events, opts.worker_args()))
    full = memory_events(min(users, 10_000), opts.window_size)
    return {
        "phase": phase,
        "users": users,
        "events_per_user": per_user,
        "active_windows": phase["active_windows"],
        "peak_rss_mb": phase["peak_rss_mb"],
        "rss_bytes_per_window": rss_bytes_per_window(phase),
        "store": store_bytes_per_window(events, opts.window_size, BENCH_KEY.encode()),
        "store_full_window": store_bytes_per_window(full, opts.window_size, BENCH_KEY.encode()),
        "method": METHOD,
    }
