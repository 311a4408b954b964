"""The bench phases in order, on one broker and one data set: ceiling, optimized, naive, load, memory."""

from __future__ import annotations

import gc
import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from stream.bench import report as rep
from stream.bench.ceiling import measure_ceiling
from stream.bench.data import BenchData, load_data, memory_events, prefix_windows, sample_batches
from stream.bench.memory import rss_bytes_per_window, store_bytes_per_window
from stream.bench.pipeline import PhaseSpec, e2e_latencies, run_phase, summarize
from stream.bench.workerproc import BENCH_KEY
from stream.broker import EmbeddedBroker

Say = Callable[[str], None]


@dataclass
class BenchOptions:
    """Everything `bstream bench` was asked to do (CLI defaults are the full run's)."""

    out: Path
    json_path: Path | None = None
    bundle: Path | None = None
    device: str = "auto"
    data: Path | None = None
    fmt: str = "taobao"
    events: int = 110_300
    quick: bool = False
    max_batch: int = 256
    max_delay_ms: int = 200
    window_size: int = 50
    partitions: int = 4
    ceiling_seconds: float = 15.0
    naive_events: int = 2_000
    naive_seconds: float = 120.0
    load_fraction: float = 0.5
    load_seconds: float = 20.0
    memory_users: int = 100_000
    memory_events_per_user: int = 3
    skip_naive: bool = False
    skip_latency: bool = False
    skip_memory: bool = False
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


def stderr_say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def is_tiny(bundle: Path) -> bool:
    """A bundle made by model.tiny (its base model says so)."""
    meta = json.loads((bundle / "bundle.json").read_text())
    return str(meta.get("base_model", "")).startswith("tiny")


def find_bundle(repo: Path) -> Path | None:
    """The newest bundle under .bstream/bundles (the demo's or a trained one), if any."""
    found = sorted(
        (repo / ".bstream" / "bundles").glob("*/bundle.json"), key=lambda p: p.stat().st_mtime
    )
    return found[-1].parent if found else None


def resolve_bundle(opts: BenchOptions, repo: Path, say: Say) -> Path:
    """The given bundle; else (not quick) the newest local one; else a freshly built tiny bundle."""
    if opts.bundle is not None:
        return opts.bundle
    local = None if opts.quick else find_bundle(repo)
    if local is not None:
        return local
    from model.tiny import build_tiny_bundle

    target = opts.out / "tiny-bundle"
    if not (target / "bundle.json").is_file():
        say(f"building the tiny bundle in {target} ...")
        build_tiny_bundle(target)
    return target


def phase_ceiling(
    opts: BenchOptions, bundle: Path, data: BenchData, say: Say
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Raw runtime throughput at the worker's batch size, on the data's own window mix."""
    from model.runtime import Runtime

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
    batches = sample_batches(windows, opts.max_batch, batches=16)
    ceiling = measure_ceiling(runtime, batches, opts.ceiling_seconds, opts.progress)
    say(
        f"  ceiling: {ceiling.preds_per_s:,.0f} preds/s, one batch of {ceiling.batch_size}: "
        f"{ceiling.batch_ms_p50:.1f} ms (p50)"
    )
    del runtime
    gc.collect()
    return info, ceiling.as_dict()


def run_pipeline(
    spec: PhaseSpec,
    opts: BenchOptions,
    broker: EmbeddedBroker,
    bundle: Path,
    say: Say,
    latencies: dict[str, list[float]],
) -> dict[str, Any]:
    obs = run_phase(spec, broker.bootstrap, bundle, opts.out, opts.partitions, opts.progress)
    phase = summarize(spec, obs)
    latencies[f"{spec.name} latency_ms"] = [p["latency_ms"] for p in obs.predictions]
    if spec.name == "fixed_load":
        from stream.privacy import pseudonym

        raw_of = {pseudonym(BENCH_KEY.encode(), e["user_id"]): e["user_id"] for e in spec.events}
        latencies["fixed_load produce->predicted_at"] = e2e_latencies(obs, raw_of)
    lat = phase["latency_ms"] or {}
    say(
        f"  {spec.name}: {phase['events_consumed']:,} events, {phase['events_per_s'] or 0:,.0f} ev/s, "
        f"{phase['preds_per_s'] or 0:,.0f} preds/s, p50/p99 {lat.get('p50')}/{lat.get('p99')} ms, "
        f"every user predicted: {phase['every_user_predicted']}, peak RSS {phase['peak_rss_mb']} MB"
    )
    return phase


def run_bench(opts: BenchOptions, repo: Path, say: Say = stderr_say) -> dict[str, Any]:
    """Run every phase; write JSON, Markdown and the CDF PNG into opts.out; return the report."""
    started, started_at = time.monotonic(), datetime.now(UTC).isoformat(timespec="seconds")
    opts.out.mkdir(parents=True, exist_ok=True)
    machine = rep.machine_info()
    say(
        f"bstream bench: {machine['cpu']}, {machine['logical_cores']} cores, load average {machine['load_avg_1m']}"
    )
    bundle = resolve_bundle(opts, repo, say)
    data = load_data(opts.data, opts.fmt, opts.events)
    if opts.data is None:
        opts.notes.append("the Taobao slice was not found: the bench used simulated events")
    say(f"[1/5] model ceiling: bundle {bundle}, data {data.source}")
    bundle_info, ceiling = phase_ceiling(opts, bundle, data, say)
    latencies: dict[str, list[float]] = {}
    wargs = opts.worker_args()
    phases: dict[str, dict[str, Any]] = {}
    with EmbeddedBroker(log_path=opts.out / "broker.log") as broker:
        say(f"[2/5] optimized pipeline: {len(data.events):,} events at max rate")
        phases["optimized"] = run_pipeline(
            PhaseSpec("optimized", data.events, wargs), opts, broker, bundle, say, latencies
        )
        if not opts.skip_naive:
            k = min(opts.naive_events, len(data.events))
            say(
                f"[3/5] naive pipeline (--naive): first {k:,} events, capped at {opts.naive_seconds:.0f} s"
            )
            spec = PhaseSpec(
                "naive", data.events[:k], [*wargs, "--naive"], time_cap_s=opts.naive_seconds
            )
            phases["naive"] = run_pipeline(spec, opts, broker, bundle, say, latencies)
            opts.notes.append(
                f"naive ran on the first {k:,} events (capped at {opts.naive_seconds:.0f} s); "
                "the ratio compares rates"
            )
        if not opts.skip_latency:
            rate = opts.load_fraction * (
                phases["optimized"]["events_per_s"]
                or phases["optimized"]["end_to_end_events_per_s"]
            )
            n = max(1, min(len(data.events), int(rate * opts.load_seconds)))
            say(
                f"[4/5] fixed load: {rate:,.0f} ev/s ({opts.load_fraction:.0%} of max) for {n:,} events"
            )
            spec = PhaseSpec("fixed_load", data.events[:n], wargs, rate=rate)
            phases["fixed_load"] = run_pipeline(spec, opts, broker, bundle, say, latencies)
        memory: dict[str, Any] = {}
        if not opts.skip_memory:
            memory = phase_memory(opts, broker, bundle, wargs, say, latencies)
            phases["memory"] = memory.pop("phase")
    report = assemble(opts, bundle_info, data, ceiling, phases, memory, machine, started_at)
    report["duration_s"] = round(time.monotonic() - started, 1)
    report["machine"]["load_avg_1m_end"] = round(os.getloadavg()[0], 2)
    write_outputs(report, latencies, opts)
    return report


def phase_memory(
    opts: BenchOptions,
    broker: EmbeddedBroker,
    bundle: Path,
    wargs: list[str],
    say: Say,
    latencies: dict[str, list[float]],
) -> dict[str, Any]:
    """RSS growth of a worker holding `memory_users` windows, and the store measured directly."""
    users, per_user = opts.memory_users, opts.memory_events_per_user
    say(f"[5/5] memory: {users:,} users x {per_user} events through the worker")
    events = memory_events(users, per_user)
    phase = run_pipeline(PhaseSpec("memory", events, wargs), opts, broker, bundle, say, latencies)
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
        "method": "rss_bytes_per_window = (worker RSS after all users were predicted - RSS when ready) "
        "/ bstream_active_windows; store = tracemalloc of the memory:// table contents "
        "(pseudonym key -> encoded window) built with the worker's own window functions",
    }


def assemble(
    opts: BenchOptions,
    bundle: dict[str, Any],
    data: BenchData,
    ceiling: dict[str, Any],
    phases: dict[str, dict[str, Any]],
    memory: dict[str, Any],
    machine: dict[str, Any],
    started_at: str,
) -> dict[str, Any]:
    """The report dict (the JSON file's content)."""
    opt, naive, fixed = phases["optimized"], phases.get("naive", {}), phases.get("fixed_load", {})
    target_p99 = opts.max_delay_ms + 2 * ceiling["batch_ms_p50"]
    fixed_lat = fixed.get("latency_ms") or {}
    report: dict[str, Any] = {
        "bench_format": 1,
        "started_at": started_at,
        "quick": opts.quick,
        "bundle": bundle,
        "data": {"source": data.source, "events": len(data.events), "users": data.users},
        "settings": {
            "max_batch": opts.max_batch,
            "max_delay_ms": opts.max_delay_ms,
            "window_size": opts.window_size,
            "partitions": opts.partitions,
            "device": opts.device,
        },
        "model_ceiling_preds_per_s": ceiling["preds_per_s"],
        "ceiling": ceiling,
        "optimized": opt,
        "naive": naive,
        "fixed_load": fixed,
        "memory": memory,
        "latency_ms": {
            **fixed_lat,
            "target_p99": round(target_p99, 3),
            "max_delay_ms": opts.max_delay_ms,
            "single_batch_ms": ceiling["batch_ms_p50"],
            "e2e": fixed.get("e2e_latency_ms"),
            "offered_rate": fixed.get("offered_rate"),
        },
        "ratios": {
            "optimized_over_naive_events": rep.ratio(
                opt["events_per_s"], naive.get("events_per_s")
            ),
            "optimized_over_naive_preds": rep.ratio(opt["preds_per_s"], naive.get("preds_per_s")),
            "pipeline_over_ceiling": rep.ratio(opt["preds_per_s"], ceiling["preds_per_s"]),
        },
        "peak_rss_mb": max(p["peak_rss_mb"] for p in phases.values()),
        "machine": machine,
        "versions": rep.versions(),
        "notes": opts.notes,
    }
    report["targets"] = rep.targets(report)
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
