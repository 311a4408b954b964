"""`bstream monitor`, `simulate --drift-at`, `drift-reference` (no broker needed)."""

from __future__ import annotations

import shutil
from pathlib import Path

import orjson
import pytest
from click.testing import CliRunner

from model.data import label_events
from model.drift import FEATURES, load_reference
from model.reference import drift_reference, reference_for_bundle
from stream.commands.monitor import monitor, quality_table
from stream.commands.simulate import simulate
from stream.simulate import DAY_MS, START_MS, simulate_events


def _outcome(i: int, version: str = "v1") -> dict:
    label = int(i % 5 == 0)
    return {
        "outcome_id": f"{version}-{i}",
        "model_version": version,
        "scores": {"purchase": 0.2 + 0.5 * label * (i % 3 != 0)},
        "labels": {"purchase": label},
        "delay_ms": 1000 * i,
    }


def test_quality_table_has_a_recent_and_a_since_start_row_per_version() -> None:
    outcomes = [_outcome(i) for i in range(100)] + [_outcome(i, "v2") for i in range(50)]
    outcomes.append(outcomes[0])  # a redelivered copy is counted once

    rows = quality_table(outcomes, "purchase", window=5000)

    assert rows[0].split()[:3] == ["model_version", "scope", "n"]
    assert [r.split()[:3] for r in rows[1:]] == [
        ["v1", "recent", "100"],
        ["v1", "since_start", "100"],
        ["v2", "recent", "50"],
        ["v2", "since_start", "50"],
    ]


def test_monitor_without_a_broker_fails_in_one_line() -> None:
    result = CliRunner().invoke(monitor, ["--bootstrap", "127.0.0.1:1"])

    assert result.exit_code != 0
    assert result.output.startswith("Error: ") and len(result.output.strip().splitlines()) == 1


def test_simulate_drift_at_changes_only_the_second_half(tmp_path: Path) -> None:
    plain, drifted = tmp_path / "plain.jsonl", tmp_path / "drift.jsonl"
    runner = CliRunner()
    assert runner.invoke(simulate, ["--users", "30", "--out", str(plain)]).exit_code == 0
    done = runner.invoke(simulate, ["--users", "30", "--out", str(drifted), "--drift-at", "0.5"])
    assert done.exit_code == 0, done.output
    a = [orjson.loads(x) for x in plain.read_bytes().splitlines()]
    b = [orjson.loads(x) for x in drifted.read_bytes().splitlines()]
    middle = START_MS + int(3.5 * DAY_MS)

    assert [e for e in a if e["ts"] < middle] == [e for e in b if e["ts"] < middle]
    assert [e for e in a if e["ts"] >= middle] != [e for e in b if e["ts"] >= middle]


@pytest.mark.parametrize("value", ["0", "1", "1.5", "x"])
def test_simulate_rejects_a_drift_point_outside_0_1(tmp_path: Path, value: str) -> None:
    out = tmp_path / "x.jsonl"
    result = CliRunner().invoke(simulate, ["--users", "3", "--out", str(out), "--drift-at", value])

    assert result.exit_code == 2 and not out.exists()


def test_reference_for_a_real_bundle(tiny_bundle: Path, tmp_path: Path) -> None:
    bundle = Path(shutil.copytree(tiny_bundle, tmp_path / "bundle"))
    data = label_events(simulate_events(40, seed=4), horizon_min=30)

    reference_for_bundle(bundle, data, window=20, max_windows=60)

    reference = load_reference(bundle)
    assert reference is not None and reference["n"] == 60 and reference["label"] == "purchase"
    for feature in FEATURES:
        assert sum(reference["histograms"][feature]) == pytest.approx(1.0)


def test_drift_reference_cli_rejects_a_non_bundle(tmp_path: Path) -> None:
    data = tmp_path / "d.jsonl"
    data.write_text("")
    result = CliRunner().invoke(drift_reference, ["--bundle", str(tmp_path), "--data", str(data)])

    assert result.exit_code == 1 and result.output.startswith("Error: not a model bundle")
