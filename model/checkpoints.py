"""Training bookkeeping: the time budget, the LR schedule and best-checkpoint keeping."""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Sequence
from typing import TypeVar

import torch
from torch import nn


class Budget:
    """The --max-minutes budget. clock="wall" is real time; clock="cpu" counts this process's CPU
    seconds / CORES, i.e. minutes on CORES otherwise idle cores (for runs on a shared machine)."""

    CORES = 2

    def __init__(self, minutes: float, clock: str = "wall") -> None:
        if clock not in ("wall", "cpu"):
            raise ValueError("clock must be wall or cpu")
        self.seconds, self.clock = minutes * 60, clock
        self._wall0, self._cpu0 = time.monotonic(), time.process_time()

    def used(self) -> float:
        if self.clock == "cpu":
            return (time.process_time() - self._cpu0) / self.CORES
        return time.monotonic() - self._wall0

    def wall(self) -> float:
        return time.monotonic() - self._wall0

    def fraction(self) -> float:
        return self.used() / self.seconds

    def over(self) -> bool:
        return self.used() > self.seconds


def warmup_linear(total_steps: int, warmup: float, budget: Budget):  # type: ignore[no-untyped-def]
    """LR factor: linear warmup, then linear decay by steps or budget, whichever ends first."""
    warm = max(1, int(total_steps * warmup))

    def factor(step: int) -> float:
        progress = max(step / total_steps, budget.fraction())
        return min((step + 1) / warm, max(0.0, (1 - progress) / (1 - warmup)))

    return factor


M = TypeVar("M", bound=nn.Module)


class Checkpoints:
    """The k best states by val PR-AUC; at the end, their weight average if val prefers it."""

    def __init__(self, k: int) -> None:
        self.k = max(1, k)
        self.top: list[tuple[float, int, dict[str, torch.Tensor]]] = []
        self.used_average = False

    def offer(self, pr: float, step: int, state: dict[str, torch.Tensor]) -> bool:
        """Keep the state if it ranks in the top k; True when it is the new best."""
        best = self.top[0][0] if self.top else float("-inf")
        if len(self.top) < self.k or pr > self.top[-1][0]:
            self.top.append((pr, step, copy.deepcopy(state)))
            self.top.sort(key=lambda t: -t[0])
            del self.top[self.k :]
        return pr > best

    def restore(self, model: M, val_pr: Callable[[M], float]) -> M:
        """Load the best state, or the top-k average when its val PR-AUC is at least as good."""
        if not self.top:
            raise ValueError("no checkpoint was evaluated")

        def load(state: dict[str, torch.Tensor]) -> None:
            model.load_state_dict({k.removeprefix("_module."): v for k, v in state.items()})

        if len(self.top) > 1:
            load(average_states([state for _, _, state in self.top]))
            if val_pr(model.eval()) >= self.top[0][0]:
                self.used_average = True
                return model.eval()
        load(self.top[0][2])
        return model.eval()


def average_states(states: Sequence[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Element-wise mean of floating tensors (integer buffers come from the first state)."""
    out = {}
    for key, first in states[0].items():
        if first.is_floating_point():
            out[key] = torch.stack([s[key] for s in states]).mean(0)
        else:
            out[key] = first
    return out
