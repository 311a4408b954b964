"""`bstream demo` (what `make demo` runs): the whole loop on this machine, then a summary.

Embedded broker -> topics -> demo bundle (cached) -> HMAC key -> worker subprocess -> simulated
events replayed -> live predictions -> summary once every user is predicted; all children stopped.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
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
    if not rebuild:
        with contextlib.suppress(BundleError, OSError):
            validate_bundle(out)
            click.echo(f"demo: reusing model bundle {out}")
            return out
    click.echo(f"demo: fine-tuning a small demo model on simulated data into {out} (~2-3 min) ...")
    bstream = str(Path(sys.executable).with_name("bstream"))
    data = workdir / "demo" / "train.jsonl"
    data.parent.mkdir(parents=True, exist_ok=True)
    # A different seed from the replayed events, so the demo scores users the model never saw.
    steps = [
        [bstream, "simulate", "--users", "600", "--seed", "101", "--out", str(data)],
        [bstream, "train", "--data", str(data), "--format", "jsonl", "--out", str(out)]
        + [*DEMO_TRAIN_ARGS],
    ]
    for cmd in steps:
        if subprocess.run(cmd, check=False).returncode != 0:
            raise click.ClickException(f"demo model training failed: {' '.join(cmd[1:3])}")
    return out


# First layer of all-MiniLM-L6-v2, short windows, a 2-minute budget: a real fine-tuned model
# that trains and serves fast enough for a first prediction within minutes on 2 cores.
DEMO_TRAIN_ARGS = (
    "--layers",
    "1",
    "--max-minutes",
    "2",
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


@contextlib.contextmanager
def worker_process(
    env: dict[str, str], args: list[str], log_path: Path
) -> Iterator[subprocess.Popen[bytes]]:
    """`bstream worker` as a child; SIGTERM (then SIGKILL) on the way out."""
    cmd = [sys.executable, "-c", "from stream.cli import main; main()", "worker", *args]
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def wait_healthy(proc: subprocess.Popen[bytes], port: int, log_path: Path) -> None:
    """Block until the worker's /health is 200; a one-line error if it dies or takes too long."""
    deadline = time.monotonic() + WORKER_READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = log_path.read_text(errors="replace").strip().splitlines()[-1:] or ["(no output)"]
            raise click.ClickException(
                f"worker exited with {proc.returncode}: {tail[0]} (log {log_path})"
            )
        url = f"http://127.0.0.1:{port}/health"
        with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=2) as resp:
            if resp.status == 200:
                return
        time.sleep(0.5)
    raise click.ClickException(
        f"worker not ready after {WORKER_READY_TIMEOUT_S:.0f}s (log {log_path})"
    )


def follow(settings: Settings, live: Live, stop: threading.Event, show_every: float) -> None:
    """Consume predictions into `live`, printing a throttled sample with `bstream tail`'s format."""
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

    from stream.commands.tail import format_prediction
    from stream.kafka import client_config

    topic = settings.predictions_topic
    consumer = Consumer(
        {**client_config(settings), "group.id": "bstream-demo", "enable.auto.commit": False}
    )
    partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
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


def _free_or(port: int) -> int:
    from stream.broker import _port_open, free_port

    return free_port() if _port_open("127.0.0.1", port) else port


@dataclass
class DemoInputs:
    """What the run needs: bundle, key file (None: key from settings), events file, targets."""

    bundle: Path
    keyfile: Path | None
    events_path: Path
    events: int
    newest: dict[str, int]


def prepare(base: Settings, workdir: Path, users: int, seed: int, rebuild: bool) -> DemoInputs:
    """Model bundle, key, simulated events on disk, and each user's newest event by pseudonym."""
    from stream.privacy import load_key, pseudonym
    from stream.simulate import simulate_events

    bundle = demo_bundle(workdir, rebuild)
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
    return DemoInputs(bundle, keyfile, path, len(events), newest)


def run_loop(
    settings: Settings, inputs: DemoInputs, rate: float, deadline: float
) -> tuple[Live, int]:
    """Worker up, replay, follow predictions until every user is current; returns (live, sent)."""
    from stream.broker import free_port
    from stream.replay import ReplayOptions, replay_file

    run_dir = settings.data_dir.parent
    port = _free_or(settings.metrics_port) if settings.metrics_port else free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "BSTREAM_BOOTSTRAP": settings.bootstrap}
    env["BSTREAM_DATA_DIR"] = str(settings.data_dir)
    args = ["--model", str(inputs.bundle), "--metrics-port", str(port)]
    args += ["--hmac-key-file", str(inputs.keyfile)] if inputs.keyfile else []
    log_path = run_dir / "worker.log"
    click.echo(f"demo: starting the worker (log {log_path}) ...")
    with worker_process(env, args, log_path) as proc:
        wait_healthy(proc, port, log_path)
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
            if proc.poll() is not None:
                raise click.ClickException(f"worker exited with {proc.returncode} (log {log_path})")
            if time.monotonic() > deadline:
                raise click.ClickException("not every user was predicted before the timeout")
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
    "--timeout", type=click.FloatRange(min=10), default=600, show_default=True, help="Seconds."
)
def demo(
    users: int, seed: int, rate: float, workdir: Path, rebuild_model: bool, timeout: float
) -> None:
    from stream.broker import EmbeddedBroker
    from stream.topics import create_topics, default_topics

    started = time.monotonic()
    run_dir = workdir / "demo"
    run_dir.mkdir(parents=True, exist_ok=True)
    base = Settings()
    inputs = prepare(base, workdir, users, seed, rebuild_model)
    with EmbeddedBroker(port=_free_or(9092), log_path=run_dir / "broker.log") as broker:
        update = {"bootstrap": broker.bootstrap, "data_dir": run_dir / "worker-data"}
        settings = base.model_copy(update=update)
        click.echo(f"demo: embedded broker on {broker.bootstrap}; watch from another terminal with")
        click.echo(f"      bstream tail --bootstrap {broker.bootstrap}")
        create_topics(settings, default_topics(settings))
        live, sent = run_loop(settings, inputs, rate, started + timeout)
    click.echo("demo: every user is predicted with their newest event. Summary:")
    for line in summary_lines(live, sent, time.monotonic() - (live.first_at or started)):
        click.echo("  " + line)
    first = (live.first_at or started) - started
    total = time.monotonic() - started
    click.echo(f"demo: first prediction {first:.0f}s after start; all done in {total:.0f}s")
