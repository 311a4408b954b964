"""DP-SGD: noise calibration against the accountant, what gets trained, and a tiny private
training run through `bstream train --dp-epsilon` that records epsilon and delta in the bundle."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from model.bundle import read_meta
from model.dp import (
    BROADCAST,
    cost_table,
    limit_trainable,
    noise_for,
    planned_steps,
    spent_epsilon,
)
from model.model import BehaviorBert, ModelConfig
from model.runtime import Runtime
from model.tiny import tiny_bert_config
from stream.commands.model import train


@pytest.mark.parametrize("epsilon", [1.0, 8.0])
def test_calibrated_noise_spends_the_target_epsilon_over_the_planned_steps(epsilon: float) -> None:
    noise = noise_for(epsilon, 1e-5, sample_rate=16 / 2400, steps=150)

    spent = spent_epsilon(noise, 16 / 2400, 150, 1e-5)

    assert epsilon * 0.97 <= spent <= epsilon + 0.01


def test_stopping_early_spends_less_and_more_noise_spends_less() -> None:
    full = spent_epsilon(1.0, 0.01, 200, 1e-5)

    assert spent_epsilon(1.0, 0.01, 50, 1e-5) < full
    assert spent_epsilon(2.0, 0.01, 200, 1e-5) < full
    assert spent_epsilon(1.0, 0.01, 0, 1e-5) == 0.0


def test_noise_rejects_a_meaningless_budget() -> None:
    with pytest.raises(ValueError, match="epsilon > 0"):
        noise_for(0.0, 1e-5, 0.01, 100)
    with pytest.raises(ValueError, match="delta"):
        noise_for(1.0, 1.5, 0.01, 100)


def test_planned_steps_match_the_train_loop() -> None:
    assert planned_steps(1.0, 150) == 150
    assert planned_steps(0.5, 151) == 76


def trainable(scope: str) -> set[str]:
    model = BehaviorBert(ModelConfig(bert=tiny_bert_config(1000, 32)))
    limit_trainable(model, scope)
    return {name for name, p in model.named_parameters() if p.requires_grad}


def test_scopes_choose_what_dp_sgd_trains() -> None:
    everything = trainable("all")

    assert trainable("head") == {"head.weight", "head.bias"}
    assert trainable("top") == {"head.weight", "head.bias"} | {
        n for n in everything if n.startswith("bert.encoder.layer.1.")
    }
    assert not set(BROADCAST) & everything  # opacus cannot split broadcast lookups per example
    assert "bert.encoder.layer.0.attention.self.query.weight" in everything
    with pytest.raises(ValueError, match="unknown DP scope"):
        trainable("some")


def small_run(sim_file: Path, tiny_base: Path, out: Path) -> list[str]:
    return ["--data", str(sim_file), "--format", "jsonl", "--out", str(out), "--base",
            str(tiny_base), "--max-minutes", "1", "--max-len", "64", "--epochs", "1"]  # fmt: skip


def test_dp_training_records_epsilon_and_delta_within_the_accountant(
    sim_file: Path, tiny_base: Path, tmp_path: Path
) -> None:
    out = tmp_path / "dp-bundle"
    args = [*small_run(sim_file, tiny_base, out), "--max-train", "64", "--batch-size", "16",
            "--dp-epsilon", "2", "--dp-delta", "1e-4", "--dp-train", "all"]  # fmt: skip

    result = CliRunner().invoke(train, args)

    assert result.exit_code == 0, result.output
    meta = read_meta(out)
    dp = meta.metrics["dp"]
    assert dp["delta"] == 1e-4 and dp["target_epsilon"] == 2.0 and dp["scope"] == "all"
    assert meta.dp_epsilon == dp["epsilon"] <= 2.0 + 0.01
    assert dp["steps"] == dp["planned_steps"] == 4
    recomputed = spent_epsilon(dp["noise_multiplier"], dp["sample_rate"], dp["steps"], 1e-4)
    assert recomputed == pytest.approx(dp["epsilon"], abs=1e-3)
    assert dp["noise_multiplier"] > 0 and dp["trainable_params"] > 0
    assert "bert.embeddings.position_embeddings" in dp["frozen"]
    assert (
        0
        <= Runtime.load(out, device="cpu").predict(
            [[{"event_type": "cart", "ts": 1, "item_id": "1"}]]
        )[0]["purchase"]
        <= 1
    )


def test_dp_epsilon_must_be_positive(sim_file: Path, tiny_base: Path, tmp_path: Path) -> None:
    args = [
        *small_run(sim_file, tiny_base, tmp_path / "b"),
        "--dp-epsilon",
        "-1",
        "--max-train",
        "32",
    ]

    result = CliRunner().invoke(train, args)

    assert result.exit_code != 0 and "--dp-epsilon" in result.output, result.output
    assert not (tmp_path / "b").exists()


def report(auc: float, pr: float, eps: float | None) -> dict[str, Any]:
    bert = {"auc": auc, "auc_ci": [auc - 0.01, auc + 0.01], "pr_auc": pr,
            "pr_auc_ci": [pr - 0.02, pr + 0.02], "params": {"dp_epsilon": eps}}  # fmt: skip
    return {"models": {"bert": bert}}


def test_cost_table_shows_each_runs_loss_against_the_non_dp_run() -> None:
    table = cost_table({"eps1": report(0.70, 0.30, 1.0), "nondp": report(0.80, 0.45, None)})

    assert (
        "| eps1 | 1 | 0.7000 (0.6900-0.7100) | 0.3000 (0.2800-0.3200) | -0.1000 | -0.1500 |"
        in table
    )
    assert "| nondp | - |" in table and "+0.0000 | +0.0000 |" in table
