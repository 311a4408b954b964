"""`bstream bench-model`: predictions/s by batch size and length for eager, TorchScript and int8."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from model.bundle import validate_bundle
from model.export import synthetic_batch
from model.fusion import FusionConfig, synthetic_extra
from model.metrics import roc_auc
from model.runtime import Runtime, eager_probabilities
from model.tiny import synthetic_windows

ANCHOR = {
    "length": 64,
    "seq_per_s": 98.0,
    "model": "all-MiniLM-L6 (6 layers, hidden 384), fp32, 2 cores",
}


def throughput(
    module: nn.Module,
    batch: int,
    length: int,
    seconds: float,
    vocab: int,
    device: str,
    fusion: FusionConfig | None = None,
) -> float:
    """Sequences per second over full-length rows, after a warm-up call (fused inputs too)."""
    ids, _ = synthetic_batch(vocab, batch, length, seed=batch + length)
    ids = ids.to(device)
    inputs: tuple[torch.Tensor, ...] = (ids, torch.ones_like(ids))
    if fusion is not None:
        extra = synthetic_extra(fusion, batch, seed=batch)
        inputs = (*inputs, *(torch.from_numpy(x).to(device) for x in extra))
    calls = 0
    with torch.inference_mode():
        module(*inputs)
        module(*inputs)
        sync(device)
        start = time.perf_counter()
        while calls < 2 or time.perf_counter() - start < seconds:
            module(*inputs)
            calls += 1
        sync(device)
    return batch * calls / (time.perf_counter() - start)


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def variants(bundle: Path, device: str) -> dict[str, Runtime]:
    """The loaded runtimes to compare; eager is rebuilt from the same weights as model.ts."""
    if device == "cuda":
        return {"torchscript-half": Runtime.load(bundle, device="cuda")}
    script = Runtime.load(bundle, device="cpu")
    return {"torchscript": script, "int8": Runtime.load(bundle, device="cpu", quantize=True)}


Sample = tuple[list[Any], list[float], str]  # windows, labels, where they come from


def synthetic_sample(n: int = 512) -> Sample:
    windows, labels = synthetic_windows(n, seed=123)
    return windows, labels, f"{n} synthetic windows (labels follow model.tiny's rule)"


def int8_cost(fp32: Runtime, int8: Runtime, sample: Sample) -> dict[str, Any]:
    """How far int8 probabilities move on the sample, and the AUC delta there."""
    windows, labels, source = sample
    label = fp32.labels[0]
    p32 = np.array([p[label] for p in fp32.predict(windows)])
    p8 = np.array([p[label] for p in int8.predict(windows)])
    y = np.array(labels)
    return {
        "max_abs_dp": float(np.abs(p32 - p8).max()),
        "mean_abs_dp": float(np.abs(p32 - p8).mean()),
        "auc_fp32": roc_auc(y, p32),
        "auc_delta": roc_auc(y, p8) - roc_auc(y, p32),
        "n": len(windows),
        "source": source,
    }


def run_bench(
    bundle: Path,
    batch_sizes: Sequence[int],
    lengths: Sequence[int] | None,
    seconds: float,
    device: str,
    echo: Callable[[str], Any] = print,
    sample: Sample | None = None,
) -> dict[str, Any]:
    """Print and return a table of predictions/s: variant x length x batch size."""
    meta = validate_bundle(bundle)
    device = (
        "cuda"
        if device == "auto" and torch.cuda.is_available()
        else ("cpu" if device == "auto" else device)
    )
    runtimes = variants(bundle, device)
    first = next(iter(runtimes.values()))
    lengths = list(lengths or first.buckets)
    vocab = int(meta.model["bert"]["vocab_size"])
    modules: dict[str, nn.Module] = {}
    if device == "cpu":
        script = torch.jit.load(str(bundle / "model.ts"))
        modules["eager"] = eager_probabilities(script, meta).eval()
    modules.update({name: rt.module for name, rt in runtimes.items()})
    bert = meta.model["bert"]
    echo(
        f"bundle {meta.version}: {bert.get('num_hidden_layers')} layers,"
        f" hidden {bert.get('hidden_size')};"
        f" device {device}; torch threads {torch.get_num_threads()}"
    )
    load, cores = os.getloadavg()[0], os.cpu_count()
    echo(
        f"load average {load:.1f} on {cores} cores"
        + (" (busy machine: figures are low)" if load > 1.5 else "")
    )
    echo(
        f"{'variant':<18}{'tokens':>7}"
        + "".join(f"{'b=' + str(b):>10}" for b in batch_sizes)
        + "   (predictions/s)"
    )
    rows: list[dict[str, Any]] = []
    for name, module in modules.items():
        for length in lengths:
            cells = [
                throughput(module, b, length, seconds, vocab, device, first.fusion)
                for b in batch_sizes
            ]
            rows += [
                {"variant": name, "length": length, "batch": b, "per_s": v}
                for b, v in zip(batch_sizes, cells, strict=True)
            ]
            echo(f"{name:<18}{length:>7}" + "".join(f"{v:>10.1f}" for v in cells))
    result: dict[str, Any] = {"device": device, "version": meta.version, "rows": rows}
    if "int8" in runtimes:
        result["int8_cost"] = int8_cost(
            runtimes["torchscript"], runtimes["int8"], sample or synthetic_sample()
        )
        c = result["int8_cost"]
        echo(
            f"int8 accuracy cost on {c['source']}: max |dp| {c['max_abs_dp']:.4f}, "
            f"mean |dp| {c['mean_abs_dp']:.4f}; AUC fp32 {c['auc_fp32']:.4f}, "
            f"int8 minus fp32 {c['auc_delta']:+.4f}"
        )
    result["load_average"] = load
    echo(anchor_line(rows, meta.model["bert"]))
    return result


def anchor_line(rows: list[dict[str, Any]], bert: dict[str, Any]) -> str:
    """How the fp32 TorchScript figure at 64 tokens compares with the DESIGN.md anchor."""
    same_model = bert.get("num_hidden_layers") == 6 and bert.get("hidden_size") == 384
    at64 = [r for r in rows if r["variant"] == "torchscript" and r["length"] == ANCHOR["length"]]
    if not at64:
        return (
            f"anchor (DESIGN.md): ~{ANCHOR['seq_per_s']:.0f} seq/s at 64 tokens fp32; "
            "no 64-token fp32 row measured here (pass --lengths 64)"
        )
    best = max(r["per_s"] for r in at64)
    note = (
        ""
        if same_model
        else " (this bundle is not the 6x384 MiniLM, so the anchor is only a reference)"
    )
    return (
        f"anchor (DESIGN.md): ~{ANCHOR['seq_per_s']:.0f} seq/s at 64 tokens fp32 on 2 cores; "
        f"here TorchScript fp32 at 64 tokens peaks at {best:.1f} seq/s = "
        f"{100 * best / ANCHOR['seq_per_s']:.0f}% of the anchor{note}"
    )
