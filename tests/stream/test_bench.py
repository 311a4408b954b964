"""`bstream bench`: a --quick run writes a complete, well-formed report (never checks speed)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from stream.bench.data import memory_events, newest_by_user, prefix_windows
from stream.bench.phases import intake_processes, pair_with_probes, thread_counts
from stream.bench.pipeline import reflected_events, split_parts
from stream.bench.profile import loop_breakdown, top_functions
from stream.bench.report import host_cpu_ticks, markdown, ratio, steal_pct, sweep_table
from stream.bench.workerproc import Sample, combined, parse_metrics, settled

BSTREAM = str(Path(sys.executable).parent / "bstream")
REQUIRED_NUMBERS = (
    "model_ceiling_preds_per_s",
    "optimized.events_per_s",
    "optimized.preds_per_s",
    "naive.events_per_s",
    "fixed_load.events_per_s",
    "latency_ms.p50",
    "latency_ms.p95",
    "latency_ms.p99",
    "latency_ms.target_p99",
    "ratios.optimized_over_naive_events",
    "ratios.pipeline_over_ceiling",
    "peak_rss_mb",
    "memory.rss_bytes_per_window",
    "memory.store.bytes_per_window",
    "machine.logical_cores",
    "machine.torch_threads",
    "limit.intake.events_per_s",
    "limit.optimized.events_per_s",
    "ratios.intake_over_limit",
    "optimized.inference_threads_mean",
    "optimized.model_busy_share",
    "optimized.preds_per_model_s",
    "ceiling.around_optimized_preds_per_s",
    "ratios.pipeline_over_ceiling_around",
    "ratios.pipeline_over_ceiling_paired",
)


def dig(report: dict[str, Any], dotted: str) -> Any:
    value: Any = report
    for part in dotted.split("."):
        value = value[part]
    return value


@pytest.fixture(scope="module")
def quick_run(tiny_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """One `bstream bench --quick` on the tiny bundle; returns the JSON path and stdout."""
    out = tmp_path_factory.mktemp("bench")
    json_path = out / "report" / "bench.json"
    cmd = [BSTREAM, "bench", "--quick", "--bundle", str(tiny_bundle), "--json", str(json_path)]
    cmd += ["--no-progress", "--events", "1500", "--naive-events", "150", "--memory-users", "1500"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=480)  # < pytest-timeout
    assert done.returncode == 0, done.stderr[-3000:]
    return json_path, done.stdout


@pytest.mark.integration
def test_quick_report_has_every_figure(quick_run: tuple[Path, str]) -> None:
    json_path, _ = quick_run

    report = json.loads(json_path.read_text())

    missing = [k for k in REQUIRED_NUMBERS if not isinstance(dig(report, k), int | float)]
    assert missing == []
    assert all(math.isfinite(dig(report, k)) and dig(report, k) > 0 for k in REQUIRED_NUMBERS)
    assert report["optimized"]["every_user_predicted"] is True
    cores = report["machine"]["logical_cores"]
    assert [r["threads"] for r in report["ceiling"]["by_threads"]] == thread_counts(cores)
    assert report["limit"]["intake"]["events"] == report["intake"]["events"]
    assert report["optimized"]["events_predicted"] == report["data"]["events"]
    parts = report["optimized"]["parts"]  # --quick: 2 parts, a ceiling probe on each side
    assert len(parts) == 2 and len(report["ceiling"]["probes"]) == 3
    assert sum(p["predictions"] for p in parts) == report["optimized"]["predictions"]
    assert all(p["over_ceiling"] > 0 for p in parts)
    assert {"cpu", "gpu", "load_avg_1m"} <= set(report["machine"])
    for package in ("python", "torch", "faust-streaming", "confluent-kafka", "transformers"):
        assert report["versions"][package]
    assert len(report["targets"]) == 4
    if cores > 1:  # the N-processes intake option: every user predicted by the group
        assert report["intake_processes"]["workers"] == min(cores, report["settings"]["partitions"])
        assert report["intake_processes"]["every_user_predicted"] is True
        assert report["ratios"]["intake_processes_over_one"] > 0
    assert all({"name", "target", "measured", "met", "note"} <= set(t) for t in report["targets"])


@pytest.mark.integration
def test_quick_writes_markdown_and_cdf_next_to_the_json(quick_run: tuple[Path, str]) -> None:
    json_path, stdout = quick_run

    table = json_path.with_suffix(".md").read_text()
    png = json_path.with_name("latency_cdf.png").read_bytes()

    assert "| optimized / naive events/s |" in table
    assert "| pipeline preds/s / model ceiling (each part / the ceiling next to it) |" in table
    assert "parts of the max-rate run: 1. " in table
    assert table in stdout
    assert png.startswith(b"\x89PNG")


def test_bad_bundle_is_a_one_line_error(tmp_path: Path) -> None:
    done = subprocess.run(
        [BSTREAM, "bench", "--bundle", str(tmp_path)], capture_output=True, text=True, timeout=60
    )

    assert done.returncode != 0
    assert "not a model bundle" in done.stderr
    assert "Traceback" not in done.stderr


def test_parts_are_consecutive_and_cover_every_event() -> None:
    events = [{"user_id": "a", "ts": t} for t in range(10)]

    parts = split_parts(events, 3)

    assert [[e["ts"] for e in p] for p in parts] == [[0, 1, 2, 3], [4, 5, 6], [7, 8, 9]]


def test_each_part_is_paired_with_the_ceiling_on_both_sides() -> None:
    def probe(rate: float) -> dict[str, float]:
        return {"batches": 10, "batch_size": 100, "preds_per_s_mean": rate}

    phase = {"parts": [{"predictions": 900, "preds_per_s": 180.0},
                       {"predictions": 900, "preds_per_s": 270.0}]}  # fmt: skip
    ceiling: dict = {}

    pair_with_probes(phase, [probe(200.0), probe(200.0), probe(300.0)], ceiling)

    assert [p["ceiling_preds_per_s"] for p in phase["parts"]] == [200.0, 240.0]
    assert [p["over_ceiling"] for p in phase["parts"]] == [0.9, 1.125]
    assert ceiling["paired_over_ceiling"] == round((900 / 200 + 900 / 240) / (5 + 900 / 270), 3)
    assert ceiling["around_optimized_preds_per_s"] == 225.0  # every probe, pooled


def test_prefix_windows_are_what_the_worker_predicts() -> None:
    events = [{"user_id": u, "ts": t} for u, t in (("a", 1), ("b", 2), ("a", 3), ("a", 4))]

    windows = prefix_windows(events, size=2)

    assert [[e["ts"] for e in w] for w in windows] == [[1], [2], [1, 3], [3, 4]]
    assert newest_by_user(events) == {"a": 4, "b": 2}


def test_reflected_events_counts_only_events_a_prediction_covers() -> None:
    events = [{"user_id": u, "ts": t} for u, t in (("a", 1), ("a", 5), ("b", 2))]

    assert reflected_events(events, {"a": 1}) == 1
    assert reflected_events(events, {"a": 5, "b": 2}) == 3


def test_memory_events_are_grouped_per_user() -> None:
    events = memory_events(users=3, per_user=2)

    assert [e["user_id"] for e in events] == ["m0", "m0", "m1", "m1", "m2", "m2"]
    assert len({e["event_id"] for e in events}) == 6


def test_parse_metrics_sums_labels_and_reads_histogram_counts() -> None:
    text = "\n".join(
        [
            "# TYPE bstream_events_total counter",
            'bstream_events_total{event_type="view"} 3.0',
            'bstream_events_total{event_type="cart"} 2.0',
            "# TYPE bstream_inference_seconds histogram",
            'bstream_inference_seconds_bucket{le="+Inf"} 4.0',
            "bstream_inference_seconds_count 4.0",
            "bstream_inference_seconds_sum 0.5",
            "# TYPE bstream_active_windows gauge",
            "bstream_active_windows 7.0",
            "# TYPE bstream_inference_threads gauge",
            "bstream_inference_threads 2.0",
            "# TYPE bstream_model_busy_seconds_total counter",
            "bstream_model_busy_seconds_total 1.5",
        ]
    )

    values = parse_metrics(text)

    assert values == {
        "events": 5.0,
        "predictions": 0.0,
        "model_calls": 4.0,
        "active_windows": 7.0,
        "inference_threads": 2.0,
        "model_busy_s": 1.5,
    }


def test_worker_samples_combine_into_one_host_view() -> None:
    a = Sample(t=1.0, rss=100, cpu_s=2.0, events=3, predictions=1, model_calls=1,
               active_windows=4, inference_threads=1)  # fmt: skip
    b = Sample(t=1.5, rss=50, cpu_s=1.0, events=2, predictions=2, model_calls=1,
               active_windows=1, inference_threads=2)  # fmt: skip

    both = combined([a, b])

    assert (both.t, both.rss, both.cpu_s, both.events, both.active_windows) == (1.5, 150, 3.0, 5, 5)
    assert both.inference_threads == 1.5
    assert combined([a]) is a


def test_a_group_is_settled_once_every_worker_owns_partitions_and_all_are_owned() -> None:
    assert settled([2, 2], 4)
    assert not settled([4, 0], 4)  # the second worker has not been given any yet
    assert not settled([2, 1], 4)  # mid-rebalance
    assert [intake_processes(c, 4) for c in (1, 2, 16)] == [1, 2, 4]


def test_the_main_threads_samples_split_into_named_parts() -> None:
    lines = [
        "MainThread;run;Fetcher._fetcher (faust/transport/consumer.py);x 2",
        "MainThread;run;StreamWorker.intake (stream/worker.py);decode_event (schemas/x.py) 1",
        "MainThread;run;EpollSelector.select (selectors.py) 1",
        "bstream-infer_0;forward (model/model.py) 5",  # another thread: not counted
    ]

    parts = {p["part"].split(" (")[0]: p["pct"] for p in loop_breakdown(lines)}

    assert parts == {"Faust per-message path": 50.0, "worker intake": 25.0, "idle": 25.0}


def test_host_steal_is_the_hypervisors_share_between_two_readings() -> None:
    before = host_cpu_ticks("cpu  100 0 50 800 0 0 0 50 0 0\ncpu0 1 2 3")
    after = host_cpu_ticks("cpu  190 0 50 800 0 0 0 60 0 0")

    assert (before, after) == ((50, 1000), (60, 1100))
    assert steal_pct(before, after) == 10.0
    assert steal_pct(after, after) is None
    assert host_cpu_ticks("") == (0, 0)


def test_top_functions_splits_self_and_inclusive_time() -> None:
    lines = ["main;loop (a.py);decode (v.py) 6", "main;loop (a.py) 2", "infer;run (r.py) 2"]

    top = top_functions(lines)

    assert top["samples"] == 10
    assert top["self"][0] == {"function": "decode (v.py)", "pct": 60.0}
    assert {"function": "loop (a.py)", "pct": 80.0} in top["inclusive"]
    assert top["threads"][0] == {"thread": "main", "pct": 80.0}


def test_ratio_and_markdown_handle_a_skipped_naive_run() -> None:
    phase = {
        "events_predicted": 10,
        "events_per_s": 5.0,
        "preds_per_s": 4.0,
        "inferences_per_event": 0.8,
        "latency_ms": None,
        "e2e_latency_ms": None,
        "every_user_predicted": True,
    }
    report = {
        "quick": True,
        "bundle": {"version": "v", "tiny": True, "device": "cpu"},
        "data": {"source": "s"},
        "machine": {"load_avg_1m": 1.0, "logical_cores": 2},
        "ceiling": {
            "batch_size": 8,
            "torch_threads": 2,
            "preds_per_s": 6.0,
            "best_torch_threads": 1,
            "preds_per_s_1_thread": 8.0,
        },
        "model_ceiling_preds_per_s": 8.0,
        "optimized": phase,
        "naive": {},
        "fixed_load": {},
        "limit": {"intake": {"events": 10, "events_per_s": 20.0, "events_per_cpu_s": 40.0}},
        "memory": {},
        "notes": [],
        "ratios": {
            "optimized_over_naive_events": ratio(5.0, None),
            "optimized_over_naive_preds": None,
            "pipeline_over_ceiling": ratio(4.0, 8.0),
            "pipeline_over_ceiling_cpu": None,
        },
        "targets": [],
    }

    table = markdown(report)

    assert "| naive (max rate) | skipped |" in table
    assert "| pipeline preds/s / model ceiling (median batch, before the run) | 0.500 |" in table
    assert "| pipeline preds/s / model ceiling (mean rate of every probe) | n/a |" in table
    assert (
        "| pipeline preds/s / model ceiling (each part / the ceiling next to it) | n/a |" in table
    )
    assert "| optimized / naive events/s | n/a |" in table
    assert "| model ceiling (batch 8, torch threads 1, best) |  |  | 8 |" in table
    assert all(line.count("|") == 11 for line in table.splitlines()[6:12])
    limit_row = "| intake limit, plain confluent-kafka loop (high-coalescing events) | 10 | 20 |"
    assert limit_row in table
    assert "max-rate run's events" not in table  # not measured: no row


def test_sweep_table_puts_each_thread_counts_ceiling_beside_its_pipeline() -> None:
    ceiling = {
        "best_preds_per_s": 400.0,
        "by_threads": [{"threads": 1, "preds_per_s": 230.0}, {"threads": 2, "preds_per_s": 400.0}],
    }
    phase = {"preds_per_s": 200.0, "worker_cores_busy": 1.0, "latency_ms": {"p99": 300.0}}
    fixed = {"latency_ms": {"p99": 250.0}}
    rows = sweep_table(
        ceiling, {"1": {**phase, "fixed_load": fixed}, "2": {**phase, "preds_per_s": 380.0}}
    )
    assert [(r["threads"], r["ceiling_preds_per_s"]) for r in rows] == [(1, 230.0), (2, 400.0)]
    assert [r["pipeline_over_best_ceiling"] for r in rows] == [0.5, 0.95]
    assert rows[0]["latency_p99_ms"] == 300.0
    assert [r["fixed_load_p99_ms"] for r in rows] == [250.0, None]
