"""Which train windows a run fine-tunes on, and which val rows it stops on: pure functions."""

from __future__ import annotations

import random

from model.labels import Example
from model.train import TrainConfig, sample_train, val_sample


def windows(n: int) -> list[Example]:
    """n windows, a positive every fifth, timestamps in shuffled order."""
    stamps = random.Random(1).sample(range(n), n)
    return [Example("u", i, ts, (float(i % 5 == 0),), "train") for i, ts in enumerate(stamps)]


def test_recent_frac_fine_tunes_on_the_newest_windows_only() -> None:
    examples = windows(1000)

    chosen = sample_train(examples, TrainConfig(recent_frac=0.3), random.Random(0))

    assert len(chosen) == 300
    assert min(e.ts for e in chosen) == 700  # the newest 30%, whatever the input order


def test_balanced_sampling_also_keeps_to_the_newest_windows() -> None:
    cfg = TrainConfig(recent_frac=0.5, balance="balanced", pos_frac=0.5, max_train=100)

    chosen = sample_train(windows(1000), cfg, random.Random(0))

    assert len(chosen) == 100 and sum(e.labels[0] for e in chosen) == 50
    assert min(e.ts for e in chosen) >= 500


def test_val_rows_do_not_move_with_the_seed_or_the_global_random_state() -> None:
    first = val_sample(7799, 3000)
    random.seed(123)

    assert val_sample(7799, 3000) == first and len(set(first)) == 3000
    assert first == sorted(first) and first[0] >= 0 and first[-1] < 7799
    assert val_sample(50, 3000) == list(range(50))  # a small split is used whole
