"""Serve N fine-tuned bundles as ONE bundle whose model.ts averages their probabilities.

Members must share the base model, tokenizer files, encoding config, label horizon and primary
label. The ensemble's labels are the union of the members' labels, primary first; each label's
probability is the mean over the members that have that head (every member scores the primary
label; a head such as cart that only some members have is averaged over those). model.ts is a
trace of all members (eager weights rebuilt from each member's model.ts), parity-checked like
any export, so the runtime and worker load it like a single model; inference costs N models.

>>> build_ensemble([Path("bundles/a"), Path("bundles/b")], Path("bundles/ab"))  # doctest: +SKIP
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
from torch import nn

from model.bundle import (
    META_FILE,
    METRICS_FILE,
    MODEL_FILE,
    SERVING_TOKENIZER,
    TOKENIZER_DIR,
    BundleMeta,
    sha256_file,
    validate_bundle,
    write_meta,
)
from model.encoding import EncodingConfig
from model.export import PARITY_TOL, ExportError, max_parity_diff, parity_batches, synthetic_batch
from model.export import trace as trace_module
from model.model import BehaviorBert, ModelConfig, Probabilities


class EnsembleError(ValueError):
    """Members that cannot be averaged (different tokenizer, encoding, horizon, primary label)."""


def ensemble_labels(member_labels: Sequence[Sequence[str]]) -> list[str]:
    """Union of the members' labels in order of first appearance; the shared primary comes first."""
    primaries = {labels[0] for labels in member_labels}
    if len(primaries) != 1:
        raise EnsembleError(f"members have different primary labels: {sorted(primaries)}")
    return list(dict.fromkeys(label for labels in member_labels for label in labels))


class MeanOfMembers(nn.Module):
    """forward(input_ids, attention_mask) -> [batch, n_labels]: per label, the members' mean."""

    mix: torch.Tensor

    def __init__(
        self, members: Sequence[nn.Module], member_labels: Sequence[Sequence[str]]
    ) -> None:
        super().__init__()
        self.members = nn.ModuleList(members)
        self.labels = ensemble_labels(member_labels)
        columns = [self.labels.index(label) for labels in member_labels for label in labels]
        # mix[j, k] = 1 / (members with label k) when concatenated member column j is label k
        mix = torch.zeros(len(columns), len(self.labels))
        mix[torch.arange(len(columns)), torch.tensor(columns)] = 1.0
        self.register_buffer("mix", mix / mix.sum(0, keepdim=True))

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        probs = torch.cat([member(input_ids, attention_mask) for member in self.members], dim=1)
        return probs @ self.mix.to(probs.dtype)


def tokenizer_hashes(bundle_dir: Path) -> dict[str, str]:
    root = bundle_dir / TOKENIZER_DIR
    return {
        str(p.relative_to(root)): sha256_file(p) for p in sorted(root.rglob("*")) if p.is_file()
    }


def first_difference(a: dict[str, Any], b: dict[str, Any]) -> str:
    key = next(k for k in sorted(a.keys() | b.keys()) if a.get(k) != b.get(k))
    return f"{key}: {a.get(key)!r} != {b.get(key)!r}"


def horizon(meta: BundleMeta) -> float:
    return float((meta.data_fingerprint or {}).get("horizon_min", 30.0))


def check_members(paths: Sequence[Path]) -> list[BundleMeta]:
    """Validate every member against the first; EnsembleError names the first mismatch."""
    if len(paths) < 2:
        raise EnsembleError("an ensemble needs at least 2 bundles (--bundles A --bundles B)")
    metas = [validate_bundle(path) for path in paths]
    first, ref, ref_tok = paths[0], metas[0], tokenizer_hashes(paths[0])
    for path, meta in zip(paths, metas, strict=True):
        why = ""
        if "members" in meta.model:
            why = "it is itself an ensemble (list its members instead)"
        elif meta.model.get("fusion"):
            why = "it is a fused model (late-fusion inputs are not ensembled yet)"
        elif meta.encoding != ref.encoding:
            why = f"its encoding differs ({first_difference(meta.encoding, ref.encoding)})"
        elif (toks := tokenizer_hashes(path)) != ref_tok:
            why = f"its tokenizer differs ({first_difference(toks, ref_tok)})"
        elif meta.base_model != ref.base_model:
            why = f"its base model {meta.base_model!r} is not {ref.base_model!r}"
        elif horizon(meta) != horizon(ref):
            why = f"its label horizon {horizon(meta)} min is not {horizon(ref)} min"
        if why:
            raise EnsembleError(f"cannot ensemble {path} with {first}: {why}")
    versions = [meta.version for meta in metas]
    if len(set(versions)) < len(versions):
        raise EnsembleError(f"a bundle is listed twice: {versions}")
    return metas


def member_module(script: torch.jit.ScriptModule, model: dict[str, Any], prefix: str) -> nn.Module:
    """Probabilities(BehaviorBert) from the weights under `prefix` in a traced state dict."""
    state = {
        k.removeprefix(prefix): v for k, v in script.state_dict().items() if k.startswith(prefix)
    }
    return Probabilities(BehaviorBert.from_state(ModelConfig.from_dict(model), state)).eval()


def eager_ensemble(script: torch.jit.ScriptModule, meta: BundleMeta) -> MeanOfMembers:
    """The eager ensemble rebuilt from an ensemble's model.ts (to re-trace it for CUDA or int8)."""
    members = meta.model["members"]
    modules = [
        member_module(script, m["model"], f"members.{i}.model.") for i, m in enumerate(members)
    ]
    return MeanOfMembers(modules, [m["labels"] for m in members]).eval()


def traced_mean(paths: Sequence[Path], metas: Sequence[BundleMeta]) -> tuple[Any, list[str], float]:
    """Trace the members' mean; ExportError unless eager and traced agree (max |dp| < 1e-4)."""
    scripts = [torch.jit.load(str(p / MODEL_FILE), map_location="cpu") for p in paths]
    eager = MeanOfMembers(
        [member_module(s, m.model, "model.") for s, m in zip(scripts, metas, strict=True)],
        [m.labels for m in metas],
    ).eval()
    vocab = int(metas[0].model["bert"]["vocab_size"])
    scripted = trace_module(eager, synthetic_batch(vocab, 2, 16, seed=0))
    lengths = EncodingConfig.from_dict(metas[0].encoding).length_buckets()
    diff = max_parity_diff(scripted, eager, parity_batches(vocab, lengths))
    if not diff < PARITY_TOL:
        raise ExportError(f"ensemble parity check failed: max |dp| = {diff:.3g}; not written")
    return scripted, eager.labels, diff


def build_ensemble(paths: Sequence[Path], out_dir: Path) -> Path:
    """Check the members, trace their mean, write the bundle atomically (staging dir, rename)."""
    paths, out_dir = [Path(p) for p in paths], Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()) and not (out_dir / META_FILE).is_file():
        raise ExportError(f"refusing to overwrite {out_dir}: it exists and is not a bundle")
    metas = check_members(paths)
    scripted, labels, diff = traced_mean(paths, metas)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        torch.jit.save(scripted, str(staging / MODEL_FILE))
        shutil.copytree(paths[0] / TOKENIZER_DIR, staging / TOKENIZER_DIR)
        meta = ensemble_meta(paths, metas, labels, sha256_file(staging / MODEL_FILE), diff)
        write_meta(staging, meta)
        (staging / METRICS_FILE).write_text(json.dumps(meta.metrics, indent=2) + "\n")
        if out_dir.exists():
            shutil.rmtree(out_dir)
        staging.rename(out_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out_dir


def ensemble_meta(
    paths: Sequence[Path], metas: Sequence[BundleMeta], labels: list[str], sha: str, diff: float
) -> BundleMeta:
    """bundle.json of the ensemble: the shared fields, plus each member's version and config."""
    ref, prints, eps = metas[0], [m.data_fingerprint for m in metas], [m.dp_epsilon for m in metas]
    members = [
        dict(version=m.version, path=str(p.resolve()), labels=m.labels, best=m.metrics.get("best"))
        for p, m in zip(paths, metas, strict=True)
    ]
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    return BundleMeta(
        version=f"ensemble{len(metas)}-{'-'.join(labels)}-{stamp}-{sha[:8]}",
        base_model=ref.base_model,
        labels=labels,
        max_len=ref.max_len,
        encoding=ref.encoding,
        # "bert" is the first member's: the runtime reads the (shared) vocab size there
        model={"combine": "mean", "labels": labels, "bert": ref.model["bert"], "members": [
            {**info, "model": m.model} for info, m in zip(members, metas, strict=True)]},
        data_fingerprint=ref.data_fingerprint if prints.count(prints[0]) == len(prints) else {
            "horizon_min": horizon(ref), "members": prints},
        metrics={"ensemble_members": members, "export_parity_max_abs_diff": diff},
        # sequential composition: private only if every member is, and then the epsilons add up
        dp_epsilon=None if None in eps else sum(e for e in eps if e is not None),
        files={MODEL_FILE: sha},
        # the tokenizer is the first member's copied as is, so is its export check
        extensions={k: v for k, v in ref.extensions.items() if k == SERVING_TOKENIZER},
    )  # fmt: skip
