"""Test support: make the real model call fail for batches holding one chosen item.

The product knows nothing of this. `faulty_bstream(dir)` writes a `bstream` launcher that, with
`FAULT_INJECT_ITEM=<item_id>` in its environment, wraps every runtime `Runtime.load` returns:
each inference call whose windows hold an event with that item_id raises `InjectedFault` on the
inference thread, exactly where a real runtime error would surface; every other call goes to the
real runtime unchanged. tests/faults uses it to prove that a failing batch is retried,
dead-lettered with `error.code=inference_failed`, and that the worker keeps serving other batches.

>>> class Echo:
...     version = "v"
...     def predict(self, windows): return [{"purchase": 0.5} for _ in windows]
>>> model = FaultInjectingModel(Echo(), "bad")
>>> model.predict([[{"item_id": "ok"}]])
[{'purchase': 0.5}]
>>> model.predict([[{"item_id": "bad"}]])  # doctest: +IGNORE_EXCEPTION_DETAIL
Traceback (most recent call last):
InjectedFault: injected inference fault: a window holds item_id 'bad'
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from model.runtime import Runtime
from stream.cli import main as bstream_main

ENV = "FAULT_INJECT_ITEM"
ROOT = Path(__file__).resolve().parents[2]
log = logging.getLogger("bstream.faultinject")


class InjectedFault(RuntimeError):
    """The failure raised by the test-only hook."""


class FaultInjectingModel:
    """Wraps a runtime; `predict` raises for windows holding `item_id`, else delegates."""

    def __init__(self, model: Any, item_id: str) -> None:
        self.model = model
        self.item_id = item_id

    def __getattr__(self, name: str) -> Any:
        return getattr(self.model, name)  # version, labels, device, ... of the real runtime

    def predict(self, windows: Sequence[Sequence[Mapping[str, Any]]]) -> list[dict[str, float]]:
        if any(event.get("item_id") == self.item_id for window in windows for event in window):
            raise InjectedFault(
                f"injected inference fault: a window holds item_id {self.item_id!r}"
            )
        return self.model.predict(windows)  # type: ignore[no-any-return]


def maybe_inject(model: Any, item_id: str | None) -> Any:
    """The model itself, or (when an item is given) the fault-injecting wrapper."""
    if not item_id:
        return model
    log.warning("TEST-ONLY fault injection is ON: inference fails for item_id %r", item_id)
    return FaultInjectingModel(model, item_id)


def install(item_id: str | None) -> None:
    """Make `Runtime.load` (the worker's only way to a model) return the wrapper when item_id."""
    if not item_id:
        return
    load = Runtime.load.__func__  # type: ignore[attr-defined]

    def faulty_load(cls: type[Runtime], *args: Any, **kwargs: Any) -> Any:
        return maybe_inject(load(cls, *args, **kwargs), item_id)

    Runtime.load = classmethod(faulty_load)  # type: ignore[method-assign, assignment]


def faulty_bstream(directory: Path) -> Path:
    """Write an executable `bstream` that installs the hook from $FAULT_INJECT_ITEM, then runs."""
    script = directory / "bstream-faulty"
    script.write_text(
        f"#!{sys.executable}\n"
        "import sys\n"
        f"sys.path.insert(0, {str(ROOT)!r})\n"
        "from tests.faults.faultinject import main\n"
        "main()\n"
    )
    script.chmod(0o755)
    return script


def main() -> None:
    install(os.environ.get(ENV))
    bstream_main()
