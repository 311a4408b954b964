"""Late-fusion inputs (Wide & Deep / DCAF-BERT style): window aggregates and hashed word n-grams.

Pure functions on plain data, numpy and zlib only (the serving path imports this module, so no
scikit-learn here). Training, the stored baselines and the runtime all call these, so the model's
extra inputs and the baselines' inputs are the same numbers.

>>> ngram_ids(["cart", "seconds", "a"], buckets=1000)  # doctest: +ELLIPSIS
[...]
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

import numpy as np

from model.encoding import Encoded, EncodingConfig, render, render_summary
from model.features import FEATURE_NAMES, window_features

Window = Sequence[Mapping[str, Any]]
FEATURE_WINDOW = 50  # events; the baselines' window (model.evaluate.BASELINE_WINDOW)
NGRAM_BUCKETS = 1 << 18


@dataclass(frozen=True)
class FusionConfig:
    """What the head sees besides [CLS]; stored in bundle.json under model.fusion."""

    features: bool = True  # window aggregates (model.features), signed-log then standardised
    mean: tuple[float, ...] = ()  # per-feature normalisation, fitted on train
    std: tuple[float, ...] = ()
    ngram_buckets: int = 0  # >0: the wide part, hashed word uni+bi-grams of the model's text
    feature_window: int = FEATURE_WINDOW
    max_ngrams: int = 256  # per window (a 128-token window has ~120 words)
    names: tuple[str, ...] = field(default=FEATURE_NAMES)

    @property
    def n_features(self) -> int:
        return len(self.mean) if self.features else 0

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FusionConfig:
        known = {f.name for f in fields(cls)}
        values: dict[str, Any] = {
            k: tuple(v) if isinstance(v, list) else v for k, v in data.items() if k in known
        }
        return cls(**values)


def signed_log(x: np.ndarray) -> np.ndarray:
    return np.sign(x) * np.log1p(np.abs(x))


def raw_features(window: Window, size: int = FEATURE_WINDOW) -> list[float]:
    """The baselines' aggregate features of the newest `size` events."""
    return window_features(list(window)[-size:])


def normaliser(raw: np.ndarray) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(mean, std) of signed-log features over training rows; std floored so constants stay 0."""
    x = signed_log(np.asarray(raw, dtype=np.float64))
    std = np.maximum(x.std(0), 1e-6)
    return tuple(map(float, x.mean(0))), tuple(map(float, std))


def normalise(raw: np.ndarray, cfg: FusionConfig) -> np.ndarray:
    x = signed_log(np.asarray(raw, dtype=np.float64))
    return ((x - np.array(cfg.mean)) / np.array(cfg.std)).astype(np.float32)


def model_words(window: Window, enc_cfg: EncodingConfig, encoded: Encoded) -> list[str]:
    """The words of the text the model reads: summary header plus the events kept after
    truncation."""
    segments = render(window, enc_cfg)
    kept = segments[len(segments) - encoded.n_events :] if encoded.n_events else []
    header = render_summary(window, enc_cfg).split() if enc_cfg.summary and segments else []
    return header + " ".join(kept).split()


def _bucket(text: str, buckets: int) -> int:
    return 1 + zlib.crc32(text.encode()) % buckets  # 0 is padding


def ngram_ids(words: Sequence[str], buckets: int, limit: int = 256) -> list[int]:
    """Sorted distinct hashed ids (1..buckets) of word unigrams and bigrams (binary bag)."""
    grams = [*words, *(f"{a} {b}" for a, b in zip(words, words[1:], strict=False))]
    return sorted({_bucket(g, buckets) for g in grams})[:limit]


def with_fusion(
    window: Window, encoded: Encoded, enc_cfg: EncodingConfig, cfg: FusionConfig
) -> Encoded:
    """`encoded` plus the fused inputs of the same window (normalised features, n-gram ids)."""
    feats: tuple[float, ...] | None = None
    if cfg.features:
        raw = np.array([raw_features(window, cfg.feature_window)])
        feats = tuple(map(float, normalise(raw, cfg)[0]))
    grams = None
    if cfg.ngram_buckets:
        words = model_words(window, enc_cfg, encoded)
        grams = tuple(ngram_ids(words, cfg.ngram_buckets, cfg.max_ngrams))
    return replace(encoded, features=feats, ngrams=grams)


def pad_ngrams(rows: Sequence[Sequence[int]]) -> np.ndarray:
    """[n, longest] int64, right-padded with 0 (at least one column)."""
    width = max([1, *(len(r) for r in rows)])
    out = np.zeros((len(rows), width), dtype=np.int64)
    for i, row in enumerate(rows):
        out[i, : len(row)] = row
    return out


def extra_inputs(batch: Sequence[Encoded], cfg: FusionConfig) -> list[np.ndarray]:
    """The model's inputs after (input_ids, attention_mask), in order: features, n-grams."""
    out = []
    if cfg.features:
        out.append(np.array([e.features for e in batch], dtype=np.float32))
    if cfg.ngram_buckets:
        out.append(pad_ngrams([e.ngrams or () for e in batch]))
    return out


def synthetic_extra(cfg: FusionConfig, batch: int, seed: int) -> list[np.ndarray]:
    """Random fused inputs for tracing, parity checks and warm-up."""
    rng = np.random.default_rng(seed)
    out = []
    if cfg.features:
        out.append(rng.standard_normal((batch, cfg.n_features)).astype(np.float32))
    if cfg.ngram_buckets:
        grams = rng.integers(1, cfg.ngram_buckets + 1, (batch, 12))
        grams[1:, 8:] = 0  # padding, as in real batches
        out.append(grams.astype(np.int64))
    return out
