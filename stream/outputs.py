"""What goes out with a prediction: the explain policy (which predictions carry reasons).

Pure and free of torch, so the worker decides without importing the model's explainer.

>>> import random
>>> should_explain("top-scores", 0.7, min_score=0.5, sample_rate=0.0, rng=random.Random(0))
True
"""

from __future__ import annotations

from typing import Protocol

POLICIES = ("off", "all", "top-scores", "sample-rate")


class RandomLike(Protocol):
    def random(self) -> float: ...


def should_explain(
    policy: str, score: float, min_score: float, sample_rate: float, rng: RandomLike
) -> bool:
    """Whether one prediction gets reasons under the policy (keeps explanation cost bounded)."""
    if policy == "off":
        return False
    if policy == "all":
        return True
    if policy == "top-scores":
        return score >= min_score
    if policy == "sample-rate":
        return rng.random() < sample_rate
    raise ValueError(f"unknown explain policy {policy!r}; choose one of {', '.join(POLICIES)}")
