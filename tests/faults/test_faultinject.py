"""The test-only inference fault hook (tests/faults): fails only windows holding the item."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pytest

from stream.settings import Settings
from tests.faults.faultinject import FaultInjectingModel, InjectedFault, maybe_inject


class Counting:
    version = "v1"

    def __init__(self) -> None:
        self.calls = 0

    def predict(self, windows: Sequence[Sequence[Mapping[str, Any]]]) -> list[dict[str, float]]:
        self.calls += 1
        return [{"purchase": 0.5} for _ in windows]


def test_the_product_has_no_fault_switch_and_the_hook_is_off_without_an_item() -> None:
    model = Counting()

    assert not [name for name in Settings.model_fields if "fault" in name]
    assert maybe_inject(model, None) is model


def test_only_batches_holding_the_item_fail_and_others_reach_the_model() -> None:
    model = Counting()
    wrapped = maybe_inject(model, "bad")

    ok = wrapped.predict([[{"item_id": "fine"}]])
    with pytest.raises(InjectedFault):
        wrapped.predict([[{"item_id": "fine"}], [{"item_id": "x"}, {"item_id": "bad"}]])

    assert isinstance(wrapped, FaultInjectingModel)
    assert ok == [{"purchase": 0.5}] and model.calls == 1
    assert wrapped.version == "v1"
