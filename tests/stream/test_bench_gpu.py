"""`make bench-gpu` (stream.bench.gpu) in its CPU dry mode: parity, the curve, the planned steps."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from stream.bench.gpu import BUDGET_S, main, plan_for


def test_dry_run_checks_parity_and_measures_the_curve_on_the_cpu(
    tiny_bundle: Path, tmp_path: Path
) -> None:
    assert main(["--bundle", str(tiny_bundle), "--out", str(tmp_path), "--dry-run"]) == 0

    report = json.loads((tmp_path / "bench-gpu.json").read_text())
    assert report["dry_run"] is True
    assert report["parity"]["passed"] is True
    assert 0 < report["parity"]["max_abs_diff"]["purchase"] <= report["parity"]["tolerance"]
    curve = report["curve"]
    assert [row["rows_per_call"] for row in curve["rows"]] == list(plan_for(True).chunks)
    assert all(row["model_rows_per_s"] > 0 < row["predict_rows_per_s"] for row in curve["rows"])
    assert curve["encode_rows_per_s"] > 0
    commands = [" ".join(step["command"]) for step in report["steps"]]
    assert "bench-model" in commands[0] and "--device cuda" in commands[0]
    assert "bench --quick --device cuda" in commands[1]
    assert not any(step["ran"] for step in report["steps"])


def test_the_gpu_run_fits_ten_minutes_by_its_sizes() -> None:
    plan = plan_for(False)
    assert plan.device == "cuda" and plan.run_commands
    # 2 rates per point of the curve; steps 3-4 get what is left of the budget
    assert (2 * len(plan.chunks) + 1) * plan.seconds < 120 < BUDGET_S <= 600


def test_not_a_bundle_is_a_one_line_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--bundle", str(tmp_path), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("Error: not a model bundle") and err.count("\n") == 1
