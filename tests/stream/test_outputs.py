"""The explain policy: which predictions carry reasons."""

from __future__ import annotations

import random

import pytest

from stream.outputs import should_explain


def test_should_explain_follows_each_policy() -> None:
    rng = random.Random(0)

    assert not should_explain("off", 0.99, 0.5, 1.0, rng)
    assert should_explain("all", 0.01, 0.5, 0.0, rng)
    assert should_explain("top-scores", 0.5, 0.5, 0.0, rng)
    assert not should_explain("top-scores", 0.49, 0.5, 1.0, rng)
    with pytest.raises(ValueError, match="unknown explain policy"):
        should_explain("sometimes", 0.5, 0.5, 0.5, rng)


def test_sample_rate_policy_explains_about_that_share() -> None:
    rng = random.Random(1)

    picked = sum(should_explain("sample-rate", 0.3, 0.9, 0.1, rng) for _ in range(10_000))

    assert 850 < picked < 1150
    assert not any(should_explain("sample-rate", 1.0, 0.0, 0.0, rng) for _ in range(1000))
