"""The model file: pooling variants, causal attention, and trace parity for each."""

from __future__ import annotations

import pytest
import torch

from model.export import checked_trace, synthetic_batch
from model.model import BehaviorBert, ModelConfig
from model.tiny import tiny_bert_config


def tiny(**kw: object) -> BehaviorBert:
    torch.manual_seed(0)
    return BehaviorBert(ModelConfig(bert=tiny_bert_config(30522, 64), **kw)).eval()  # type: ignore[arg-type]


@pytest.mark.parametrize(("pooling", "causal"), [("mean", False), ("cls", False), ("last", True)])
def test_every_variant_traces_with_parity(pooling: str, causal: bool) -> None:
    _, diff = checked_trace(tiny(pooling=pooling, causal=causal), 30522, (16, 32, 64))

    assert diff < 1e-4


def test_padding_does_not_change_a_windows_logits() -> None:
    model = tiny()
    ids, mask = synthetic_batch(30522, 1, 10, seed=1)
    padded_ids = torch.cat([ids, torch.zeros(1, 6, dtype=torch.long)], 1)
    padded_mask = torch.cat([mask, torch.zeros(1, 6, dtype=torch.long)], 1)

    with torch.no_grad():
        assert torch.allclose(model(ids, mask), model(padded_ids, padded_mask), atol=1e-5)


def test_causal_positions_ignore_later_tokens_and_match_window_logits() -> None:
    model = tiny(causal=True, pooling="last")
    ids, mask = synthetic_batch(30522, 1, 12, seed=2)
    changed = ids.clone()
    changed[0, 8:] = 1234
    at = torch.tensor([[5, 10]])

    with torch.no_grad():
        before, after = (
            model.forward_positions(ids, mask, at),
            model.forward_positions(changed, mask, at),
        )
        window = model(ids, mask)

    assert torch.allclose(before[0, 0], after[0, 0], atol=1e-6)  # position 5 never sees tokens 8+
    assert not torch.allclose(before[0, 1], after[0, 1], atol=1e-3)
    assert torch.allclose(window, before[:, 1], atol=1e-6)  # token 10 is the one before [SEP]
