"""Are the reasons faithful, and what do they cost? Deletion test over a set of windows.

For each window the ground truth is measured independently of any explainer: the runtime scores
the window with each encoded event removed, |delta_i| = |score(full) - score(without i)|. An
explainer is faithful when removing its top-weighted event changes the score more, on average,
than removing a random event: margin = mean |delta_top| - mean |delta_random| > 0.

    python -m model.faithfulness --bundle B --events sim.jsonl --format jsonl --n 300
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import click
import numpy as np

from model.data import load_data
from model.explain import METHODS, Explainer, Window, kept_events, without
from model.runtime import Runtime


@dataclass
class Faithfulness:
    """Deletion-test result for one method over `n_windows` windows."""

    method: str
    n_windows: int
    mean_abs_delta_top: float
    mean_abs_delta_random: float  # expectation over a uniformly random encoded event
    mean_abs_delta_sampled: float  # one seeded random event per window
    margin: float  # top - random (expectation)
    margin_sampled: float
    top_is_true_top: float  # share of windows where the top reason is the largest-|delta| event
    ms_per_window: float  # explanation only, batches of `batch`
    predict_ms_per_window: float


def true_deltas(runtime: Runtime, windows: Sequence[Window], label: str) -> list[dict[int, float]]:
    """score(full) - score(without i) for every encoded event i, via plain Runtime.predict."""
    kept = [kept_events(enc) for enc in runtime.encode(windows)]
    rows: list[Window] = list(windows)
    rows += [without(w, i) for w, idx in zip(windows, kept, strict=True) for i in idx]
    scores = [p[label] for p in runtime.predict(rows)]
    full, rest = scores[: len(windows)], scores[len(windows) :]
    out, start = [], 0
    for base, idx in zip(full, kept, strict=True):
        out.append({i: base - s for i, s in zip(idx, rest[start : start + len(idx)], strict=True)})
        start += len(idx)
    return out


def timed_weights(
    explainer: Explainer, windows: Sequence[Window], batch: int
) -> tuple[list[dict[int, float]], float, float]:
    """Weights in worker-sized batches; (weights, explain ms/window, predict ms/window)."""
    weights: list[dict[int, float]] = []
    explain_s = predict_s = 0.0
    for start in range(0, len(windows), batch):
        chunk = windows[start : start + batch]
        t0 = time.perf_counter()
        scores = explainer.runtime.predict(chunk)
        t1 = time.perf_counter()
        weights += explainer.weights(chunk, scores)
        explain_s += time.perf_counter() - t1
        predict_s += t1 - t0
    return weights, 1000 * explain_s / len(windows), 1000 * predict_s / len(windows)


def measure(
    explainer: Explainer,
    windows: Sequence[Window],
    truth: Sequence[dict[int, float]] | None = None,
    batch: int = 32,
    seed: int = 0,
) -> Faithfulness:
    """Deletion test for one explainer; windows with fewer than two encoded events are skipped."""
    runtime = explainer.runtime
    truth = truth if truth is not None else true_deltas(runtime, windows, explainer.label)
    pairs = [(w, t) for w, t in zip(windows, truth, strict=True) if len(t) >= 2]
    if not pairs:
        raise ValueError("no window with at least two encoded events to test")
    windows, truth = [w for w, _ in pairs], [t for _, t in pairs]
    weights, explain_ms, predict_ms = timed_weights(explainer, windows, batch)
    rng = random.Random(seed)
    top, rand, sampled, hits = [], [], [], []
    for weight, delta in zip(weights, truth, strict=True):
        chosen = max(weight, key=lambda i: (abs(weight[i]), i))
        top.append(abs(delta[chosen]))
        rand.append(float(np.mean([abs(d) for d in delta.values()])))
        sampled.append(abs(delta[rng.choice(sorted(delta))]))
        hits.append(abs(delta[chosen]) >= max(abs(d) for d in delta.values()) - 1e-9)
    return Faithfulness(
        method=explainer.method,
        n_windows=len(windows),
        mean_abs_delta_top=float(np.mean(top)),
        mean_abs_delta_random=float(np.mean(rand)),
        mean_abs_delta_sampled=float(np.mean(sampled)),
        margin=float(np.mean(top) - np.mean(rand)),
        margin_sampled=float(np.mean(top) - np.mean(sampled)),
        top_is_true_top=float(np.mean(hits)),
        ms_per_window=explain_ms,
        predict_ms_per_window=predict_ms,
    )


def sample_test_windows(runtime: Runtime, path: Path, fmt: str, n: int, seed: int) -> list[Window]:
    """n test-split prefix windows (time split as in training) drawn with a fixed seed."""

    data = load_data(path, fmt)
    test = data.split("test")
    chosen = random.Random(seed).sample(test, min(n, len(test)))
    size = int(runtime.meta.encoding.get("window", 50))
    return [data.window(ex, size) for ex in chosen]


@click.command(help="Measure faithfulness (deletion test) and cost of each explain method.")
@click.option("--bundle", type=click.Path(exists=True, file_okay=False), required=True)
@click.option("--events", type=click.Path(exists=True, dir_okay=False), required=True)
@click.option("--format", "fmt", default="jsonl", show_default=True)
@click.option("--n", type=click.IntRange(min=1), default=300, show_default=True)
@click.option("--batch", type=click.IntRange(min=1), default=32, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--json", "json_path", type=click.Path(dir_okay=False), default=None)
def main(
    bundle: str, events: str, fmt: str, n: int, batch: int, seed: int, json_path: str | None
) -> None:
    runtime = Runtime.load(bundle, device="auto")
    windows = sample_test_windows(runtime, Path(events), fmt, n, seed)
    truth = true_deltas(runtime, windows, runtime.labels[0])
    results: dict[str, Any] = {}
    for method in METHODS:
        result = measure(Explainer(runtime, method), windows, truth, batch, seed)
        results[method] = asdict(result)
        click.echo(
            f"{method:9s} n={result.n_windows} |d_top|={result.mean_abs_delta_top:.4f} "
            f"|d_rand|={result.mean_abs_delta_random:.4f} margin={result.margin:+.4f} "
            f"(sampled {result.margin_sampled:+.4f}) top=true-top {result.top_is_true_top:.0%} "
            f"cost {result.ms_per_window:.2f} ms/window vs predict "
            f"{result.predict_ms_per_window:.2f} ms/window"
        )
    if json_path:
        Path(json_path).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
