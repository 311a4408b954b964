"""The path of one event (docs/DESIGN.md): at most six logic modules, each under 300 lines.

The list below is the walk in DESIGN.md. The trace test keeps it honest both ways: every product
module whose code runs while the in-process worker (stream.testing) handles events is on the path,
at the Kafka edge, or a leaf helper; and every module on the path does run.
"""

from __future__ import annotations

import contextlib
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
EVENT_PATH = (  # in the order one event passes them
    "stream/worker.py",  # the Faust shell: take events, job queue, release, crash
    "stream/intake.py",  # record -> window item | dead letter, coalescing, next window
    "schemas/validation.py",  # decode + validate against the UserEvent schema
    "stream/windows.py",  # ordered insert, dedupe, trim
    "stream/inference.py",  # the model on its thread, retries, reasons
    "stream/outputs.py",  # prediction and DLQ records
)
MAX_MODULES, MAX_LINES = 6, 300
KAFKA_EDGE = "stream/kafka/"  # the app and agent, WindowStore, the producer hand-over
LEAVES = (  # called, never calling back: a pseudonym, a timestamp, a counter, a setting
    "stream/privacy.py",
    "stream/clock.py",
    "stream/metrics.py",
    "stream/settings.py",
)
HARNESS = ("stream/testing.py", "stream/upkeep.py", "stream/erasure.py")  # not on the path


def lines(module: str) -> int:
    return len((ROOT / module).read_text().splitlines())


def test_the_event_path_has_at_most_six_modules_each_under_300_lines() -> None:
    too_long = {m: lines(m) for m in EVENT_PATH if lines(m) >= MAX_LINES}

    assert len(EVENT_PATH) <= MAX_MODULES, EVENT_PATH
    assert not too_long, f"modules on the event path with {MAX_LINES}+ lines: {too_long}"


def test_design_walks_the_same_modules() -> None:
    design = (ROOT / "docs" / "DESIGN.md").read_text()
    walk = design[design.index("### The path of one event") :]
    walk = walk[: walk.index("\n## ")]

    assert [m for m in EVENT_PATH if f"`{m}`" not in walk] == []


@pytest.fixture(scope="module")
def runtime(tiny_bundle: Path) -> Any:
    from model.runtime import Runtime

    return Runtime.load(tiny_bundle, device="cpu")


@contextlib.contextmanager
def traced() -> Iterator[set[str]]:
    """Product modules (stream/, schemas/) whose functions are called meanwhile, in any thread."""
    files: set[str] = set()
    modules: set[str] = set()

    def profile(frame: FrameType, event: str, arg: Any) -> None:
        if event == "call":
            files.add(frame.f_code.co_filename)

    sys.setprofile(profile)
    threading.setprofile(profile)
    try:
        yield modules
    finally:
        sys.setprofile(None)
        threading.setprofile(None)  # type: ignore[arg-type]
    for name in files:
        path = Path(name)
        if path.is_relative_to(ROOT / "stream") or path.is_relative_to(ROOT / "schemas"):
            modules.add(path.relative_to(ROOT).as_posix())


def test_one_event_runs_only_through_the_listed_modules(runtime: Any) -> None:
    from stream.testing import Harness, event

    harness = Harness(runtime)
    with traced() as modules:
        out = harness.run([event("a", 1), b"{not json", event("a", 2), event("b", 3)])
    harness.close()

    assert len(out.predictions) == 2 and len(out.dead_letters) == 1
    allowed = set(EVENT_PATH) | set(LEAVES) | set(HARNESS)
    others = {m for m in modules - allowed if not m.startswith(KAFKA_EDGE)}
    assert others == set(), "modules on the event path that the walk does not list"
    assert set(EVENT_PATH) - modules == set(), "listed modules the event did not pass"
