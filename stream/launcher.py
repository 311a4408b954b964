"""`bstream worker` as a child process: one launcher for the demo, the bench and the tests.

It starts the worker with its log in a file, a metrics port and an instance id (passed as
BSTREAM_INSTANCE_ID). Readiness means: /health answers 200 *with that instance id*, so another
process on the same port can never pass for our worker. When the worker dies, the error is the
worker's own last `Error: ...` line, not only the log path.
"""

from __future__ import annotations

import contextlib
import ctypes
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from types import TracebackType

import orjson

from stream.kafka.broker import free_port

BSTREAM = Path(sys.executable).parent / "bstream"


class WorkerStartError(RuntimeError):
    """The worker died or never became ready; the message is one line with the reason."""


def worker_command() -> list[str]:
    """How to run `bstream` with this interpreter (the console script when it is installed)."""
    if BSTREAM.is_file():
        return [str(BSTREAM)]
    code = "import sys; from stream.cli import main; sys.argv[0] = 'bstream'; main()"
    return [sys.executable, "-c", code]


def last_error_line(text: str) -> str:
    """The most telling line of a worker log: its last `Error: ...` line, else its last line."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("Error:")]
    if errors:
        return errors[-1]
    return lines[-1] if lines else "(empty log)"


def _die_with_parent() -> None:
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6").prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


class WorkerLauncher:
    """One `bstream worker` subprocess: start, wait for *its* /health, read its log, stop."""

    def __init__(
        self, args: list[str], env: dict[str, str], log_path: Path, port: int | None = None
    ) -> None:
        self.args, self.log_path = list(args), log_path
        self.port = port or free_port()
        self.instance_id = uuid.uuid4().hex
        self.env = {**env, "BSTREAM_INSTANCE_ID": self.instance_id}
        self.proc: subprocess.Popen[bytes] | None = None
        self.foreign_health = False  # something else answered /health on our port

    def start(self) -> WorkerLauncher:
        cmd = [*worker_command(), "worker", "--metrics-port", str(self.port), *self.args]
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                cmd,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=_die_with_parent,
            )
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def last_error_line(self) -> str:
        return last_error_line(self.log())

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def get(self, path: str, timeout: float = 5.0) -> tuple[int, str]:
        """(status, body) of GET http://127.0.0.1:PORT/path; OSError when nothing answers."""
        url = f"http://127.0.0.1:{self.port}{path}"
        try:
            with urllib.request.urlopen(url, timeout=timeout) as resp:
                return resp.status, resp.read().decode(errors="replace")
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode(errors="replace")

    def is_ours(self, body: str) -> bool:
        """Whether a /health body comes from the process this launcher started."""
        try:
            health = orjson.loads(body)
        except orjson.JSONDecodeError:
            return False
        return isinstance(health, dict) and health.get("instance_id") == self.instance_id

    def died(self) -> WorkerStartError:
        assert self.proc is not None
        other = f"; another process answers /health on port {self.port}" * self.foreign_health
        return WorkerStartError(
            f"worker exited with {self.proc.returncode}: {self.last_error_line()}{other} "
            f"(log {self.log_path})"
        )

    def wait_ready(self, timeout: float = 180.0, poll: float = 0.3) -> WorkerLauncher:
        """Block until our worker's /health is 200; WorkerStartError if it dies or stalls."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                raise self.died()
            with contextlib.suppress(OSError):
                status, body = self.get("/health", timeout=2.0)
                if self.is_ours(body):
                    if status == 200:
                        return self
                else:
                    self.foreign_health = True
            time.sleep(poll)
        other = (
            f"; another process answers /health on port {self.port}" if self.foreign_health else ""
        )
        raise WorkerStartError(
            f"worker not ready after {timeout:.0f}s{other}: {self.last_error_line()} "
            f"(log {self.log_path})"
        )

    def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM, then SIGKILL if it does not stop in time; returns the exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def __enter__(self) -> WorkerLauncher:
        return self.start()

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
