"""TorchScript export with a parity check against eager; a failing bundle is never written."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
from torch import nn

from model.bundle import (
    CHECKPOINT_FILE,
    META_FILE,
    METRICS_FILE,
    MODEL_FILE,
    PLOTS_DIR,
    SERVING_TOKENIZER,
    TOKENIZER_DIR,
    BundleMeta,
    read_meta,
    sha256_file,
    write_meta,
)
from model.encoding import EncodingConfig, load_serving_tokenizer, load_tokenizer, probe_texts
from model.fusion import FusionConfig
from model.model import BehaviorBert, ModelConfig, Probabilities
from model.tracing import Batch, synthetic_batch, trace, with_extra

PARITY_TOL = 1e-4


class ExportError(Exception):
    """The traced model disagrees with eager (or cannot be traced); nothing was written."""


def parity_batches(
    vocab_size: int, lengths: Sequence[int], seed: int = 1, fusion: FusionConfig | None = None
) -> list[Batch]:
    """Held-out check inputs: each padding length, several batch sizes, not the trace input."""
    return [
        with_extra(synthetic_batch(vocab_size, 3 + i % 3, n, seed + i), fusion, seed + i)
        for i, n in enumerate(lengths)
    ]


def max_parity_diff(scripted: nn.Module, eager: nn.Module, batches: Sequence[Batch]) -> float:
    """max |p_scripted - p_eager| over the batches."""
    eager.eval()
    worst = 0.0
    with torch.no_grad():
        for batch in batches:
            worst = max(worst, float((scripted(*batch) - eager(*batch)).abs().max()))
    return worst


def checked_trace(
    model: nn.Module, vocab_size: int, lengths: Sequence[int], fusion: FusionConfig | None = None
) -> tuple[torch.jit.ScriptModule, float]:
    """Trace Probabilities(model) and verify parity; ExportError when max |dp| >= PARITY_TOL."""
    eager = Probabilities(model).eval()
    example = with_extra(synthetic_batch(vocab_size, 2, 16, seed=0), fusion, seed=0)
    try:
        scripted = trace(eager, example)
        batches = parity_batches(vocab_size, lengths, fusion=fusion)
        diff = max_parity_diff(scripted, eager, batches)
    except (RuntimeError, torch.jit.Error) as exc:  # type: ignore[attr-defined]
        raise ExportError(f"TorchScript export failed: {exc}") from exc
    if not diff < PARITY_TOL:
        raise ExportError(
            f"TorchScript parity check failed: max |dp| = {diff:.3g} >= {PARITY_TOL}; "
            "bundle not written"
        )
    return scripted, diff


def check_serving_tokenizer(tokenizer: Any, saved: Path, encoding: EncodingConfig) -> None:
    """ExportError unless the runtime's tokenizer, loaded from `saved`, gives training's ids."""
    serving = load_serving_tokenizer(saved)
    for name in ("cls_token_id", "sep_token_id", "pad_token_id"):
        if getattr(serving, name) != getattr(tokenizer, name):
            raise ExportError(f"the saved tokenizer's {name} differs from training's")
    for text in probe_texts(encoding):
        expected = list(tokenizer.encode(text, add_special_tokens=False))
        if serving.encode(text, add_special_tokens=False) != expected:
            raise ExportError(
                f"the saved tokenizer splits {text!r} unlike training's; bundle not written"
            )


def export_bundle(
    model: BehaviorBert,
    tokenizer: Any,
    encoding: EncodingConfig,
    out_dir: Path | str,
    *,
    base_model: str,
    data_fingerprint: dict[str, Any] | None = None,
    metrics: dict[str, Any] | None = None,
    dp_epsilon: float | None = None,
    save_checkpoint: bool = True,
    carry_from: Path | None = None,
) -> Path:
    """Trace, check parity, then write the bundle atomically (staging dir, then rename)."""
    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()) and not (out_dir / META_FILE).is_file():
        raise ExportError(f"refusing to overwrite {out_dir}: it exists and is not a bundle")
    model = model.cpu().eval()
    vocab_size = int(model.bert.config.vocab_size)
    fusion = model.config.fusion_config()
    scripted, diff = checked_trace(model, vocab_size, encoding.length_buckets(), fusion)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        torch.jit.save(scripted, str(staging / MODEL_FILE))
        tokenizer.save_pretrained(str(staging / TOKENIZER_DIR))
        check_serving_tokenizer(tokenizer, staging / TOKENIZER_DIR, encoding)
        files = {MODEL_FILE: sha256_file(staging / MODEL_FILE)}
        if save_checkpoint:
            torch.save(
                {"model": model.config.to_dict(), "state": model.state_dict()},
                staging / CHECKPOINT_FILE,
            )
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
        meta = BundleMeta(
            version=f"{'-'.join(model.config.labels)}-{stamp}-{files[MODEL_FILE][:8]}",
            base_model=base_model,
            labels=list(model.config.labels),
            max_len=encoding.max_len,
            encoding=encoding.to_dict(),
            model=model.config.to_dict(),
            data_fingerprint=data_fingerprint,
            metrics={**(metrics or {}), "export_parity_max_abs_diff": diff},
            dp_epsilon=dp_epsilon,
            files=files,
            extensions={SERVING_TOKENIZER: "tokenizers"},  # checked above
            label_horizon_min=(data_fingerprint or {}).get("horizon_min"),
        )
        write_meta(staging, meta)
        for name in (METRICS_FILE, PLOTS_DIR, "eval"):  # reports of the bundle being replaced
            source = carry_from / name if carry_from else None
            if source is not None and source.is_file():
                shutil.copy2(source, staging / name)
            elif source is not None and source.is_dir():
                shutil.copytree(source, staging / name)
        if out_dir.exists():
            shutil.rmtree(out_dir)
        staging.rename(out_dir)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return out_dir


def load_checkpoint(path: Path | str) -> BehaviorBert:
    """Rebuild the eager model from a checkpoint.pt written by export_bundle or training."""
    data = torch.load(str(path), map_location="cpu", weights_only=True)
    return BehaviorBert.from_state(ModelConfig.from_dict(data["model"]), data["state"])


def reexport(bundle: Path, checkpoint: Path | None, out_dir: Path) -> tuple[Path, float]:
    """Export `checkpoint` (default: the bundle's) with the bundle's tokenizer and encoding."""
    meta = read_meta(bundle)
    checkpoint = checkpoint or bundle / CHECKPOINT_FILE
    if not checkpoint.is_file():
        raise ExportError(f"no checkpoint to export: {checkpoint} is missing")
    model = load_checkpoint(checkpoint)
    metrics = {k: v for k, v in meta.metrics.items() if k != "export_parity_max_abs_diff"}
    written = export_bundle(
        model,
        load_tokenizer(bundle / TOKENIZER_DIR),
        EncodingConfig.from_dict(meta.encoding),
        out_dir,
        base_model=meta.base_model,
        data_fingerprint=meta.data_fingerprint,
        metrics=metrics,
        dp_epsilon=meta.dp_epsilon,
        carry_from=bundle,
    )
    return written, float(read_meta(written).metrics["export_parity_max_abs_diff"])
