"""One typed settings object for every component; environment variables use the prefix BSTREAM_."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """All runtime settings. CLI options override these; e.g. BSTREAM_MAX_BATCH=256."""

    model_config = SettingsConfigDict(env_prefix="BSTREAM_", extra="ignore")

    # Kafka connection
    bootstrap: str = "127.0.0.1:9092"
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_cafile: Path | None = None
    session_timeout_s: float = 6.0  # group joins on Tansu take ~23 s at Kafka's default

    # Topics
    events_topic: str = "behavior.events"
    predictions_topic: str = "behavior.predictions"
    dlq_topic: str = "behavior.events.dlq"
    control_topic: str = "behavior.control"
    models_topic: str = "behavior.models"  # the model registry (compacted, one partition)
    shadow_topic: str = "behavior.predictions.shadow"  # challengers' scores, never the main topic
    partitions: int = Field(4, ge=1)
    replication_factor: int = Field(1, ge=1)

    # Worker
    app_id: str = "behavior-stream"
    window_size: int = Field(50, ge=1, description="events kept per user")
    window_max_age_s: float = Field(7 * 24 * 3600, gt=0, description="drop events older than this")
    idle_ttl_s: float = Field(24 * 3600, gt=0, description="expire windows idle this long")
    max_batch: int = Field(256, ge=1)
    # Longest wait to fill a micro-batch. Batches still grow to max_batch while the model is busy
    # (the agent waits on the one-slot job queue meanwhile), so a short wait costs little at high
    # load and keeps latency down at low load. Measured at 119 ev/s on 2 cores, MiniLM 3 layers:
    # p99 324 ms at 200, 125 ms at 50, 215 ms at 25 (calls of ~6 rows, the 1-thread cost noisier).
    max_delay_ms: int = Field(50, ge=1)
    max_event_bytes: int = Field(16 * 1024, ge=256)
    store: str = "memory://"
    data_dir: Path = Path(".bstream/worker")
    metrics_port: int = Field(9464, ge=0, le=65535)
    naive: bool = False  # one inference and one table write per event (benchmark baseline)
    instance_id: str | None = None  # /health reports it (default: random); launchers check it

    # Changelog recovery watchdog (stream/kafka/recovery.py; Kafka Streams' task.timeout.ms)
    recovery_stall_s: float = Field(180.0, gt=0, description="no recovery progress for this long")
    recovery_stall_action: Literal["exit", "continue"] = "exit"

    # Model
    model: Path | None = None  # bundle directory
    device: Literal["auto", "cpu", "cuda"] = "auto"
    quantize: bool = False
    model_chunk: int | None = Field(None, ge=1, description="rows per call; CPU 128, GPU 1024")
    torch_threads: int | None = Field(
        None, ge=1, description="fixed count; default: adaptive per batch (stream.threads)"
    )
    registry: bool = True  # follow the models topic: start on its champion, hot-swap on changes
    registry_poll_s: float = Field(0.5, gt=0)
    shadow_share: float = Field(1.0, ge=0, le=1, description="default challenger batch share")
    explain: Literal["off", "all", "top-scores", "sample-rate"] = "off"
    explain_top_k: int = 3
    explain_sample_rate: float = Field(0.05, ge=0, le=1)
    explain_min_score: float = Field(0.5, ge=0, le=1)

    # Live model quality (stream/quality.py): outcomes, online metrics, drift
    outcomes: bool = True  # remember predictions, label them from later events, publish outcomes
    outcomes_topic: str = "behavior.outcomes"
    outcome_horizon_min: float = Field(30.0, gt=0, description="when the bundle does not say")
    outcome_max_pending: int = Field(32, ge=1, description="pending predictions kept per user")
    quality_window: int = Field(5000, ge=10, description="recent outcomes / windows for metrics")
    psi_warn: float = Field(0.1, gt=0)
    psi_alarm: float = Field(0.25, gt=0)

    # Privacy
    hmac_key: SecretStr | None = None
    hmac_key_file: Path | None = None
    hmac_key_id: str = "k1"
    allow_raw_ids: bool = False

    def kafka_client_config(self) -> dict[str, str]:
        """librdkafka-style client settings (includes secrets: never log the result)."""
        conf = {"bootstrap.servers": self.bootstrap, "security.protocol": self.security_protocol}
        if self.sasl_mechanism:
            conf["sasl.mechanism"] = self.sasl_mechanism
        if self.sasl_username:
            conf["sasl.username"] = self.sasl_username
        if self.sasl_password:
            conf["sasl.password"] = self.sasl_password.get_secret_value()
        if self.ssl_cafile:
            conf["ssl.ca.location"] = str(self.ssl_cafile)
        return conf

    def redacted(self) -> dict[str, object]:
        """Settings safe to print: secrets are masked."""
        return self.model_dump(mode="json")  # SecretStr dumps as '**********'
