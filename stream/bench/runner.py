"""`bstream bench` on one broker: ceiling, optimized, intake + limit, naive, load, memory."""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from stream.bench import report as rep
from stream.bench.data import load_data, sized_events
from stream.bench.phases import (
    Stage,
    fixed_rate,
    phase_ceiling,
    phase_fixed_load,
    phase_intake,
    phase_intake_options,
    phase_limit,
    phase_memory,
    phase_naive,
    phase_optimized,
    phase_thread_sweep,
)
from stream.kafka.broker import EmbeddedBroker

Say = Callable[[str], None]
FULL_EVENTS = 110_300  # the whole Taobao slice


@dataclass
class BenchOptions:
    """Everything `bstream bench` was asked to do (CLI defaults are the full run's)."""

    out: Path
    json_path: Path | None = None
    bundle: Path | None = None
    device: str = "auto"
    data: Path | None = None
    fmt: str = "taobao"
    events: int | None = None  # None: sized to ~model_seconds of model time (all, for tiny)
    model_seconds: float = 120.0
    quick: bool = False
    max_batch: int = 256
    max_delay_ms: int = 50
    window_size: int = 50
    partitions: int = 4
    ceiling_seconds: float = 10.0
    parts: int = 3  # the max-rate run in parts, the ceiling measured next to each
    naive_events: int = 2_000
    naive_seconds: float = 120.0
    load_fraction: float = 0.5
    load_rate: float | None = None  # events/s; overrides load_fraction
    load_seconds: float = 20.0
    memory_users: int = 100_000
    memory_events_per_user: int = 3
    intake_users: int = 32
    intake_events: int = 60_000
    skip_intake: bool = False
    skip_naive: bool = False
    skip_latency: bool = False
    skip_memory: bool = False
    profile: bool = False  # py-spy the optimized worker
    torch_threads: int | None = None  # None: ceiling at torch's default; workers adapt
    thread_sweep: bool = False  # also run the optimized phase with each fixed thread count
    sweep_seconds: float = 30.0  # model time per sweep run (at the best ceiling)
    progress: bool = True
    notes: list[str] = field(default_factory=list)

    def worker_args(self) -> list[str]:
        return [
            "--device",
            self.device,
            "--max-batch",
            str(self.max_batch),
            "--max-delay-ms",
            str(self.max_delay_ms),
            "--window-size",
            str(self.window_size),
        ]


def timed_say(started: float) -> Say:
    """Progress lines on stderr, prefixed with the elapsed time."""

    def say(line: str) -> None:
        print(f"[{time.monotonic() - started:6.1f}s] {line}", file=sys.stderr, flush=True)

    return say


def find_bundle(repo: Path) -> Path | None:
    """The newest bundle under .bstream/bundles (the demo's or a trained one), if any."""
    found = sorted(
        (repo / ".bstream" / "bundles").glob("*/bundle.json"), key=lambda p: p.stat().st_mtime
    )
    return found[-1].parent if found else None


def resolve_bundle(opts: BenchOptions, repo: Path, say: Say) -> Path:
    """The given bundle; else (not quick) the newest local one; else the cached tiny bundle."""
    if opts.bundle is not None:
        return opts.bundle
    local = None if opts.quick else find_bundle(repo)
    return (
        local
        if local is not None
        else tiny_bundle(repo / ".bstream" / "bench" / "tiny-bundle", say)
    )


def tiny_bundle(target: Path, say: Say) -> Path:
    """A tiny real bundle at `target`, built (again) unless a valid one is there."""
    from model.bundle import BundleError, validate_bundle
    from model.tiny import build_tiny_bundle

    try:
        validate_bundle(target)
        return target
    except BundleError:
        say(f"building the tiny bundle in {target} ...")
        shutil.rmtree(target, ignore_errors=True)
        return build_tiny_bundle(target)


def memory_stage(stage: Stage, bundle_info: dict[str, Any], repo: Path) -> Stage:
    """The memory phase's stage, always on the tiny bundle."""
    # Windows don't depend on the model, and 100k predictions of a real one take an hour on a CPU.
    if bundle_info["tiny"]:
        return stage
    tiny = tiny_bundle(repo / ".bstream" / "bench" / "tiny-bundle", stage.say)
    stage.opts.notes.append(
        "the memory phase ran the tiny bundle (window memory does not depend on the model; "
        "the real model's worker RSS is optimized.peak_rss_mb)"
    )
    return Stage(stage.opts, stage.broker, tiny, stage.say, stage.latencies)


def run_bench(opts: BenchOptions, repo: Path, say: Say | None = None) -> dict[str, Any]:
    """Run every phase; write JSON, Markdown and the CDF PNG into opts.out; return the report."""
    started, started_at = time.monotonic(), datetime.now(UTC).isoformat(timespec="seconds")
    say = say or timed_say(started)
    if opts.torch_threads:  # the ceiling and every bench worker (BSTREAM_TORCH_THREADS) use it
        os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = str(opts.torch_threads)
        os.environ["BSTREAM_TORCH_THREADS"] = str(opts.torch_threads)
    opts.out.mkdir(parents=True, exist_ok=True)
    machine = rep.machine_info()
    cores, load = machine["logical_cores"], machine["load_avg_1m"]
    say(f"bstream bench: {machine['cpu']}, {cores} cores, load average {load}")
    bundle = resolve_bundle(opts, repo, say)
    data = load_data(opts.data, opts.fmt, opts.events or FULL_EVENTS)
    if opts.data is None:
        opts.notes.append("the Taobao slice was not found: the bench used simulated events")
    if not machine["gpu"]:
        opts.notes.append("no GPU on this machine: CPU figures only (no bf16 run)")
    say(f"[1/6] model ceiling: bundle {bundle}, data {data.source}")
    ticks = rep.host_cpu_ticks()
    bundle_info, ceiling, probe = phase_ceiling(opts, bundle, data, say)
    ceiling["host_steal_pct"] = rep.steal_pct(ticks, rep.host_cpu_ticks())
    if opts.events is None:
        n = sized_events(len(data.events), ceiling["best_preds_per_s"], opts.model_seconds)
        if n < len(data.events):
            data = data.head(n)
            opts.notes.append(
                f"the max-rate run was sized to ~{opts.model_seconds:.0f} s of model time: "
                f"{n:,} events (pass --events to change)"
            )
    phases: dict[str, dict[str, Any]] = {}
    memory: dict[str, Any] = {}
    limit: dict[str, Any] = {}
    sweep: dict[str, Any] = {}
    with EmbeddedBroker(log_path=opts.out / "broker.log") as broker:
        stage = Stage(opts, broker, bundle, say)
        phases["optimized"] = opt = phase_optimized(stage, data.events, probe, ceiling)
        max_rate = opt["events_per_s"] or opt["end_to_end_events_per_s"]
        if opts.thread_sweep:
            rate = None if opts.skip_latency else fixed_rate(opts, max_rate)
            sweep = phase_thread_sweep(stage, data.events, ceiling["best_preds_per_s"], rate)
        if not opts.skip_intake:
            phases["intake"] = phase_intake(stage)
            limit = phase_limit(stage, data.events)
            phases["intake_no_outcomes"] = phase_intake(stage, outcomes=False)  # cost of outcomes
            phases.update(phase_intake_options(stage))
        if not opts.skip_naive:
            phases["naive"] = phase_naive(stage, data.events)
        if not opts.skip_latency:
            phases["fixed_load"] = phase_fixed_load(stage, data.events, max_rate)
        if not opts.skip_memory:
            memory = phase_memory(memory_stage(stage, bundle_info, repo))
            phases["memory"] = memory.pop("phase")
    report = rep.assemble(
        opts, bundle_info, data, ceiling, phases, memory, machine, started_at, limit
    )
    if sweep:
        report["thread_sweep"] = rep.sweep_table(ceiling, sweep)
    report["duration_s"] = round(time.monotonic() - started, 1)
    report["machine"]["load_avg_1m_end"] = round(os.getloadavg()[0], 2)
    write_outputs(report, stage.latencies, opts)
    return report


def write_outputs(
    report: dict[str, Any], latencies: dict[str, list[float]], opts: BenchOptions
) -> None:
    """bench.json (or --json), bench.md next to it, latency_cdf.png next to it."""
    json_path = opts.json_path or opts.out / "bench.json"
    json_path.parent.mkdir(parents=True, exist_ok=True)
    md_path, png_path = json_path.with_suffix(".md"), json_path.with_name("latency_cdf.png")
    report["files"] = {"json": str(json_path), "markdown": str(md_path), "cdf_png": str(png_path)}
    rep.plot_cdf(latencies, report["latency_ms"]["target_p99"], png_path)
    md_path.write_text(rep.markdown(report))
    json_path.write_text(json.dumps(report, indent=2, default=str) + "\n")
