"""The bundle directory: layout, bundle.json read/write and validation.

Layout::

    bundle/
      bundle.json        format, version, base model, labels, max_len, encoding, model config, ...
      model.ts           TorchScript: (input_ids, attention_mask) -> probabilities [batch, n_labels]
      tokenizer/         the base model's tokenizer files
      checkpoint.pt      optional: eager state dict, for `bstream export`
      metrics.json       optional: training/eval metrics
      plots/             optional: PNGs
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from model.encoding import ENCODING_VERSION

BUNDLE_FORMAT = 1
META_FILE = "bundle.json"
MODEL_FILE = "model.ts"
TOKENIZER_DIR = "tokenizer"
CHECKPOINT_FILE = "checkpoint.pt"
CURVE_FILE = "curve.pt"  # learning-curve snapshots (trainable weights), written by training
METRICS_FILE = "metrics.json"
PLOTS_DIR = "plots"
# extensions[SERVING_TOKENIZER] == "tokenizers": export checked that tokenizer.json read by the
# `tokenizers` library alone gives training's ids, so serving need not import transformers.
SERVING_TOKENIZER = "serving_tokenizer"


class BundleError(Exception):
    """A missing or corrupt bundle, or one written for another format version."""


@dataclass
class BundleMeta:
    """The contents of bundle.json."""

    version: str
    base_model: str
    labels: list[str]
    max_len: int
    encoding: dict[str, Any]
    model: dict[str, Any]  # ModelConfig.to_dict()
    format: int = BUNDLE_FORMAT
    data_fingerprint: dict[str, Any] | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    dp_epsilon: float | None = None
    created_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))
    files: dict[str, str] = field(default_factory=dict)  # file name -> sha256
    label_horizon_min: float | None = None  # the label: event within this many minutes
    extensions: dict[str, Any] = field(default_factory=dict)  # optional add-ons, by name

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)


REQUIRED = ("format", "version", "base_model", "labels", "max_len", "encoding", "model")
# JSON types of the fields code relies on (a hand-edited bundle.json must fail with one line)
FIELD_TYPES: dict[str, type | tuple[type, ...]] = {
    "version": str,
    "labels": list,
    "max_len": int,
    "encoding": dict,
    "model": dict,
    "files": dict,
}


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def write_meta(bundle_dir: Path, meta: BundleMeta) -> Path:
    path = bundle_dir / META_FILE
    path.write_text(meta.to_json() + "\n")
    return path


def read_meta(bundle_dir: Path | str) -> BundleMeta:
    """Read and check bundle.json; any problem raises BundleError with a one-line reason."""
    bundle_dir = Path(bundle_dir)
    if not bundle_dir.is_dir():
        raise BundleError(f"model bundle not found: {bundle_dir} is not a directory")
    path = bundle_dir / META_FILE
    if not path.is_file():
        raise BundleError(f"not a model bundle: {path} is missing")
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BundleError(f"corrupt bundle: cannot parse {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise BundleError(f"corrupt bundle: {path} is not a JSON object")
    missing = [key for key in REQUIRED if key not in data]
    if missing:
        raise BundleError(f"corrupt bundle: {path} lacks {', '.join(missing)}")
    wrong = [
        key for key, kind in FIELD_TYPES.items() if key in data and not isinstance(data[key], kind)
    ]
    if wrong or not data["labels"] or not all(isinstance(label, str) for label in data["labels"]):
        raise BundleError(f"corrupt bundle: {path} has bad {', '.join(wrong) or 'labels'}")
    if data["format"] != BUNDLE_FORMAT:
        raise BundleError(
            f"bundle version mismatch: {bundle_dir} has format {data['format']!r}, "
            f"this runtime reads format {BUNDLE_FORMAT}; re-export it with `bstream export`"
        )
    known = set(BundleMeta.__dataclass_fields__)
    return BundleMeta(**{k: v for k, v in data.items() if k in known})


def validate_bundle(bundle_dir: Path | str, check_hashes: bool = True) -> BundleMeta:
    """bundle.json plus the files it names: present and, optionally, matching their sha256."""
    bundle_dir = Path(bundle_dir)
    meta = read_meta(bundle_dir)
    for name in (MODEL_FILE, TOKENIZER_DIR):
        if not (bundle_dir / name).exists():
            raise BundleError(f"corrupt bundle: {bundle_dir / name} is missing")
    if check_hashes:
        for name, expected in meta.files.items():
            path = bundle_dir / name
            if not path.is_file():
                raise BundleError(f"corrupt bundle: {path} is missing")
            if sha256_file(path) != expected:
                raise BundleError(
                    f"corrupt bundle: {path} does not match its sha256 in {META_FILE}"
                )
    if meta.encoding.get("version") != ENCODING_VERSION:
        raise BundleError(
            f"bundle version mismatch: encoding version {meta.encoding.get('version')!r}, "
            f"this runtime encodes version {ENCODING_VERSION}"
        )
    return meta


def update_metrics(bundle_dir: Path, metrics: dict[str, Any]) -> None:
    """Merge metrics into bundle.json and metrics.json (does not touch hashed files)."""
    meta = read_meta(bundle_dir)
    meta.metrics.update(metrics)
    write_meta(bundle_dir, meta)
    path = bundle_dir / METRICS_FILE
    existing = json.loads(path.read_text()) if path.is_file() else {}
    existing.update(metrics)
    path.write_text(json.dumps(existing, indent=2, sort_keys=True) + "\n")


def add_file(bundle_dir: Path, name: str) -> None:
    """Record an extra file (e.g. the stored baselines) with its sha256 in bundle.json."""
    meta = read_meta(bundle_dir)
    meta.files[name] = sha256_file(bundle_dir / name)
    write_meta(bundle_dir, meta)
