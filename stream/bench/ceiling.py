"""The model's own ceiling: batched `Runtime.predict` throughput on realistic windows, no Kafka."""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from tqdm import tqdm

from stream.bench.data import Event
from stream.stats import percentile


@dataclass
class Ceiling:
    """Raw runtime throughput at one batch size (encoding included, as in the worker)."""

    preds_per_s: float  # batch size / median batch time: stalls from other processes don't count
    preds_per_s_mean: float  # all predictions / all batch time
    preds_per_cpu_s: float  # all predictions / CPU seconds of this process: load-independent
    batch_size: int
    batches: int
    batch_ms_p50: float
    batch_ms_p95: float
    window_events_mean: float
    window_events_max: int

    def as_dict(self) -> dict[str, Any]:
        return {k: round(v, 3) if isinstance(v, float) else v for k, v in asdict(self).items()}


def measure_ceiling(
    runtime: Any,
    batches: Sequence[Sequence[list[Event]]],
    min_seconds: float,
    progress: bool = True,
) -> Ceiling:
    """Predict the batches (cycling) for at least `min_seconds` and 3 batches, after a warm-up pass.

    The warm-up runs every batch once: TorchScript specialises per input shape on first sight,
    which a long-running worker has long paid for.
    """
    for batch in batches:
        runtime.predict(batch)
    times: list[float] = []
    done = 0
    started, cpu_started = time.perf_counter(), time.process_time()
    with tqdm(desc="model ceiling", unit="pred", disable=not progress, leave=False) as bar:
        while len(times) < 3 or time.perf_counter() - started < min_seconds:
            batch = batches[len(times) % len(batches)]
            t0 = time.perf_counter()
            runtime.predict(batch)
            times.append(time.perf_counter() - t0)
            done += len(batch)
            bar.update(len(batch))
    cpu_s = time.process_time() - cpu_started
    lengths = [len(w) for batch in batches for w in batch]
    return Ceiling(
        preds_per_s=len(batches[0]) / statistics.median(times),
        preds_per_s_mean=done / sum(times),
        preds_per_cpu_s=done / cpu_s if cpu_s > 0 else 0.0,
        batch_size=len(batches[0]),
        batches=len(times),
        batch_ms_p50=statistics.median(times) * 1000,
        batch_ms_p95=percentile(times, 95) * 1000,
        window_events_mean=statistics.fmean(lengths),
        window_events_max=max(lengths),
    )
