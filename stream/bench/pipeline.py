"""One pipeline phase: fresh topics, a worker subprocess, a replay, the predictions read back.

Everything is measured from the outside: intake and predictions from the predictions' own
`predicted_at` and `latency_ms` (ms precision) and from sampled /metrics counters; latency from
`latency_ms` (worker-side) and from produce time to `predicted_at` (end to end, broker included).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Container, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from tqdm import tqdm

from schemas.formats import event_json
from stream.bench.data import Event, newest_by_user
from stream.bench.profile import Profiler
from stream.bench.workerproc import BENCH_KEY, Deployment, Sample, combined, workers
from stream.kafka import consumer_config, producer_config
from stream.privacy import pseudonym
from stream.replay import Pacer
from stream.settings import Settings
from stream.stats import percentile


@dataclass
class PhaseSpec:
    """What one phase runs: its events, worker flags, offered rate and time cap."""

    name: str
    events: list[Event]
    worker_args: list[str] = field(default_factory=list)
    rate: float | None = None  # None: as fast as the producer goes
    time_cap_s: float = 600.0  # stop waiting for predictions after this long
    profile: bool = False  # py-spy the worker while it works
    workers: int = 1  # worker processes in one consumer group (the N-processes intake option)
    env: dict[str, str] = field(default_factory=dict)  # extra worker environment
    # The events in this many consecutive parts, each replayed once the previous one is fully
    # predicted; `pause(k)` runs with the worker idle before part k and after the last (k = parts).
    parts: int = 1
    pause: Callable[[int], None] | None = None
    # Replayed and fully predicted before the first pause, and not counted: the calls in which the
    # worker's thread chooser tries each count and TorchScript first sees real batch shapes, which
    # a long-running worker has long paid for (the ceiling gets its own warm-up pass too).
    warmup: list[Event] = field(default_factory=list)


@dataclass
class Part:
    """One part of a phase: its predictions (a slice of Observed.predictions), workers around it."""

    first: int
    end: int
    before: Sample
    after: Sample


@dataclass
class Observed:
    """Raw observations of a phase (kept for the CDF plot and the derived figures)."""

    produced_at: dict[tuple[str, int], float]  # (raw user, ts) -> wall s of its (last) produce
    produce_s: float
    predictions: list[dict[str, Any]]
    missing_users: int
    wall_s: float
    samples: list[Sample]
    final: Sample
    profile: dict[str, Any] | None = None
    parts: list[Part] = field(default_factory=list)  # only when the phase ran in parts
    paused_cores_busy: float | None = None  # the idle workers' CPU while `pause` ran


def produce(
    settings: Settings, events: Sequence[Event], rate: float | None, progress: bool
) -> dict[tuple[str, int], float]:
    """Send the events in order (paced when `rate`), wait for the acks; return produce times."""
    from confluent_kafka import Producer

    producer = Producer(producer_config(settings))
    pacer = Pacer(rate, sleep=producer.poll)
    produced_at: dict[tuple[str, int], float] = {}
    topic = settings.events_topic
    for i, event in enumerate(
        tqdm(events, desc="  replay", unit="ev", disable=not progress, leave=False)
    ):
        pacer.wait(i, None)
        key, value = event["user_id"].encode(), event_json(event)
        produced_at[(event["user_id"], event["ts"])] = time.time()
        while True:
            try:
                producer.produce(topic, value, key)
                break
            except BufferError:
                producer.poll(0.05)
        if i % 1000 == 0:
            producer.poll(0)
    if producer.flush(60):
        raise RuntimeError("replay: some events were not acknowledged by the broker")
    return produced_at


class PredictionReader:
    """Reads a deployment's predictions from the first one on, across several waits."""

    def __init__(self, settings: Settings) -> None:
        from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

        topic = settings.predictions_topic
        self.consumer = Consumer(
            consumer_config(settings, group_id=f"bench-reader-{settings.app_id}")
        )
        meta = self.consumer.list_topics(topic, timeout=10).topics[topic]
        self.consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in meta.partitions])

    def until(
        self,
        expected: dict[str, int],
        deadline: float,
        progress: bool,
        ignore: Container[str] = (),
    ) -> tuple[list[dict[str, Any]], int]:
        """Predictions read until each expected user has one with its newest event (or the
        deadline): (those read, users still missing). Users in `ignore` are read and dropped."""
        pending = dict(expected)
        predictions: list[dict[str, Any]] = []
        bar = tqdm(
            total=len(expected),
            desc="  predicted users",
            unit="user",
            disable=not progress,
            leave=False,
        )
        try:
            while pending and time.monotonic() < deadline:
                for msg in self.consumer.consume(10_000, 0.2):
                    if msg.error():
                        continue
                    prediction = orjson.loads(msg.value() or b"null")
                    if prediction["user"] in ignore:
                        continue
                    predictions.append(prediction)
                    if pending.get(prediction["user"]) == prediction["last_event_ts"]:
                        del pending[prediction["user"]]
                        bar.update()
        finally:
            bar.close()
        return predictions, len(pending)

    def close(self) -> None:
        self.consumer.close()


def collect(
    settings: Settings, expected: dict[str, int], deadline: float, progress: bool
) -> tuple[list[dict[str, Any]], int]:
    """Read predictions until each expected user has one with its newest event (or the deadline).

    Returns every prediction read and the number of users still missing.
    """
    reader = PredictionReader(settings)
    try:
        return reader.until(expected, deadline, progress)
    finally:
        reader.close()


def split_parts(events: Sequence[Event], parts: int) -> list[list[Event]]:
    """`parts` consecutive runs of events of (nearly) equal size.

    >>> [len(p) for p in split_parts(list(range(10)), 3)]
    [4, 3, 3]
    """
    size, extra = divmod(len(events), parts)
    bounds = [k * size + min(k, extra) for k in range(parts + 1)]
    return [list(events[bounds[k] : bounds[k + 1]]) for k in range(parts)]


def _expected(events: Sequence[Event]) -> dict[str, int]:
    key = BENCH_KEY.encode()
    return {pseudonym(key, user): ts for user, ts in newest_by_user(events).items()}


def run_phase(
    spec: PhaseSpec, bootstrap: str, bundle: Path, workdir: Path, partitions: int, progress: bool
) -> Observed:
    """Run one phase against a fresh deployment and return what was observed."""
    dep = Deployment(bootstrap, partitions).create()
    with workers(
        dep, bundle, workdir, spec.name, spec.worker_args, spec.workers, spec.env
    ) as procs:
        for worker in procs:
            worker.start_sampling()
        first = procs[0].proc
        assert first is not None
        profiler = (
            Profiler(first.pid, workdir / f"profile-{spec.name}.txt") if spec.profile else None
        )
        if spec.parts == 1 and spec.pause is None and not spec.warmup:
            started = time.monotonic()
            produced_at = produce(dep.settings, spec.events, spec.rate, progress)
            produce_s = time.monotonic() - started
            predictions, missing = collect(
                dep.settings, _expected(spec.events), started + spec.time_cap_s, progress
            )
            parts: list[Part] = []
            paused = None
        else:
            started = time.monotonic()
            produced_at, produce_s, predictions, missing, parts, paused = _run_parts(
                spec, dep.settings, procs, progress
            )
        wall_s = time.monotonic() - started
        profile = profiler.stop() if profiler is not None else None
        time.sleep(1.2)  # upkeep refreshes the active-windows gauge every second
        final = combined([worker.sample() for worker in procs])
        samples = [combined(list(at)) for at in zip(*(w.samples for w in procs), strict=False)]
    return Observed(
        produced_at, produce_s, predictions, missing, wall_s, samples, final, profile, parts, paused
    )


def _run_parts(
    spec: PhaseSpec, settings: Settings, procs: Sequence[Any], progress: bool
) -> tuple[dict[tuple[str, int], float], float, list[dict[str, Any]], int, list[Part], float]:
    """Replay the parts one after another, `spec.pause` around each (see PhaseSpec).

    The bench's samplers stop while `pause` runs (it may measure the model in this process);
    the idle workers' CPU during the pauses is returned, in cores.
    """
    reader = PredictionReader(settings)
    produced_at: dict[tuple[str, int], float] = {}
    predictions: list[dict[str, Any]] = []
    parts, produce_s, missing = [], 0.0, 0
    idle = {"cpu_s": 0.0, "t": 0.0}

    def pause(k: int) -> None:
        if spec.pause is None:
            return
        for worker in procs:
            worker.pause_sampling()
        before = combined([worker.sample() for worker in procs])
        spec.pause(k)
        after = combined([worker.sample() for worker in procs])
        for worker in procs:
            worker.resume_sampling()
        for name in idle:
            idle[name] += getattr(after, name) - getattr(before, name)

    deadline = time.monotonic() + spec.time_cap_s
    try:
        warm = _expected(spec.warmup)
        if warm:  # its stragglers in other partitions must not count in part 1
            produce(settings, spec.warmup, spec.rate, progress)
            reader.until(warm, deadline, progress)
        for k, events in enumerate(split_parts(spec.events, spec.parts)):
            pause(k)
            before = combined([worker.sample() for worker in procs])
            started = time.monotonic()
            produced_at.update(produce(settings, events, spec.rate, progress))
            produce_s += time.monotonic() - started
            got, missing = reader.until(_expected(events), deadline, progress, ignore=warm)
            after = combined([worker.sample() for worker in procs])
            parts.append(Part(len(predictions), len(predictions) + len(got), before, after))
            predictions += got
            if missing:
                break
        pause(spec.parts)
    finally:
        reader.close()
    paused = round(idle["cpu_s"] / idle["t"], 3) if idle["t"] > 0 else 0.0
    return produced_at, produce_s, predictions, missing, parts, paused


def ratio(top: float, bottom: float) -> float | None:
    return round(top / bottom, 3) if bottom > 0 else None


def _span_rate(count: float, first: float, last: float) -> float | None:
    return count / (last - first) if last > first else None


def _quantiles(values: Sequence[float]) -> dict[str, float] | None:
    if not values:
        return None
    return {
        "p50": round(percentile(values, 50), 3),
        "p95": round(percentile(values, 95), 3),
        "p99": round(percentile(values, 99), 3),
        "max": round(max(values), 3),
    }


def reflected_events(events: Sequence[Event], newest_seen: dict[str, int]) -> int:
    """Events that a prediction reflects (ts <= the newest predicted ts of their user)."""
    return sum(1 for e in events if e["ts"] <= newest_seen.get(e["user_id"], -1))


def e2e_latencies(obs: Observed, raw_of: dict[str, str]) -> list[float]:
    """Produce -> predicted_at (ms) of each prediction whose newest event we produced."""
    out = []
    for p in obs.predictions:
        sent = obs.produced_at.get((raw_of.get(p["user"], ""), p["last_event_ts"]))
        if sent is not None:
            out.append(max(0.0, p["predicted_at"] - sent * 1000))
    return out


def mean_threads(samples: Sequence[Sample]) -> float | None:
    """Mean torch threads the worker used over the samples taken once it had inferred."""
    seen = [s.inference_threads for s in samples if s.inference_threads > 0]
    return round(sum(seen) / len(seen), 2) if seen else None


@dataclass(frozen=True)
class Span:
    """Predictions of one stretch of work: how many, and the time they cover."""

    count: int
    active_s: float  # first event reached the worker -> last prediction published
    stamps_s: float  # first -> last prediction published

    def as_dict(self) -> dict[str, Any]:
        rate = _span_rate(self.count - 1, 0.0, self.stamps_s)
        return {"predictions": self.count, "active_s": round(self.active_s, 3), "preds_per_s": rate}


def active_span(preds: Sequence[dict[str, Any]]) -> Span:
    """The Span of some predictions, from their own `predicted_at` and `latency_ms`.

    >>> active_span([{"predicted_at": 2000, "latency_ms": 500}, {"predicted_at": 4000,
    ...              "latency_ms": 100}])
    Span(count=2, active_s=2.5, stamps_s=2.0)
    """
    first_in = min(p["predicted_at"] - p["latency_ms"] for p in preds) / 1000
    stamps = [p["predicted_at"] / 1000 for p in preds]
    return Span(len(preds), max(stamps) - first_in, max(stamps) - min(stamps))


def summarize(spec: PhaseSpec, obs: Observed) -> dict[str, Any]:
    """The phase's figures: throughput, inferences per event, latency, RSS, counts.

    events/s = events reflected in predictions / (first event reached the worker -> last
    prediction published); both ends come from the predictions themselves (ms precision).
    """
    preds = obs.predictions
    key = BENCH_KEY.encode()
    raw_of = {pseudonym(key, u): u for u in {e["user_id"] for e in spec.events}}
    newest_seen: dict[str, int] = {}
    for p in preds:
        raw = raw_of.get(p["user"], "")
        newest_seen[raw] = max(newest_seen.get(raw, -1), p["last_event_ts"])
    done = reflected_events(spec.events, newest_seen)
    # A phase in parts is measured over its parts only: the worker idles between them.
    pieces = [preds[part.first : part.end] for part in obs.parts] or [preds]
    spans = [active_span(piece) for piece in pieces if piece]
    active_s = sum(span.active_s for span in spans)
    stamps_s = sum(span.stamps_s for span in spans)
    ends = [(part.before, part.after) for part in obs.parts] or [(obs.samples[0], obs.final)]

    def used(name: str) -> float:  # from ready (before the replay) to the end, or per part
        return sum(getattr(end, name) - getattr(begin, name) for begin, end in ends)

    calls, consumed = used("model_calls"), used("events")
    cpu_s, sampled_s, busy_s = used("cpu_s"), used("t"), used("model_busy_s")
    # The sampler's looks, and those taken at the ends of parts and of the phase (a short phase
    # may fall between two of the sampler's looks).
    looks = [*obs.samples, *(p.after for p in obs.parts), obs.final]
    rss = [s.rss for s in looks]
    return {
        "events": len(spec.events),
        "users": len(raw_of),
        "events_consumed": int(consumed),
        "events_predicted": done,
        "offered_rate": spec.rate,
        "events_per_s": _span_rate(done, 0.0, active_s),
        "preds_per_s": _span_rate(sum(span.count - 1 for span in spans), 0.0, stamps_s),
        "end_to_end_events_per_s": round(done / obs.wall_s, 1),
        "worker_cpu_s": round(cpu_s, 2),
        "worker_cores_busy": round(cpu_s / sampled_s, 2),
        "loop_cores_busy": round(used("loop_cpu_s") / sampled_s, 3),
        # Where a model-bound pipeline loses to the ceiling: time the model waits between calls
        # (busy share < 1), or slower calls than alone (preds per model-second < the ceiling).
        "model_busy_share": round(busy_s / active_s, 3) if active_s > 0 else None,
        "preds_per_model_s": _span_rate(len(preds), 0.0, busy_s),
        "rows_per_call": round(len(preds) / calls, 1) if calls else None,
        "events_per_cpu_s": _span_rate(done, 0.0, cpu_s),
        "preds_per_cpu_s": _span_rate(len(preds), 0.0, cpu_s),
        "predictions": len(preds),
        "inferences_per_event": round(len(preds) / done, 4) if done else None,
        "model_calls_per_event": round(calls / consumed, 4) if consumed else None,
        "latency_ms": _quantiles([p["latency_ms"] for p in preds]),
        "e2e_latency_ms": _quantiles(e2e_latencies(obs, raw_of)),
        "every_user_predicted": obs.missing_users == 0,
        "missing_users": obs.missing_users,
        "produce_s": round(obs.produce_s, 3),
        "wall_s": round(obs.wall_s, 3),
        "rss_start_mb": round(rss[0] / 2**20, 1),
        "rss_end_mb": round(obs.final.rss / 2**20, 1),
        "peak_rss_mb": round(max(rss) / 2**20, 1),
        "active_windows": int(obs.final.active_windows),
        "inference_threads_mean": mean_threads(looks),
        "workers": spec.workers,
        **({"parts": [span.as_dict() for span in spans]} if obs.parts else {}),
        **({"paused_cores_busy": obs.paused_cores_busy} if obs.paused_cores_busy else {}),
        **({"profile": obs.profile} if obs.profile else {}),
    }
