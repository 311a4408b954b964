"""Live-quality metrics (outcomes, online accuracy and calibration, drift): names are a contract.

Registered by stream.metrics.Metrics; set by stream.quality. Labels: model_version (and feature for
drift), never user ids.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge

FIGURES = ("auc", "pr_auc", "logloss", "ece", "base_rate")


class QualityGauges:
    """The quality metrics, on the worker's registry (labels: model_version [, feature])."""

    def __init__(self, registry: CollectorRegistry) -> None:
        r, v = registry, ["model_version"]
        self.outcomes = Counter(
            "bstream_outcomes_total", "Labelled predictions published", v, registry=r
        )
        self.dropped = Counter(
            "bstream_outcomes_dropped_total",
            "Pending predictions dropped by the per-user bound",
            v,
            registry=r,
        )
        self.expired = Counter(
            "bstream_outcomes_expired_total",
            "Pending predictions removed by the idle TTL or erasure",
            registry=r,
        )
        self.pending = Gauge(
            "bstream_outcomes_pending", "Predictions waiting for their label", registry=r
        )
        self.live = {
            (name, scope): Gauge(
                f"bstream_live_{name}{suffix}",
                f"Live {name} of labelled predictions ({text})",
                v,
                registry=r,
            )
            for name in FIGURES
            for scope, suffix, text in (
                ("recent", "", "last quality_window outcomes"),
                ("since_start", "_since_start", "since start"),
            )
        }
        self.delay = {
            q: Gauge(
                f"bstream_label_delay_p{q}_seconds",
                f"Label delay p{q} in event time (last quality_window outcomes)",
                v,
                registry=r,
            )
            for q in (50, 95)
        }
        self.calibration = {
            name: Gauge(
                f"bstream_live_calibration_{name}",
                f"Calibration table, last quality_window outcomes: {text} per score bin",
                [*v, "bin"],
                registry=r,
            )
            for name, text in (
                ("count", "outcomes"),
                ("mean_score", "mean score"),
                ("positive_rate", "share labelled 1"),
            )
        }
        self.offline_pr_auc = Gauge(
            "bstream_offline_pr_auc", "The bundle's offline PR-AUC (test, else val)", v, registry=r
        )
        self.psi = Gauge(
            "bstream_drift_psi",
            "PSI of the recent windows vs the bundle's reference",
            [*v, "feature"],
            registry=r,
        )
        self.drift_level = Gauge(
            "bstream_drift_level",
            "0 ok, 1 PSI over psi_warn, 2 PSI over psi_alarm",
            [*v, "feature"],
            registry=r,
        )
