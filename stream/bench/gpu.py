"""`make bench-gpu`: the GPU checks in one go, within ~10 minutes on one GPU.

1. parity: bf16 scores on the GPU vs fp32 scores on the CPU, same bundle, same real windows;
2. the batch-size curve on the GPU (rows per model call), with tokenisation's own rate beside it;
3. `bstream bench-model --device cuda`;
4. `bstream bench --quick --device cuda` on the same bundle.

`--dry-run` runs steps 1-2 on the CPU (bf16 emulated on the CPU, tiny sizes) and prints steps 3-4
without running them: `make test` exercises it (tests/stream/test_bench_gpu.py).

    python -m stream.bench.gpu --bundle BUNDLE [--out bench-gpu] [--dry-run]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BSTREAM = str(Path(sys.executable).parent / "bstream")
PARITY_MAX_ABS = 0.02  # bf16 keeps ~3 significant digits; scores are probabilities in [0, 1]
FULL_CHUNKS = (64, 128, 256, 512, 1024, 2048, 4096)
DRY_CHUNKS = (8, 32)
BUDGET_S = 570.0  # the whole script, steps 3-4 included: done within 10 minutes


@dataclass
class Plan:
    """Sizes for one run of the script: the real GPU run or the CPU dry run."""

    device: str
    windows: int  # real windows for the curve
    parity_windows: int  # the first ones, for parity
    chunks: Sequence[int]
    seconds: float  # per point of the curve
    run_commands: bool  # steps 3-4: run them, or only print them


def plan_for(dry_run: bool) -> Plan:
    """The GPU run's sizes (~10 minutes in all), or the dry run's (seconds, on the CPU)."""
    if dry_run:
        return Plan(
            "cpu", windows=64, parity_windows=32, chunks=DRY_CHUNKS, seconds=0.2, run_commands=False
        )
    return Plan(
        "cuda",
        windows=4096,
        parity_windows=4096,
        chunks=FULL_CHUNKS,
        seconds=3.0,
        run_commands=True,
    )


def load_windows(n: int, window_size: int = 50) -> list[list[dict[str, Any]]]:
    """`n` realistic windows: prefixes of the Taobao slice, else of simulated events."""
    from stream.bench.data import default_data_path, load_data, prefix_windows

    path = default_data_path(Path.cwd())
    data = load_data(path, "taobao", max(n, 2_000))
    windows = prefix_windows(data.events, window_size)
    step = max(1, len(windows) // n)
    return windows[::step][:n]


def half_runtime(bundle: Path, device: str) -> Any:
    """The bundle in bf16: the real CUDA runtime, or (dry run) the same rebuild on the CPU."""
    import torch

    from model.runtime import Runtime

    if device == "cuda":
        return Runtime.load(bundle, device="cuda")
    from model.bundle import MODEL_FILE
    from model.export import synthetic_batch, trace
    from model.runtime import eager_probabilities

    fp32 = Runtime.load(bundle, device="cpu")
    script = torch.jit.load(str(bundle / MODEL_FILE), map_location="cpu")
    eager = eager_probabilities(script, fp32.meta).to(dtype=torch.bfloat16)
    ids, mask = synthetic_batch(int(fp32.meta.model["bert"]["vocab_size"]), 2, 16, seed=0)
    return Runtime(trace(eager, (ids, mask)).eval(), fp32.encoder, fp32.meta, "cpu", torch.bfloat16)


def curve_runtime(bundle: Path, device: str) -> Any:
    """The runtime the worker would use on `device` (bf16 on a GPU; fp32 on a CPU: bf16 is slow)."""
    from model.runtime import Runtime

    return Runtime.load(bundle, device=device)


def parity(bundle: Path, windows: list[list[dict[str, Any]]], device: str) -> dict[str, Any]:
    """bf16 vs fp32 scores per label: max and mean absolute difference, and pass/fail."""
    from model.runtime import Runtime

    ref = Runtime.load(bundle, device="cpu").predict(windows)
    half = half_runtime(bundle, device).predict(windows)
    labels = list(ref[0])
    diffs = {lab: [abs(a[lab] - b[lab]) for a, b in zip(ref, half, strict=True)] for lab in labels}
    worst = max(max(d) for d in diffs.values())
    return {
        "windows": len(windows),
        "device": device,
        "max_abs_diff": {lab: round(max(d), 5) for lab, d in diffs.items()},
        "mean_abs_diff": {lab: round(statistics.fmean(d), 6) for lab, d in diffs.items()},
        "tolerance": PARITY_MAX_ABS,
        "passed": worst <= PARITY_MAX_ABS,
    }


def rate(fn: Any, rows: int, seconds: float) -> float:
    """Rows per second of `fn()` (one warm-up call, then at least 2 calls and `seconds`)."""
    fn()
    calls, started = 0, time.perf_counter()
    while calls < 2 or time.perf_counter() - started < seconds:
        fn()
        calls += 1
    return rows * calls / (time.perf_counter() - started)


def batch_curve(runtime: Any, windows: list[list[dict[str, Any]]], plan: Plan) -> dict[str, Any]:
    """Per rows per call: all windows through `predict` (tokenising overlapped with the model on a
    GPU) and the model alone on one pre-encoded call; tokenising's own rate once."""
    total = len(windows)
    encode_rate = rate(lambda: runtime.encode(windows), total, plan.seconds)
    print(f"  tokenise only: {encode_rate:,.0f} rows/s", flush=True)
    rows = []
    for chunk in plan.chunks:
        runtime.chunk_rows = chunk
        encoded = runtime.encode((windows * (chunk // total + 1))[:chunk])
        row = {
            "rows_per_call": chunk,
            "predict_rows_per_s": round(
                rate(lambda: runtime.predict(windows), total, plan.seconds), 1
            ),
            "model_rows_per_s": round(
                rate(lambda e=encoded: runtime.predict_encoded(e), chunk, plan.seconds), 1
            ),
        }
        rows.append(row)
        print(f"  curve: {row}", flush=True)
    return {"windows": total, "encode_rows_per_s": round(encode_rate, 1), "rows": rows}


def commands(bundle: Path, out: Path) -> list[list[str]]:
    """Steps 3-4 as command lines."""
    return [
        [BSTREAM, "bench-model", "--bundle", str(bundle), "--device", "cuda",
         "--batch-sizes", "1,32,128,512,2048", "--seconds", "2",
         "--json", str(out / "bench-model.json")],
        [BSTREAM, "bench", "--quick", "--device", "cuda", "--bundle", str(bundle),
         "--skip-memory", "--no-progress", "--json", str(out / "bench-quick" / "bench.json")],
    ]  # fmt: skip


def run(bundle: Path, out: Path, dry_run: bool) -> dict[str, Any]:
    """All four steps; the report also goes to OUT/bench-gpu.json."""
    plan = plan_for(dry_run)
    out.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    print(f"[1/4] parity bf16 vs fp32 on {plan.device} ({plan.parity_windows} windows)", flush=True)
    windows = load_windows(plan.windows)
    report: dict[str, Any] = {"dry_run": dry_run, "bundle": str(bundle)}
    report["parity"] = parity(bundle, windows[: plan.parity_windows], plan.device)
    print(f"  {report['parity']}", flush=True)
    print(f"[2/4] batch-size curve on {plan.device}: rows per call {list(plan.chunks)}", flush=True)
    report["curve"] = batch_curve(curve_runtime(bundle, plan.device), windows, plan)
    report["steps"] = []
    for i, cmd in enumerate(commands(bundle, out), start=3):
        print(f"[{i}/4] {' '.join(cmd)}", flush=True)
        step: dict[str, Any] = {"command": cmd, "ran": plan.run_commands}
        if plan.run_commands:
            t0 = time.monotonic()
            left = BUDGET_S - (t0 - started)
            try:
                code = subprocess.run(cmd, timeout=max(30.0, left)).returncode
            except subprocess.TimeoutExpired:
                code = 124  # over the 10-minute budget: reported, and the script fails
            step.update(returncode=code, seconds=round(time.monotonic() - t0, 1))
        report["steps"].append(step)
    report["seconds"] = round(time.monotonic() - started, 1)
    (out / "bench-gpu.json").write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {out / 'bench-gpu.json'} ({report['seconds']} s)", flush=True)
    return report


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, required=True, help="Model bundle directory.")
    parser.add_argument("--out", type=Path, default=Path("bench-gpu"), help="Report folder.")
    parser.add_argument(
        "--dry-run", action="store_true", help="CPU only, tiny sizes; print steps 3-4."
    )
    args = parser.parse_args(argv)
    if not (args.bundle / "bundle.json").is_file():
        print(f"Error: not a model bundle (no bundle.json): {args.bundle}", file=sys.stderr)
        return 2
    if not args.dry_run:
        import torch

        if not torch.cuda.is_available():
            print("Error: no CUDA GPU here (use --dry-run for the CPU check)", file=sys.stderr)
            return 2
    report = run(args.bundle, args.out, args.dry_run)
    failed = not report["parity"]["passed"] or any(
        s.get("returncode", 0) != 0 for s in report["steps"]
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
