"""Model CLI end to end on small data: train (tiny --base), eval, export, bench-model, errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from model.bundle import read_meta
from model.data import load_data
from stream.commands.model import bench_model, evaluate, export, train


def train_args(sim_file: Path, tiny_base: Path, out: Path) -> list[str]:
    """A one-minute training run on the small simulated file with the tiny base."""
    return [
        *("--data", str(sim_file), "--format", "jsonl", "--out", str(out)),
        *("--base", str(tiny_base)),
        *("--max-train", "256", "--batch-size", "32", "--lr", "1e-3", "--max-minutes", "1"),
        *("--max-len", "64", "--val-size", "500"),
        # the budget in CPU time, so that other work on the host cannot cut the epoch short
        *("--clock", "cpu"),
    ]


@pytest.fixture(scope="module")
def trained(sim_file: Path, tiny_base: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("trained") / "bundle"
    result = CliRunner().invoke(train, train_args(sim_file, tiny_base, out))
    assert result.exit_code == 0, result.output
    return out


def test_train_writes_a_bundle_with_metrics_and_plots(trained: Path) -> None:
    meta = read_meta(trained)

    assert meta.labels == ["purchase", "cart"] and meta.max_len == 64  # the default heads
    assert meta.data_fingerprint and meta.data_fingerprint["format"] == "jsonl"
    assert meta.metrics["best"]["val_pr_auc"] > 0
    assert (trained / "metrics.json").is_file() and (trained / "plots" / "training.png").is_file()


def test_eval_writes_the_report_json_with_every_model(
    trained: Path, sim_file: Path, tmp_path: Path
) -> None:
    report = tmp_path / "r.json"

    result = CliRunner().invoke(
        evaluate,
        [
            "--bundle",
            str(trained),
            "--data",
            str(sim_file),
            "--format",
            "jsonl",
            "--json",
            str(report),
            "--out",
            str(tmp_path / "eval"),
            "--resamples",
            "50",
        ],  # fmt: skip
    )

    assert result.exit_code == 0, result.output
    full = json.loads(report.read_text())
    models = full["models"]
    assert {"bert", "logreg", "lightgbm", "ngram_lr"} <= set(models)
    assert full["baselines"]["stored"] and "stored in the bundle" in result.output
    lo, hi = full["comparison"]["bert_minus_best_baseline_pr_auc_ci"]
    assert lo <= full["comparison"]["bert_minus_best_baseline_pr_auc"] <= hi
    each = full["comparison"]["bert_minus_each_baseline_pr_auc"]
    assert set(each) == set(models) - {"bert"}
    assert each[full["comparison"]["best_baseline"]]["ci"] == [lo, hi]
    assert "| BERT PR-AUC minus |" in (tmp_path / "eval" / "report.md").read_text()
    for m in models.values():
        assert {"auc", "pr_auc", "logloss", "ece", "n_test", "n_pos"} <= set(m)
        assert m["n_test"] > m["n_pos"] > 0 and 0 <= m["pr_auc"] <= 1
    assert models["logreg"]["auc"] > 0.55  # simulated purchases follow carts and repeats
    for png in ("roc.png", "pr.png", "calibration.png", "report.md"):
        assert (tmp_path / "eval" / png).is_file()


def test_eval_refit_baselines_is_a_named_option(
    trained: Path, sim_file: Path, tmp_path: Path
) -> None:
    report = tmp_path / "r.json"
    args = ["--bundle", str(trained), "--data", str(sim_file), "--json", str(report),
            "--out", str(tmp_path / "eval"), "--resamples", "20", "--max-test", "400",
            "--refit-baselines"]  # fmt: skip

    result = CliRunner().invoke(evaluate, args)

    assert result.exit_code == 0, result.output
    full = json.loads(report.read_text())
    assert not full["baselines"]["stored"] and "--refit-baselines" in result.output
    assert {"logreg", "lightgbm", "ngram_lr"} <= set(full["models"])


def test_eval_split_val_scores_the_val_rows_and_says_so(
    trained: Path, sim_file: Path, tmp_path: Path
) -> None:
    report = tmp_path / "r.json"
    args = ["--bundle", str(trained), "--data", str(sim_file), "--json", str(report),
            "--out", str(tmp_path / "eval"), "--resamples", "20", "--split", "val"]  # fmt: skip

    result = CliRunner().invoke(evaluate, args)

    assert result.exit_code == 0, result.output
    full = json.loads(report.read_text())
    n_val = len(load_data(sim_file, "jsonl").split("val"))
    assert full["split"] == "val" and full["models"]["bert"]["n_test"] == n_val
    assert "(time split, val part)" in result.output and f"Val rows: {n_val}," in result.output


def test_eval_reports_the_pretraining_ablation_and_the_learning_curve(
    trained: Path, sim_file: Path, tiny_base: Path, tmp_path: Path
) -> None:
    scratch, report = tmp_path / "scratch", tmp_path / "r.json"
    scratch_args = [*train_args(sim_file, tiny_base, scratch), "--init", "scratch"]
    made = CliRunner().invoke(train, scratch_args)
    assert made.exit_code == 0, made.output
    args = ["--bundle", str(trained), "--data", str(sim_file), "--json", str(report),
            "--out", str(tmp_path / "eval"), "--resamples", "20", "--scratch", str(scratch),
            "--learning-curve"]  # fmt: skip

    result = CliRunner().invoke(evaluate, args)

    assert result.exit_code == 0, result.output
    full = json.loads(report.read_text())
    assert full["ablation"]["scratch"]["init"] == "scratch" and "bert_scratch" in full["models"]
    lo, hi = full["ablation"]["pretrained_minus_scratch_pr_auc_ci"]
    assert lo <= full["ablation"]["pretrained_minus_scratch_pr_auc"] <= hi
    curve = full["learning_curve"]
    assert curve[0]["label"] == "1 epoch (256)" and curve[0]["windows"] >= 256
    assert all(0 < row["test_pr_auc"] <= 1 for row in curve)
    assert (tmp_path / "eval" / "learning_curve.png").is_file()
    assert "Learning curve" in result.output and "Pretraining ablation" in result.output


def test_export_re_exports_in_place_with_parity(trained: Path, tmp_path: Path) -> None:
    out = tmp_path / "copy"

    result = CliRunner().invoke(export, ["--bundle", str(trained), "--out", str(out)])

    assert result.exit_code == 0, result.output
    assert "parity max |dp|" in result.output
    assert read_meta(out).metrics["best"] == read_meta(trained).metrics["best"]
    assert (out / "metrics.json").is_file()


def test_bench_model_prints_every_variant_and_the_anchor(tiny_bundle: Path) -> None:
    result = CliRunner().invoke(
        bench_model,
        [
            "--bundle",
            str(tiny_bundle),
            "--seconds",
            "0.05",
            "--batch-sizes",
            "1,8",
            "--lengths",
            "16,64",
        ],
    )

    assert result.exit_code == 0, result.output
    for word in ("eager", "torchscript", "int8", "max |dp|", "anchor"):
        assert word in result.output


def test_user_errors_are_one_line_and_non_zero(tmp_path: Path, sim_file: Path) -> None:
    missing = CliRunner().invoke(evaluate, ["--bundle", str(tmp_path), "--data", str(sim_file)])
    bad_format = CliRunner().invoke(
        train, ["--data", str(sim_file), "--format", "taobao", "--out", str(tmp_path / "x")]
    )

    assert missing.exit_code != 0 and "no bundle.json" in missing.output
    assert "Traceback" not in missing.output
    assert bad_format.exit_code != 0 and "Error:" in bad_format.output
