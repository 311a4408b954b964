"""Load a bundle and predict label probabilities for user windows (the worker's only model API).

>>> rt = Runtime.load("bundle/", device="auto")  # doctest: +SKIP
>>> rt.predict([[{"event_type": "cart", "ts": 1700000000000, "item_id": "7"}]]) # doctest: +SKIP
[{'purchase': 0.31}]
"""

from __future__ import annotations

import contextlib
import logging
import threading
import warnings
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from model.bundle import (
    MODEL_FILE,
    SERVING_TOKENIZER,
    TOKENIZER_DIR,
    BundleError,
    BundleMeta,
    validate_bundle,
)
from model.encoding import (
    Encoded,
    Encoder,
    EncodingConfig,
    bucket_for,
    load_serving_tokenizer,
    load_tokenizer,
)
from model.fusion import FusionConfig, extra_inputs, synthetic_extra, with_fusion
from model.tracing import synthetic_batch, trace, with_extra

if TYPE_CHECKING:
    from model.model import BehaviorBert

__all__ = ["BundleError", "Runtime", "load_tokenizer"]

log = logging.getLogger(__name__)
MAX_CHUNK = 128  # rows per model call on a CPU; larger batches are split
GPU_CHUNK = 1024  # rows per model call on a GPU (BSTREAM_MODEL_CHUNK; `bstream bench-gpu` curve)


def resolve_device(device: str) -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device not in ("cpu", "cuda"):
        raise ValueError(f"unknown device {device!r}; choose auto, cpu or cuda")
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("device cuda requested but no CUDA GPU is available")
    return device


def fusion_of(meta: BundleMeta) -> FusionConfig | None:
    """The bundle's late-fusion inputs (None: a plain or pre-fusion bundle, or an ensemble)."""
    fusion = meta.model.get("fusion")
    return FusionConfig.from_dict(fusion) if fusion else None


def serving_tokenizer(bundle_dir: Path, meta: BundleMeta) -> Any:
    """`tokenizers` alone when export checked it gives training's ids; else transformers'."""
    if meta.extensions.get(SERVING_TOKENIZER) == "tokenizers":
        return load_serving_tokenizer(bundle_dir / TOKENIZER_DIR)
    log.info(
        "bundle %s predates the serving tokenizer check: loading transformers (seconds slower "
        "to start; `bstream export` re-exports it with the check)",
        meta.version,
    )
    return load_tokenizer(bundle_dir / TOKENIZER_DIR)


def eager_from_script(script: torch.jit.ScriptModule, meta: BundleMeta) -> BehaviorBert:
    """Rebuild the eager model from the weights inside model.ts (keys are 'model.<...>')."""
    # Lazy, like eager_probabilities: model.model imports transformers, which the plain CPU
    # serving path (TorchScript + tokenizers) never needs and which takes seconds to import.
    from model.model import BehaviorBert, ModelConfig

    state = {k.removeprefix("model."): v for k, v in script.state_dict().items()}
    return BehaviorBert.from_state(ModelConfig.from_dict(meta.model), state)


def eager_probabilities(script: torch.jit.ScriptModule, meta: BundleMeta) -> nn.Module:
    """The eager probabilities module behind model.ts: one model, or an ensemble's mean."""
    from model.ensemble import eager_ensemble
    from model.model import Probabilities

    if "members" in meta.model:
        return eager_ensemble(script, meta)
    return Probabilities(eager_from_script(script, meta))


class Runtime:
    """A loaded bundle: encoder + model on one device. predict() is thread-safe."""

    def __init__(
        self, module: nn.Module, encoder: Encoder, meta: BundleMeta, device: str, dtype: torch.dtype
    ) -> None:
        self.module = module
        self.encoder = encoder
        self.meta = meta
        self.version: str = meta.version
        self.labels: list[str] = list(meta.labels)
        self.max_len: int = meta.max_len
        self.device: str = device
        self.dtype = dtype
        self.buckets = encoder.cfg.length_buckets()
        self.chunk_rows = GPU_CHUNK if device == "cuda" else MAX_CHUNK
        self.fusion = fusion_of(meta)
        self._lock = threading.Lock()

    @classmethod
    def load(
        cls,
        bundle_dir: Path | str,
        device: str = "auto",
        quantize: bool = False,
        chunk_rows: int | None = None,
    ) -> Runtime:
        """Validate and load a bundle; BundleError if missing, corrupt or of another version."""
        bundle_dir = Path(bundle_dir)
        meta = validate_bundle(bundle_dir)
        device = resolve_device(device)
        try:
            encoding = EncodingConfig.from_dict(meta.encoding)
            tokenizer = serving_tokenizer(bundle_dir, meta)
            script = torch.jit.load(str(bundle_dir / MODEL_FILE), map_location="cpu")
        except (OSError, RuntimeError, ValueError, TypeError) as exc:
            raise BundleError(f"corrupt bundle {bundle_dir}: {str(exc).splitlines()[0]}") from exc
        encoder = Encoder(tokenizer, encoding)
        dtype = torch.float32
        module: nn.Module = script
        if device == "cuda":
            dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
            module = cls._cuda_module(script, meta, encoding, dtype)
        elif quantize:
            module = cls._int8_module(script, meta)
        runtime = cls(module.eval(), encoder, meta, device, dtype)
        runtime.chunk_rows = chunk_rows or runtime.chunk_rows
        try:
            runtime.warm_up()
        except (KeyError, TypeError, ValueError, RuntimeError) as exc:
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise BundleError(
                f"corrupt bundle {bundle_dir}: the model does not run: {reason}"
            ) from exc
        return runtime

    @staticmethod
    def _cuda_module(
        script: torch.jit.ScriptModule,
        meta: BundleMeta,
        encoding: EncodingConfig,
        dtype: torch.dtype,
    ) -> nn.Module:
        # Re-trace on the GPU in half precision so no fp32 constant from the CPU trace leaks in.
        eager = eager_probabilities(script, meta).to(device="cuda", dtype=dtype)
        batch = synthetic_batch(int(meta.model["bert"]["vocab_size"]), 2, 16, seed=0)
        batch = with_extra(batch, fusion_of(meta), seed=0)
        return trace(eager, tuple(x.cuda() for x in batch))

    @staticmethod
    def _int8_module(script: torch.jit.ScriptModule, meta: BundleMeta) -> nn.Module:
        eager = eager_probabilities(script, meta)
        with warnings.catch_warnings():  # torch deprecates quantized tensors in favour of torchao
            warnings.simplefilter("ignore", UserWarning)
            if fusion_of(meta) is not None:  # int8 only in the encoder: the fused linear parts
                # read raw feature scales and lost 0.12 AUC when quantized (bench-model)
                bert = eager.model.bert  # type: ignore[union-attr]
                eager.model.bert = torch.ao.quantization.quantize_dynamic(  # type: ignore[union-attr]
                    bert, {nn.Linear}, dtype=torch.qint8
                )
                return eager
            return torch.ao.quantization.quantize_dynamic(eager, {nn.Linear}, dtype=torch.qint8)

    def encode(self, windows: Sequence[Sequence[Mapping[str, Any]]]) -> list[Encoded]:
        """Token ids per window; fused bundles also get the window's features and n-grams."""
        encoded = [self.encoder.encode(window) for window in windows]
        if self.fusion is None:
            return encoded
        cfg = self.encoder.cfg
        return [with_fusion(w, e, cfg, self.fusion) for w, e in zip(windows, encoded, strict=True)]

    def predict(self, windows: Sequence[Sequence[Mapping[str, Any]]]) -> list[dict[str, float]]:
        """One {label: probability} per window (events newest last)."""
        # On a GPU, launches return at once: slice k+1 is tokenised and padded on the CPU while
        # slice k runs, so encoding does not starve the GPU. On a CPU one slice is the whole batch.
        step = self.chunk_rows if self.device == "cuda" else max(1, len(windows))
        launched = [
            self._launch_encoded(self.encode(windows[start : start + step]))
            for start in range(0, len(windows), step)
        ]
        probs = [row for slice_ in launched for row in self._collect(*slice_)]
        return [dict(zip(self.labels, map(float, row), strict=True)) for row in probs]

    def predict_encoded(self, encoded: Sequence[Encoded]) -> list[list[float]]:
        """Probabilities per encoded window; grouped by length bucket (short stays cheap)."""
        return self._collect(*self._launch_encoded(encoded))

    def _launch_encoded(
        self, encoded: Sequence[Encoded]
    ) -> tuple[int, list[tuple[list[int], torch.Tensor]]]:
        """Start the model on every chunk (bucketed by length); the outputs may still be running."""
        groups: dict[int, list[int]] = defaultdict(list)
        for i, enc in enumerate(encoded):
            groups[bucket_for(len(enc.input_ids), self.buckets)].append(i)
        pending = []
        for length, rows in sorted(groups.items()):
            for start in range(0, len(rows), self.chunk_rows):
                chunk = rows[start : start + self.chunk_rows]
                rows_enc = [encoded[i] for i in chunk]
                ids, mask = self.encoder.pad(rows_enc, length)
                extra = extra_inputs(rows_enc, self.fusion) if self.fusion else []
                pending.append((chunk, self._launch(ids, mask, extra)))
        return len(encoded), pending

    @staticmethod
    def _collect(n: int, pending: list[tuple[list[int], torch.Tensor]]) -> list[list[float]]:
        """Wait for the launched chunks; rows back in input order."""
        out: list[list[float]] = [[] for _ in range(n)]
        for chunk, probs in pending:
            for i, row in zip(chunk, probs.float().cpu().tolist(), strict=True):
                out[i] = row
        return out

    def _launch(
        self, ids: list[list[int]], mask: list[list[int]], extra: Sequence[Any] = ()
    ) -> torch.Tensor:
        inputs = [
            torch.tensor(ids, dtype=torch.long),
            torch.tensor(mask, dtype=torch.long),
            *(torch.as_tensor(x) for x in extra),
        ]
        if self.device == "cuda":  # pinned host memory: the copy is async, the CPU moves on
            inputs = [x.pin_memory().to(self.device, non_blocking=True) for x in inputs]
        # TorchScript inference is re-entrant: CPU calls on slices of one batch run at once
        # (stream/threads.py, SlicedRunner); GPU launches keep one order.
        lock = self._lock if self.device == "cuda" else contextlib.nullcontext()
        with lock, torch.inference_mode():
            return self.module(*inputs)  # type: ignore[no-any-return]

    def _run(
        self, ids: list[list[int]], mask: list[list[int]], extra: Sequence[Any] = ()
    ) -> list[list[float]]:
        return self._launch(ids, mask, extra).float().cpu().tolist()  # type: ignore[no-any-return]

    def warm_up(self, rounds: int = 2) -> None:
        """Run every length bucket a couple of times so the first real batch is not slow."""
        for length in self.buckets:
            ids, mask = synthetic_batch(
                int(self.meta.model["bert"]["vocab_size"]), 2, length, seed=length
            )
            extra = synthetic_extra(self.fusion, 2, seed=length) if self.fusion else []
            for _ in range(rounds):
                probs = self._run(ids.tolist(), mask.tolist(), extra)
            if len(probs[0]) != len(self.labels):
                raise BundleError(
                    f"corrupt bundle: the model gives {len(probs[0])} scores per window but "
                    f"bundle.json names {len(self.labels)} labels"
                )
