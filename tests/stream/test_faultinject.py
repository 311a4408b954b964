"""The test-only inference fault hook: off by default; fails only windows holding the item."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pytest

from stream.faultinject import FaultInjectingModel, InjectedFault, maybe_inject
from stream.settings import Settings


class Counting:
    version = "v1"

    def __init__(self) -> None:
        self.calls = 0

    def predict(self, windows: Sequence[Sequence[Mapping[str, Any]]]) -> list[dict[str, float]]:
        self.calls += 1
        return [{"purchase": 0.5} for _ in windows]


def test_the_hook_is_off_by_default() -> None:
    model = Counting()

    assert Settings().fault_inject_item is None
    assert maybe_inject(model, Settings().fault_inject_item) is model


def test_only_batches_holding_the_item_fail_and_others_reach_the_model() -> None:
    model = Counting()
    wrapped = maybe_inject(model, "bad")

    ok = wrapped.predict([[{"item_id": "fine"}]])
    with pytest.raises(InjectedFault):
        wrapped.predict([[{"item_id": "fine"}], [{"item_id": "x"}, {"item_id": "bad"}]])

    assert isinstance(wrapped, FaultInjectingModel)
    assert ok == [{"purchase": 0.5}] and model.calls == 1
    assert wrapped.version == "v1"
