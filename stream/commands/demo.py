"""`bstream demo` (what `make demo` runs): the whole loop on this machine, then a summary.

Embedded broker -> topics -> demo bundle (cached) -> HMAC key -> worker subprocess -> simulated
events replayed -> live predictions -> summary once every user is predicted; all children stopped.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click
import orjson

from stream.settings import Settings
from stream.stats import percentile

WORKER_READY_TIMEOUT_S = 240.0


@dataclass
class Live:
    """Predictions seen so far (latest per user) and the newest event ts each user must reach."""

    newest: dict[str, int]
    latest: dict[str, dict[str, Any]] = field(default_factory=dict)
    latencies: list[float] = field(default_factory=list)
    count: int = 0
    first_at: float | None = None

    def add(self, prediction: dict[str, Any]) -> None:
        self.count += 1
        self.latest[prediction["user"]] = prediction
        if "latency_ms" in prediction:
            self.latencies.append(prediction["latency_ms"])
        if self.first_at is None:
            self.first_at = time.monotonic()

    def done(self) -> bool:
        latest = self.latest
        return all(
            u in latest and latest[u]["last_event_ts"] == ts for u, ts in self.newest.items()
        )


def summary_lines(live: Live, events: int, elapsed_s: float, top: int = 5) -> list[str]:
    """The closing summary: counts, latency percentiles, top users by purchase score."""
    ranked = sorted(live.latest.values(), key=lambda p: p["scores"]["purchase"], reverse=True)
    lines = [
        f"events sent        {events}",
        f"users predicted    {len(live.latest)} / {len(live.newest)}",
        f"predictions        {live.count} ({live.count / max(elapsed_s, 1e-9):.0f}/s)",
        f"latency p50 / p99  {percentile(live.latencies, 50):.0f} ms / "
        f"{percentile(live.latencies, 99):.0f} ms",
        f"top {top} users by purchase score (pseudonyms):",
    ]
    lines += [
        f"  {p['user'][:16]}  purchase={p['scores']['purchase']:.3f}  window={p['window_size']}"
        for p in ranked[:top]
    ]
    return lines


def demo_bundle(workdir: Path, rebuild: bool) -> Path:
    """Reuse the cached demo bundle if it validates; otherwise build it."""
    from model.bundle import BundleError, validate_bundle

    out = workdir / "bundles" / "demo"
    marker = out / DEMO_MARKER
    if not rebuild:
        with contextlib.suppress(BundleError, OSError):
            validate_bundle(out)
            if marker.read_text().strip() == DEMO_VERSION:  # else: trained on older simulated data
                click.echo(f"demo: reusing model bundle {out}")
                return out
    click.echo(
        f"demo: fine-tuning a small demo model on simulated data into {out} "
        f"(a {DEMO_TRAIN_MINUTES:g}-minute CPU-time training budget, plus data preparation and "
        "export; longer on a busy machine) ..."
    )
    (out / QUALITY_FILE).unlink(missing_ok=True)
    bstream = str(Path(sys.executable).with_name("bstream"))
    data = workdir / "demo" / "train.jsonl"
    data.parent.mkdir(parents=True, exist_ok=True)
    # A different seed from the replayed events, so the demo scores users the model never saw.
    steps = [
        [bstream, "simulate", "--users", str(DEMO_TRAIN_USERS), "--seed", str(DEMO_TRAIN_SEED)]
        + ["--out", str(data)],
        [bstream, "train", "--data", str(data), "--format", "jsonl", "--out", str(out)]
        + [*DEMO_TRAIN_ARGS],
    ]
    for cmd in steps:
        if subprocess.run(cmd, check=False).returncode != 0:
            raise click.ClickException(f"demo model training failed: {' '.join(cmd[1:3])}")
    marker.write_text(DEMO_VERSION + "\n")
    return out


# Bump when the simulator or DEMO_TRAIN_ARGS change: a cached demo bundle is then retrained.
DEMO_VERSION = "2"
DEMO_MARKER = "demo-version"
QUALITY_FILE = "demo-quality.json"
QUALITY_VAL = 2000  # val windows both models are scored on


def demo_quality(bundle: Path, data: Path) -> dict[str, Any]:
    """The demo model's val AUC/PR-AUC next to logistic regression's, on the same val windows.

    Both are chosen on val (early stopping; LR's C), so the comparison is like with like. Cached
    next to the bundle: it costs about as long as loading the training data.
    """
    cache = bundle / QUALITY_FILE
    with contextlib.suppress(OSError, ValueError):
        return dict(orjson.loads(cache.read_bytes()))
    from model.baselines import fit_logreg
    from model.data import load_data
    from model.evaluate import bundle_scores, features, subsample
    from model.metrics import pr_auc, roc_auc
    from model.runtime import Runtime
    from stream.simulate import simulate_events

    if not data.is_file():  # a reused bundle whose training file was deleted: same seed, same data
        data.parent.mkdir(parents=True, exist_ok=True)
        events = simulate_events(DEMO_TRAIN_USERS, DEMO_TRAIN_SEED)
        data.write_bytes(b"".join(orjson.dumps(e) + b"\n" for e in events))
    click.echo("demo: scoring the demo model and logistic regression on the same val windows ...")
    labelled = load_data(data, "jsonl")
    val = subsample(labelled.split("val"), QUALITY_VAL, seed=0)
    x_tr, y_tr = features(labelled, labelled.split("train"))
    x_va, y_va = features(labelled, val)
    p_lr = fit_logreg(x_tr, y_tr, x_va, y_va).predict(x_va)
    p_model = bundle_scores(Runtime.load(bundle, device="cpu"), labelled, val, "demo val")
    quality = {
        "val_windows": len(val),
        "val_positives": int(y_va.sum()),
        "model": {"auc": roc_auc(y_va, p_model), "pr_auc": pr_auc(y_va, p_model)},
        "logreg": {"auc": roc_auc(y_va, p_lr), "pr_auc": pr_auc(y_va, p_lr)},
    }
    cache.write_bytes(orjson.dumps(quality, option=orjson.OPT_INDENT_2))
    return quality


def quality_lines(quality: dict[str, Any]) -> list[str]:
    """Summary lines: the demo model vs logistic regression on the same val windows."""
    if not quality:
        return []
    model, lr = quality["model"], quality["logreg"]
    return [
        f"model quality on {quality['val_windows']} val windows of the demo training data "
        f"({quality['val_positives']} buy within 30 min):",
        f"  demo model           val AUC {model['auc']:.3f}  PR-AUC {model['pr_auc']:.3f}",
        f"  logistic regression  val AUC {lr['auc']:.3f}  PR-AUC {lr['pr_auc']:.3f}",
    ]


DEMO_TRAIN_MINUTES = 2.0
DEMO_TRAIN_USERS = 600
DEMO_TRAIN_SEED = 101
# First layer of all-MiniLM-L6-v2, short windows, a 2-minute budget: a real fine-tuned model
# that trains and serves fast enough for a first prediction within minutes on 2 cores.
DEMO_TRAIN_ARGS = (
    "--layers",
    "1",
    "--max-minutes",
    str(DEMO_TRAIN_MINUTES),
    "--clock",
    "cpu",  # a budget of work, not wall time: on a busy machine the model still gets its steps
    "--max-len",
    "64",
    "--max-train",
    "3000",
    "--val-size",
    "600",
    "--seed",
    "0",
)


def key_file(settings: Settings, workdir: Path) -> Path | None:
    """The HMAC key to use: the configured one, or a generated local file (printed)."""
    from stream.privacy import generate_key_file

    if settings.hmac_key is not None:
        return None
    if settings.hmac_key_file is not None:
        return settings.hmac_key_file
    path = workdir / "hmac.key"
    existed = path.exists()
    generate_key_file(path)
    note = "existing" if existed else "generated"
    click.echo(f"demo: pseudonymisation key {path} ({note}; keep it private)")
    return path


def follow(settings: Settings, live: Live, stop: threading.Event, show_every: float) -> None:
    """Consume predictions into `live`, printing a throttled sample with `bstream tail`'s format."""
    from stream.commands.tail import format_prediction
    from stream.kafka.clients import assigned_reader

    consumer = assigned_reader(settings, settings.predictions_topic, "bstream-demo")
    shown = 0.0
    try:
        while not stop.is_set():
            for message in consumer.consume(1000, 0.2):
                value = message.value()
                if message.error() or not isinstance(value, bytes):
                    continue
                prediction = orjson.loads(value)
                live.add(prediction)
                if time.monotonic() - shown >= show_every:
                    shown = time.monotonic()
                    click.echo("  " + format_prediction(prediction))
    finally:
        consumer.close()


@dataclass
class DemoInputs:
    """What the run needs: bundle, key file (None: key from settings), events file, targets."""

    bundle: Path
    keyfile: Path | None
    events_path: Path
    events: int
    newest: dict[str, int]
    quality: dict[str, Any] = field(default_factory=dict)


def prepare(base: Settings, workdir: Path, users: int, seed: int, rebuild: bool) -> DemoInputs:
    """Model bundle, key, simulated events on disk, and each user's newest event by pseudonym."""
    from stream.privacy import load_key, pseudonym
    from stream.simulate import simulate_events

    bundle = demo_bundle(workdir, rebuild)
    quality = demo_quality(bundle, workdir / "demo" / "train.jsonl")
    keyfile = key_file(base, workdir)
    key = load_key(base.model_copy(update={"hmac_key_file": keyfile}) if keyfile else base)
    assert key is not None
    events = simulate_events(users, seed)
    path = workdir / "demo" / "events.jsonl"
    path.write_bytes(b"".join(orjson.dumps(e) + b"\n" for e in events))
    newest: dict[str, int] = {}
    for event in events:
        user = pseudonym(key, event["user_id"])
        newest[user] = max(newest.get(user, 0), event["ts"])
    return DemoInputs(bundle, keyfile, path, len(events), newest, quality)


def run_loop(
    settings: Settings, inputs: DemoInputs, rate: float, deadline: float, metrics_port: int
) -> tuple[Live, int]:
    """Worker up, replay, follow predictions until every user is current; returns (live, sent)."""
    from stream.launcher import WorkerLauncher, WorkerStartError
    from stream.replay import ReplayOptions, replay_file

    run_dir = settings.data_dir.parent
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "BSTREAM_BOOTSTRAP": settings.bootstrap}
    env["BSTREAM_DATA_DIR"] = str(settings.data_dir)
    args = ["--model", str(inputs.bundle)]
    args += ["--hmac-key-file", str(inputs.keyfile)] if inputs.keyfile else []
    worker = WorkerLauncher(args, env, run_dir / "worker.log", port=metrics_port or None)
    click.echo(f"demo: starting the worker (log {worker.log_path}) ...")
    with worker:
        try:
            worker.wait_ready(WORKER_READY_TIMEOUT_S)
        except WorkerStartError as exc:
            raise click.ClickException(str(exc)) from None
        port = worker.port
        click.echo(f"demo: worker ready; metrics http://127.0.0.1:{port}/metrics  (and /health)")
        live, stop = Live(inputs.newest), threading.Event()
        tail = threading.Thread(target=follow, args=(settings, live, stop, 0.2), daemon=True)
        tail.start()
        click.echo(
            f"demo: replaying {inputs.events} events of {len(inputs.newest)} users at {rate:.0f}/s"
        )
        options = ReplayOptions(topic=settings.events_topic, rate=rate, progress=False)
        sent = replay_file(inputs.events_path, "jsonl", settings, options).sent
        while not live.done():
            if not worker.alive():
                raise click.ClickException(str(worker.died()))
            if time.monotonic() > deadline:
                raise click.ClickException(
                    f"not every user was predicted within --timeout ({len(live.latest)} of "
                    f"{len(live.newest)}; worker log {worker.log_path})"
                )
            time.sleep(0.2)
        stop.set()
        tail.join(5)
    return live, sent


@click.command(
    help="Run the whole loop locally: broker, topics, model, worker, replay, predictions."
)
@click.option("--users", type=click.IntRange(min=1), default=200, show_default=True, help="Users.")
@click.option("--seed", type=int, default=0, show_default=True, help="Simulation seed.")
@click.option(
    "--rate", type=click.FloatRange(min=1), default=2000, show_default=True, help="Events/s."
)
@click.option(
    "--workdir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path(".bstream"),
    show_default=True,
    help="Cached bundle, key and run files.",
)
@click.option("--rebuild-model", is_flag=True, help="Rebuild the demo bundle even if cached.")
@click.option(
    "--timeout",
    type=click.FloatRange(min=10),
    default=600,
    show_default=True,
    help="Seconds for the whole run.",
)
@click.option(
    "--metrics-port",
    type=click.IntRange(0, 65535),
    default=0,
    show_default=True,
    help="The worker's /metrics and /health port; 0 picks a free one.",
)
@click.option(
    "--broker-port",
    type=click.IntRange(0, 65535),
    default=0,
    show_default=True,
    help="The embedded broker's port; 0 picks a free one.",
)
def demo(
    users: int,
    seed: int,
    rate: float,
    workdir: Path,
    rebuild_model: bool,
    timeout: float,
    metrics_port: int,
    broker_port: int,
) -> None:
    from stream.commands import checks

    checks.out_dir(workdir, "--workdir")
    checks.port_free(metrics_port, "--metrics-port")
    checks.port_free(broker_port, "--broker-port")
    from stream.kafka.broker import EmbeddedBroker, free_port
    from stream.kafka.topics import create_topics, default_topics

    started = time.monotonic()
    run_dir = workdir / "demo"
    run_dir.mkdir(parents=True, exist_ok=True)
    base = Settings()
    inputs = prepare(base, workdir, users, seed, rebuild_model)
    port = broker_port or free_port()
    with EmbeddedBroker(port=port, log_path=run_dir / "broker.log") as broker:
        update = {"bootstrap": broker.bootstrap, "data_dir": run_dir / "worker-data"}
        settings = base.model_copy(update=update)
        click.echo(f"demo: embedded broker on {broker.bootstrap}; watch from another terminal with")
        click.echo(f"      bstream tail --bootstrap {broker.bootstrap}")
        create_topics(settings, default_topics(settings))
        live, sent = run_loop(settings, inputs, rate, started + timeout, metrics_port)
    click.echo("demo: every user is predicted with their newest event. Summary:")
    for line in summary_lines(live, sent, time.monotonic() - (live.first_at or started)):
        click.echo("  " + line)
    for line in quality_lines(inputs.quality):
        click.echo("  " + line)
    first = (live.first_at or started) - started
    total = time.monotonic() - started
    click.echo(f"demo: first prediction {first:.0f}s after start; all done in {total:.0f}s")
