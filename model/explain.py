"""Per-prediction reasons: which events of a window pushed its score up or down, from the model.

Two methods, both batched over many windows:
- `occlusion` (default): drop each encoded event in turn, re-encode, score every variant in a few
  batched forward passes; weight = score(full) - score(without the event). Needs no gradients, so
  it runs on any bundle's TorchScript runtime (CPU, CUDA, int8).
- `ig`: Integrated Gradients (captum) over the word embeddings of the eager model, baseline = [PAD]
  at every event token, token attributions summed per event through the token -> event map.

Weights are in probability units of one label (default: the first, "purchase").

>>> top_reasons([{"event_type": "cart", "item_id": "7"}], {0: 0.2}, k=3)
[{'event_index': 0, 'event_type': 'cart', 'item_id': '7', 'weight': 0.2}]
"""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from model.encoding import Encoded, bucket_for
from model.extras import require_extra
from model.model import Probabilities
from model.runtime import Runtime, eager_from_script

Event = Mapping[str, Any]
Window = Sequence[Event]
Reason = dict[str, Any]
Weights = dict[int, float]  # event index in the window (oldest = 0) -> signed weight
METHODS = ("occlusion", "ig")
IG_CHUNK = 8  # windows per IG call; each becomes n_steps model rows


def kept_events(encoded: Encoded) -> list[int]:
    """Window indices of the events that made it into the model input (after truncation)."""
    return sorted({i for i in encoded.event_index if i >= 0})


def without(window: Window, index: int) -> list[Event]:
    """The window with event `index` left out (a new list; the window is not changed)."""
    return [event for i, event in enumerate(window) if i != index]


def occlusion_weights(full: float, variants: Sequence[float], indices: Sequence[int]) -> Weights:
    """weight_i = score(full window) - score(window without event i)."""
    return {i: full - s for i, s in zip(indices, variants, strict=True)}


def aggregate_tokens(token_weights: Sequence[float], event_index: Sequence[int]) -> Weights:
    """Sum token weights per event through the token -> event map; special tokens (-1) dropped."""
    out: dict[int, float] = defaultdict(float)
    for weight, index in zip(token_weights, event_index, strict=False):
        if index >= 0:
            out[index] += float(weight)
    return dict(out)


def top_reasons(window: Window, weights: Mapping[int, float], k: int) -> list[Reason]:
    """The k events with the largest |weight| (ties: newer first), as Prediction v1 `reasons`."""
    order = sorted(weights, key=lambda i: (-abs(weights[i]), -i))[: max(0, k)]
    return [
        {
            "event_index": i,
            "event_type": str(window[i]["event_type"]),
            "item_id": str(window[i]["item_id"]),
            "weight": round(float(weights[i]), 6),
        }
        for i in order
    ]


def _label_score(score: float | Mapping[str, float], label: str) -> float:
    return float(score[label]) if isinstance(score, Mapping) else float(score)


class Explainer:
    """Reasons for a batch of windows from a loaded runtime; thread-safe like the runtime."""

    def __init__(
        self,
        runtime: Runtime,
        method: str = "occlusion",
        label: str | None = None,
        ig_steps: int = 16,
    ) -> None:
        if method not in METHODS:
            raise ValueError(
                f"unknown explain method {method!r}; choose one of {', '.join(METHODS)}"
            )
        if method == "ig":
            require_extra("explain", "explain method 'ig'")
        self.runtime = runtime
        self.method = method
        self.label = label or runtime.labels[0]
        if self.label not in runtime.labels:
            raise ValueError(f"label {self.label!r} not in the bundle's labels {runtime.labels}")
        self.target = runtime.labels.index(self.label)
        self.ig_steps = ig_steps
        self._eager: torch.nn.Module | None = None
        self._ig_lock = threading.Lock()  # captum hooks the shared embedding layer per call

    def explain(
        self,
        windows: Sequence[Window],
        scores: Sequence[float | Mapping[str, float]] | None = None,
        top_k: int = 3,
    ) -> list[list[Reason]]:
        """Top-k signed reasons per window; `scores` (from predict) saves occlusion a pass."""
        weights = self.weights(windows, scores)
        return [top_reasons(w, ws, top_k) for w, ws in zip(windows, weights, strict=True)]

    def weights(
        self, windows: Sequence[Window], scores: Sequence[float | Mapping[str, float]] | None = None
    ) -> list[Weights]:
        """Signed weight of every encoded event, per window."""
        if not windows:
            return []
        if self.method == "ig":
            with self._ig_lock:
                return self._ig(windows)
        full = None if scores is None else [_label_score(s, self.label) for s in scores]
        return self._occlusion(windows, full)

    def _occlusion(self, windows: Sequence[Window], full: list[float] | None) -> list[Weights]:
        encoded = self.runtime.encode(windows)
        kept = [kept_events(enc) for enc in encoded]
        variants = [without(w, i) for w, idx in zip(windows, kept, strict=True) for i in idx]
        rows = self.runtime.encode(variants)
        if full is None:
            rows = list(encoded) + rows
        probs = [p[self.target] for p in self.runtime.predict_encoded(rows)]
        if full is None:
            full, probs = probs[: len(windows)], probs[len(windows) :]
        out, start = [], 0
        for base, idx in zip(full, kept, strict=True):
            out.append(occlusion_weights(base, probs[start : start + len(idx)], idx))
            start += len(idx)
        return out

    def eager(self) -> torch.nn.Module:
        """The fp32 eager model (rebuilt from the runtime's TorchScript weights) for gradients."""
        if self._eager is None:
            module = self.runtime.module
            if not isinstance(module, torch.jit.ScriptModule):
                raise ValueError("ig needs a TorchScript (not int8) runtime; use occlusion")
            if "members" in self.runtime.meta.model:
                raise ValueError("ig does not support ensemble bundles yet; use occlusion")
            model = eager_from_script(module, self.runtime.meta).float()
            self._eager = Probabilities(model).to(self.runtime.device).eval()
        return self._eager

    def _ig(self, windows: Sequence[Window]) -> list[Weights]:
        # Lazy: captum is the optional [explain] extra; occlusion runs without it.
        from captum.attr import LayerIntegratedGradients

        model = self.eager()
        layer = model.model.bert.embeddings.word_embeddings  # type: ignore[union-attr]
        lig = LayerIntegratedGradients(model, layer)
        encoded = self.runtime.encode(windows)
        out: list[Weights] = []
        for start in range(0, len(encoded), IG_CHUNK):
            out += self._ig_chunk(lig, encoded[start : start + IG_CHUNK])
        return out

    def _ig_chunk(self, lig: Any, encoded: Sequence[Encoded]) -> list[Weights]:
        encoder, device = self.runtime.encoder, self.runtime.device
        length = bucket_for(max(len(e.input_ids) for e in encoded), self.runtime.buckets)
        ids, mask = encoder.pad(encoded, length)
        event_index = [e.event_index + [-1] * (length - len(e.event_index)) for e in encoded]
        input_ids = torch.tensor(ids, device=device)
        attention = torch.tensor(mask, device=device)
        is_event = torch.tensor(event_index, device=device) >= 0
        baseline = torch.where(is_event, torch.full_like(input_ids, encoder.pad_id), input_ids)
        attr = lig.attribute(
            input_ids,
            baselines=baseline,
            additional_forward_args=(attention,),
            target=self.target,
            n_steps=self.ig_steps,
            internal_batch_size=len(encoded) * self.ig_steps,
        )
        per_token = attr.sum(-1).detach().float().cpu().tolist()
        return [aggregate_tokens(t, e.event_index) for t, e in zip(per_token, encoded, strict=True)]
