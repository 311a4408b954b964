"""`bstream broker`: run the embedded broker (Tansu) in the foreground until SIGINT/SIGTERM."""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from types import FrameType

import click

from stream.commands import checks
from stream.commands.common import env_default, load_settings
from stream.kafka.broker import BrokerError, EmbeddedBroker


def _default_host_port() -> tuple[str, int]:
    host, _, port = load_settings().bootstrap.split(",")[0].rpartition(":")
    try:
        return host or "127.0.0.1", int(port)
    except ValueError:
        return "127.0.0.1", 9092


@click.command(help="Run the embedded Kafka-compatible broker (Tansu) in the foreground.")
@click.option(
    "--host",
    default=None,
    help=f"Listen address  {env_default('bootstrap', '127.0.0.1')} (its host)",
)
@click.option(
    "--port",
    type=click.IntRange(1, 65535),
    default=None,
    help=f"Listen port  {env_default('bootstrap', 9092)} (its port)",
)
@click.option(
    "--log",
    "log_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Broker log file  [default: none]",
)
def broker(host: str | None, port: int | None, log_path: Path | None) -> None:
    default_host, default_port = _default_host_port()
    checks.host(default_host if host is None else host, "--host")
    if log_path is not None:
        checks.log_file(log_path, "--log")
    stop = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        stop.set()

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, on_signal)
    running = EmbeddedBroker(host or default_host, port or default_port, log_path=log_path)
    try:
        running.start()
    except (BrokerError, OSError) as exc:
        raise click.ClickException(str(exc).splitlines()[0]) from None
    try:
        click.echo(f"broker ready on {running.bootstrap} (bootstrap={running.bootstrap})")
        while not stop.wait(0.5):
            process = running.process
            if process is None or process.poll() is not None:
                code = None if process is None else process.returncode
                raise click.ClickException(f"broker exited unexpectedly (code {code})")
    finally:
        running.stop()
    click.echo("broker stopped")
