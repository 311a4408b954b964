"""TEST-ONLY fault injection: make the real model call fail for batches holding one chosen item.

Off by default. `BSTREAM_FAULT_INJECT_ITEM=<item_id>` makes every inference call whose windows
contain an event with that item_id raise `InjectedFault` inside the inference thread, exactly
where a real runtime error would surface; every other call goes to the real runtime unchanged.
tests/faults uses it to prove that a failing batch is retried, dead-lettered with
`error.code=inference_failed`, and that the worker keeps serving other batches.

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
from collections.abc import Mapping, Sequence
from typing import Any

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
    """The model itself, or (when the test-only setting is on) the fault-injecting wrapper."""
    if not item_id:
        return model
    log.warning("TEST-ONLY fault injection is ON: inference fails for item_id %r", item_id)
    return FaultInjectingModel(model, item_id)
