"""Tokenise once: a split's windows as token ids, aggregates and n-gram ids, cached on disk.

The cache key is the data fingerprint (file sha256, split, horizon, labels), the encoding config,
the tokenizer's vocabulary, the window size and the n-gram bucket count, so a changed input never
reuses a stale cache. Files are pickles under `cache_dir` (default .bstream/cache, gitignored).
"""

from __future__ import annotations

import hashlib
import json
import pickle
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from model.data import LabelledData
from model.encoding import Encoded, Encoder
from model.fusion import FEATURE_WINDOW, model_words, ngram_ids, raw_features
from model.labels import Example

PREPARED_VERSION = 1


@dataclass
class Prepared:
    """One split's examples with everything training, baselines and calibration read."""

    examples: list[Example]
    encoded: list[Encoded]
    raw: np.ndarray  # [n, n_features] aggregates (model.features), unnormalised
    grams: list[tuple[int, ...]]  # hashed uni+bi-gram ids of the model's text
    y: np.ndarray  # [n, n_labels]

    def subset(self, rows: list[int]) -> Prepared:
        return Prepared(
            [self.examples[i] for i in rows],
            [self.encoded[i] for i in rows],
            self.raw[rows],
            [self.grams[i] for i in rows],
            self.y[rows],
        )


def cache_key(data: LabelledData, encoder: Encoder, window: int, buckets: int, split: str) -> str:
    vocab = hashlib.sha256(
        json.dumps(sorted(encoder.tokenizer.get_vocab().items())).encode()
    ).hexdigest()
    blob = json.dumps(
        {
            "v": PREPARED_VERSION,
            "fingerprint": data.fingerprint,
            "encoding": encoder.cfg.to_dict(),
            "vocab": vocab,
            "window": window,
            "feature_window": FEATURE_WINDOW,
            "buckets": buckets,
            "split": split,
        },
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


def prepare(
    data: LabelledData,
    split: str,
    encoder: Encoder,
    window: int,
    buckets: int,
    cache_dir: Path | None,
) -> Prepared:
    """The split's prepared windows, from the cache when the key matches."""
    path = None
    if cache_dir is not None:
        path = cache_dir / f"{split}-{cache_key(data, encoder, window, buckets, split)}.pkl"
        if path.is_file():
            with path.open("rb") as handle:
                cached: Prepared = pickle.load(handle)
            return cached
    examples = data.split(split)
    encoded, raw, grams = [], [], []
    for example in examples:
        win = data.window(example, max(window, FEATURE_WINDOW))
        enc = encoder.encode(win[-window:])
        encoded.append(enc)
        raw.append(raw_features(win))
        grams.append(tuple(ngram_ids(model_words(win[-window:], encoder.cfg, enc), buckets)))
    y = np.array([e.labels for e in examples], dtype=np.float32).reshape(len(examples), -1)
    prepared = Prepared(examples, encoded, np.array(raw, dtype=np.float64), grams, y)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        with tmp.open("wb") as handle:
            pickle.dump(prepared, handle, protocol=pickle.HIGHEST_PROTOCOL)
        tmp.replace(path)
    return prepared


def log(message: str) -> None:
    """Progress line on stderr (training's only chatter besides the optional bar)."""
    print(message, file=sys.stderr, flush=True)


def describe(prepared: Prepared) -> dict[str, Any]:
    lengths = [len(e.input_ids) for e in prepared.encoded]
    return {
        "n": len(prepared.examples),
        "positives": int(prepared.y[:, 0].sum()) if len(prepared.y) else 0,
        "mean_tokens": float(np.mean(lengths)) if lengths else 0.0,
    }
