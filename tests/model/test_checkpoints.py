"""Training bookkeeping: budget clocks, the LR schedule, and top-k checkpoint averaging."""

from __future__ import annotations

import time

import pytest
import torch
from torch import nn

from model.checkpoints import Budget, Checkpoints, average_states, warmup_linear


def weights(model: nn.Linear, value: float) -> dict[str, torch.Tensor]:
    with torch.no_grad():
        model.weight.fill_(value)
        model.bias.fill_(0.0)
    return model.state_dict()


def test_checkpoints_keep_the_top_k_and_report_new_bests() -> None:
    model, kept = nn.Linear(2, 1), Checkpoints(2)

    improved = [
        kept.offer(pr, i, weights(model, w))
        for i, (pr, w) in enumerate([(0.1, 1.0), (0.3, 2.0), (0.2, 3.0), (0.25, 9.0)])
    ]

    assert improved == [True, True, False, False]
    assert [pr for pr, _, _ in kept.top] == [0.3, 0.25]


@pytest.mark.parametrize(("averaged_pr", "expected", "used"), [(0.9, 5.5, True), (0.0, 2.0, False)])
def test_restore_prefers_the_average_only_when_val_does(
    averaged_pr: float, expected: float, used: bool
) -> None:
    model, kept = nn.Linear(2, 1), Checkpoints(2)
    kept.offer(0.3, 1, weights(model, 2.0))
    kept.offer(0.2, 2, weights(model, 9.0))

    kept.restore(model, lambda m: averaged_pr)

    assert model.weight[0, 0].item() == pytest.approx(expected)
    assert kept.used_average is used


def test_average_states_keeps_integer_buffers() -> None:
    states = [
        {"w": torch.tensor([1.0]), "n": torch.tensor([3])},
        {"w": torch.tensor([3.0]), "n": torch.tensor([7])},
    ]

    out = average_states(states)

    assert out["w"].item() == 2.0 and out["n"].item() == 3


def test_schedule_warms_up_then_decays_to_zero_by_steps() -> None:
    factor = warmup_linear(100, 0.1, Budget(minutes=60))

    assert factor(0) == pytest.approx(0.1)
    assert factor(9) == pytest.approx(1.0)
    assert factor(55) == pytest.approx(0.5, abs=0.01)
    assert factor(100) == 0.0


def test_cpu_budget_counts_process_time_per_core() -> None:
    budget = Budget(minutes=1, clock="cpu")
    end = budget._cpu0 + 0.2
    while time.process_time() < end:
        pass

    assert 0.09 <= budget.used() <= budget.wall() + 0.1
    with pytest.raises(ValueError, match="clock"):
        Budget(1, clock="moon")
