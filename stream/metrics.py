"""Worker metrics (prometheus-client) and the HTTP endpoint serving /metrics and /health.

Label values are bounded enums or partition numbers: never user ids.

>>> m = Metrics()
>>> m.events.labels(event_type="view").inc()
>>> b'bstream_events_total{event_type="view"} 1.0' in m.exposition()
True
"""

from __future__ import annotations

import threading
from collections import Counter as Tally
from collections.abc import Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

import orjson
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.process_collector import ProcessCollector

from stream.privacy import PII_KINDS
from stream.quality_metrics import QualityGauges
from stream.windows import EVENT_TYPES

if TYPE_CHECKING:  # types only: the worker's steps call these counters, never the reverse
    from stream.intake import Batch
    from stream.outputs import DeadLetter

INVALID_REASONS = (
    "oversized",
    "not_utf8",
    "not_json",
    "not_object",
    "missing_field",
    "wrong_type",
    "bad_value",
)
DLQ_REASONS = (*INVALID_REASONS, "inference_failed")
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096)
INFERENCE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
disable_created_metrics()  # no *_created series: they double the exposition for no dashboard use

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


@dataclass
class Health:
    """What /health reports; updated by the worker."""

    model_loaded: bool = False
    partitions_assigned: int = 0
    broker_up: bool = False
    model_version: str = ""
    recovery: dict[str, Any] = field(default_factory=dict)  # stream/kafka/recovery.py health_detail
    instance_id: str = ""  # launchers compare it with the process they started
    pid: int = 0
    lifecycle: dict[str, Any] | None = None  # registry/hot-swap details (stream/modelswap.py)

    @property
    def ready(self) -> bool:
        """Ready: the model is loaded, this worker owns a partition and the broker is reachable."""
        return self.model_loaded and self.partitions_assigned > 0 and self.broker_up

    def as_dict(self) -> dict[str, Any]:
        """The /health JSON body."""
        return {
            "status": "ready" if self.ready else "not_ready",
            "model_loaded": self.model_loaded,
            "model_version": self.model_version,
            "partitions_assigned": self.partitions_assigned,
            "broker_up": self.broker_up,
            "recovery": self.recovery,
            "instance_id": self.instance_id,
            "pid": self.pid,
            **({"lifecycle": self.lifecycle} if self.lifecycle is not None else {}),
        }


class Metrics:
    """Every metric the worker exports, on its own registry (the names are a contract)."""

    def __init__(self, registry: CollectorRegistry | None = None, process: bool = False) -> None:
        r = self.registry = registry if registry is not None else CollectorRegistry()
        if process:
            ProcessCollector(registry=r)
        self.events = Counter(
            "bstream_events_total", "Valid events consumed", ["event_type"], registry=r
        )
        self.invalid = Counter(
            "bstream_invalid_total", "Invalid records by reason", ["reason"], registry=r
        )
        self.dropped_fields = Counter(
            "bstream_dropped_fields_total", "Non-allow-listed fields dropped", ["kind"], registry=r
        )
        self.dlq = Counter("bstream_dlq_total", "DLQ writes (acknowledged)", ["reason"], registry=r)
        self.duplicates = Counter(
            "bstream_duplicate_events_total", "Exact duplicate events ignored", registry=r
        )
        self.predictions = Counter(
            "bstream_predictions_total", "Predictions published (acknowledged)", registry=r
        )
        self.batch_events = Histogram(
            "bstream_batch_events", "Events per batch", buckets=BATCH_BUCKETS, registry=r
        )
        self.batch_users = Histogram(
            "bstream_batch_users",
            "Distinct changed users per batch",
            buckets=BATCH_BUCKETS,
            registry=r,
        )
        self.inference_seconds = Histogram(
            "bstream_inference_seconds", "One model call", buckets=INFERENCE_BUCKETS, registry=r
        )
        self.model_busy = Counter(
            "bstream_model_busy_seconds",
            "Seconds the inference thread spent in model calls (its utilisation: rate of this)",
            registry=r,
        )
        self.event_to_prediction = Histogram(
            "bstream_event_to_prediction_seconds",
            "Newest event reached the worker -> prediction acknowledged",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.inference_failures = Counter(
            "bstream_inference_failures_total", "Failed model calls", registry=r
        )
        self.active_windows = Gauge(
            "bstream_active_windows", "Windows held by this worker", registry=r
        )
        self.threads = Gauge(
            "bstream_inference_threads", "torch threads of the latest model call", registry=r
        )
        self.expired_windows = Counter(
            "bstream_expired_windows_total", "Windows expired after the idle TTL", registry=r
        )
        self.erasures = Counter("bstream_erasures_total", "Windows erased on request", registry=r)
        self.consumer_lag = Gauge(
            "bstream_consumer_lag", "Events topic lag per partition", ["partition"], registry=r
        )
        self.ready = Gauge(
            "bstream_ready", "1 when the model is loaded and partitions assigned", registry=r
        )
        self.broker_up = Gauge("bstream_broker_up", "1 when the broker is reachable", registry=r)
        # changelog recovery (stream/kafka/recovery.py)
        self.recovery_remaining = Gauge(
            "bstream_recovery_remaining_offsets",
            "Changelog offsets left to restore per partition (0 when not recovering)",
            ["partition"],
            registry=r,
        )
        self.recovery_stalled = Gauge(
            "bstream_recovery_stalled", "1 while changelog recovery has stalled", registry=r
        )
        self.recovery_unrestored = Counter(
            "bstream_recovery_unrestored_records_total",
            "Changelog records skipped by a stalled recovery (recovery_stall_action=continue)",
            registry=r,
        )
        self.unchanged_windows = Counter(
            "bstream_unchanged_windows_total",
            "User updates whose events the window already held (replays): no new prediction",
            registry=r,
        )
        self.quality = QualityGauges(r)  # outcomes, live accuracy, drift (stream/quality.py)
        self.health = Health()
        self._prime()

    def _prime(self) -> None:
        # Known label values start at 0, so dashboards and rate() see the series from the start.
        for name in EVENT_TYPES:
            self.events.labels(event_type=name)
        for reason in INVALID_REASONS:
            self.invalid.labels(reason=reason)
        for reason in DLQ_REASONS:
            self.dlq.labels(reason=reason)
        for kind in PII_KINDS:
            self.dropped_fields.labels(kind=kind)

    def count_batch(self, batch: Batch) -> None:
        """Count a consumed batch: its size, users, events by type, invalid records, PII drops."""
        items, letters = batch.items, batch.letters
        self.batch_events.observe(len(items) + len(letters))
        self.batch_users.observe(len({item.key for item in items}))
        for code, n in Tally(i.entry[1] for i in items).items():
            self.events.labels(event_type=EVENT_TYPES[code]).inc(n)
        for reason, n in Tally(d.code for d in letters).items():
            self.invalid.labels(reason=reason).inc(n)
        for kind in batch.dropped:
            self.dropped_fields.labels(kind=kind).inc()

    def count_letters(self, letters: Sequence[DeadLetter]) -> None:
        """Count dead letters the broker acknowledged, per reason."""
        for reason, n in Tally(d.code for d in letters).items():
            self.dlq.labels(reason=reason).inc(n)

    def set_health(self, **changes: Any) -> None:
        """Update health fields and the matching gauges."""
        for name, value in changes.items():
            setattr(self.health, name, value)
        self.ready.set(1 if self.health.ready else 0)
        self.broker_up.set(1 if self.health.broker_up else 0)

    def exposition(self) -> bytes:
        """Prometheus text format of every metric."""
        return generate_latest(self.registry)


def _handler(metrics: Metrics) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                self._reply(200, metrics.exposition(), CONTENT_TYPE_LATEST)
            elif path == "/health":
                health = metrics.health
                self._reply(
                    200 if health.ready else 503, orjson.dumps(health.as_dict()), "application/json"
                )
            else:
                self._reply(404, b"not found: try /metrics or /health\n", "text/plain")

        def _reply(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            pass  # scrapes every few seconds would flood the worker log

    return Handler


def serve(metrics: Metrics, port: int, host: str = "0.0.0.0") -> ThreadingHTTPServer:
    """Serve /metrics and /health on a daemon thread; port 0 picks a free port (see server_port)."""
    server = ThreadingHTTPServer((host, port), _handler(metrics))
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="bstream-metrics", daemon=True).start()
    return server
