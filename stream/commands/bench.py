"""`bstream bench`: side-by-side benchmark (model ceiling, optimized vs naive, latency, memory)."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import Any

import click

from stream.commands import checks
from stream.commands.common import env_default, load_settings

QUICK: dict[str, Any] = {
    "events": 3_000,
    "ceiling_seconds": 2.0,
    "parts": 2,
    "naive_events": 300,
    "naive_seconds": 30.0,
    "load_seconds": 4.0,
    "memory_users": 3_000,
    "intake_events": 3_000,
    "sweep_seconds": 5.0,
}


@click.command(
    help="Benchmark in one run, on the same data: model ceiling, optimized pipeline, naive "
    "pipeline (--naive worker), latency at a fixed load and memory per window. Writes JSON, a "
    "Markdown table and a latency CDF PNG. Figures are reported, never asserted.",
)
@click.option(
    "--bundle",
    type=click.Path(file_okay=False, path_type=Path),
    help="Model bundle  [default: $BSTREAM_MODEL, newest .bstream/bundles/*, or a tiny one]",
)
@click.option(
    "--device",
    type=click.Choice(["auto", "cpu", "cuda"]),
    help=f"Device  {env_default('device')}",
)
@click.option(
    "--data",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Event file  [default: the shared Taobao 110k slice if present, else simulated]",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["jsonl", "taobao", "rees46"]),
    default="jsonl",
    show_default=True,
    help="Format of --data (the default data is the Taobao slice, read as taobao).",
)
@click.option(
    "--events",
    type=click.IntRange(min=10),
    help="Max-rate run size  [default: all, or ~120 s of model time; --quick: 3000]",
)
@click.option(
    "--quick", is_flag=True, help="Smoke run (< 3 min on 2 cores): tiny bundle, short phases."
)
@click.option(
    "--json",
    "json_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Report JSON path; Markdown and PNG go next to it  [default: OUT/bench.json]",
)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder for worker and broker logs  [default: the --json folder, or bench-report]",
)
@click.option(
    "--naive-events",
    type=click.IntRange(min=1),
    help="Naive run size  [default: 2000; --quick: 300]",
)
@click.option(
    "--naive-seconds",
    type=click.FloatRange(min=1),
    help="Naive run time cap (s)  [default: 120; --quick: 30]",
)
@click.option(
    "--load-fraction",
    type=click.FloatRange(0, 1, min_open=True),
    default=0.5,
    show_default=True,
    help="Fixed load as a fraction of the measured max events/s.",
)
@click.option(
    "--load-rate",
    type=click.FloatRange(min=0, min_open=True),
    help="Fixed load in events/s, instead of --load-fraction (compare runs at one rate).",
)
@click.option(
    "--load-seconds",
    type=click.FloatRange(min=1),
    help="Fixed-load run length (s)  [default: 20; --quick: 4]",
)
@click.option(
    "--memory-users",
    type=click.IntRange(min=1),
    help="Users for memory  [default: 100000; --quick: 3000]",
)
@click.option(
    "--max-batch",
    type=click.IntRange(min=1),
    help=f"Worker max batch  {env_default('max_batch')}",
)
@click.option(
    "--max-delay-ms",
    type=click.IntRange(min=1),
    help=f"Worker max delay  {env_default('max_delay_ms')}",
)
@click.option(
    "--torch-threads",
    type=click.IntRange(min=1),
    help="torch threads for the ceiling and the workers  [default: ceiling 1..cores; adaptive]",
)
@click.option(
    "--profile",
    is_flag=True,
    help="py-spy the optimized and intake workers (needs py-spy).",
)
@click.option("--skip-naive", is_flag=True, help="Skip the naive run.")
@click.option("--skip-latency", is_flag=True, help="Skip the fixed-load latency run.")
@click.option("--skip-memory", is_flag=True, help="Skip the memory run.")
@click.option(
    "--intake-users",
    type=click.IntRange(min=1),
    default=32,
    show_default=True,
    help="Users in the high-coalescing intake run.",
)
@click.option(
    "--intake-events",
    type=click.IntRange(min=1),
    help="Intake run size  [default: 60000; --quick: 3000]",
)
@click.option("--skip-intake", is_flag=True, help="Skip the high-coalescing intake run.")
@click.option(
    "--parts",
    type=click.IntRange(min=1, max=20),
    help="The max-rate run in this many parts, the model ceiling measured before, between and "
    "after them (pipeline / ceiling pairs each part with the ceiling next to it)  "
    "[default: 3; --quick: 2]",
)
@click.option(
    "--thread-sweep",
    is_flag=True,
    help="Also run the optimized pipeline pinned to each torch thread count (~30 s of model each).",
)
@click.option(
    "--progress/--no-progress", default=None, help="Progress bars  [default: on a terminal]"
)
def bench(
    bundle: Path | None,
    device: str | None,
    data: Path | None,
    fmt: str,
    events: int | None,
    quick: bool,
    json_path: Path | None,
    out: Path | None,
    naive_events: int | None,
    naive_seconds: float | None,
    load_fraction: float,
    load_rate: float | None,
    load_seconds: float | None,
    memory_users: int | None,
    max_batch: int | None,
    max_delay_ms: int | None,
    torch_threads: int | None,
    profile: bool,
    skip_naive: bool,
    skip_latency: bool,
    skip_memory: bool,
    intake_users: int,
    intake_events: int | None,
    skip_intake: bool,
    parts: int | None,
    thread_sweep: bool,
    progress: bool | None,
) -> None:
    settings = load_settings(device=device, max_batch=max_batch, max_delay_ms=max_delay_ms)
    if data is not None and not data.is_file():
        raise click.ClickException(f"no such file: {data}")
    if data is not None:
        checks.format_matches(data, fmt)
    bundle = bundle or (None if quick else settings.model)  # --quick: the tiny bundle
    if bundle is not None and not (bundle / "bundle.json").is_file():
        raise click.ClickException(f"not a model bundle (no bundle.json): {bundle}")
    if json_path is not None:
        checks.out_file(json_path, "--json")
    if out is not None:
        checks.out_dir(out, "--out")

    from stream.bench.data import default_data_path
    from stream.bench.runner import BenchOptions, run_bench
    from stream.bench.workerproc import BenchError
    from stream.kafka import KafkaUnavailable
    from stream.kafka.broker import BrokerError

    repo = Path.cwd()
    if profile:
        from stream.bench.profile import py_spy

        if py_spy() is None:
            raise click.ClickException("--profile needs py-spy: .venv/bin/pip install py-spy")
    opts = BenchOptions(
        out=out or (json_path.parent if json_path else Path("bench-report")),
        json_path=json_path,
        bundle=bundle,
        device=settings.device,
        data=data or default_data_path(repo),
        fmt=fmt if data else "taobao",
        quick=quick,
        max_batch=settings.max_batch,
        max_delay_ms=settings.max_delay_ms,
        window_size=settings.window_size,
        partitions=settings.partitions,
        load_fraction=load_fraction,
        load_rate=load_rate,
        torch_threads=torch_threads,
        profile=profile,
        skip_naive=skip_naive,
        skip_latency=skip_latency,
        skip_memory=skip_memory,
        intake_users=intake_users,
        skip_intake=skip_intake,
        thread_sweep=thread_sweep,
        progress=progress if progress is not None else sys.stderr.isatty(),
    )
    given = {
        "events": events,
        "naive_events": naive_events,
        "naive_seconds": naive_seconds,
        "load_seconds": load_seconds,
        "memory_users": memory_users,
        "intake_events": intake_events,
        "parts": parts,
    }
    sizes = {**(QUICK if quick else {}), **{k: v for k, v in given.items() if v is not None}}
    opts = dataclasses.replace(opts, **sizes)
    try:
        report = run_bench(opts, repo)
    except (BenchError, BrokerError, KafkaUnavailable) as exc:
        raise click.ClickException(str(exc).splitlines()[0]) from None
    files = report["files"]
    click.echo(Path(files["markdown"]).read_text())
    click.echo(f"wrote {files['json']}, {files['markdown']}, {files['cdf_png']}")
