"""Tracing to TorchScript and the synthetic batches it runs on (shared by export and runtime)."""

from __future__ import annotations

import warnings

import torch
from torch import nn

from model.fusion import FusionConfig, synthetic_extra

Batch = tuple[torch.Tensor, ...]  # input_ids, attention_mask[, features][, ngrams]


def synthetic_batch(
    vocab_size: int, batch: int, length: int, seed: int, cls_id: int = 101
) -> Batch:
    """Random token ids with rows of different true lengths (row 0 full, others padded)."""
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(999, vocab_size, (batch, length), generator=gen)
    ids[:, 0] = cls_id
    mask = torch.ones(batch, length, dtype=torch.long)
    for row in range(1, batch):
        true_len = max(2, length * (batch - row) // (batch + 1))
        mask[row, true_len:] = 0
        ids[row, true_len:] = 0
    return ids, mask


def trace(module: nn.Module, example: Batch) -> torch.jit.ScriptModule:
    """Trace `module` (eval mode, no grad) on an example that includes padding."""
    module.eval()
    # HF warns about shape-dependent Python branches; the parity check is what proves the trace.
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        traced = torch.jit.trace(module, example, check_trace=False)
    return traced


def with_extra(batch: Batch, fusion: FusionConfig | None, seed: int) -> Batch:
    """A synthetic batch plus synthetic fused inputs when the model is fused."""
    if fusion is None:
        return batch
    extra = synthetic_extra(fusion, batch[0].size(0), seed)
    return (*batch, *(torch.from_numpy(x) for x in extra))
