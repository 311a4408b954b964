"""A tiny REAL bundle for tests: small BERT config, the real MiniLM tokenizer, seconds of training.

It goes through the same encoding, export (with parity check) and bundle code as a full model, so
tests of the worker exercise the real runtime. Its scores follow a simple synthetic rule (carts
and repeated views of the current item raise purchase odds), so they are meaningful-ish.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import torch
from transformers import BertConfig

from model.encoding import Encoder, EncodingConfig, load_tokenizer
from model.export import export_bundle
from model.model import BehaviorBert, ModelConfig, default_base_dir

TINY_ENCODING = EncodingConfig(max_len=64, window=20, buckets=(16, 32, 64))
TYPES = ("view", "view", "view", "view", "click", "fav", "cart")


def tiny_bert_config(vocab_size: int, max_len: int) -> dict[str, Any]:
    """A small BERT (2 layers, hidden 64): the real architecture, seconds to train."""
    return BertConfig(
        vocab_size=vocab_size,
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=128,
        max_position_embeddings=max(max_len, 32),
    ).to_dict()


def synthetic_windows(n: int, seed: int) -> tuple[list[list[dict[str, Any]]], list[float]]:
    """Random windows (newest last) with a purchase label drawn from a simple propensity rule."""
    rng = random.Random(seed)
    windows, labels = [], []
    for _ in range(n):
        ts = 1_700_000_000_000 + rng.randrange(10**9)
        items = [str(rng.randrange(1000)) for _ in range(rng.randint(1, 6))]
        window = []
        for _ in range(rng.randint(1, 15)):
            ts += rng.choice((5_000, 30_000, 120_000, 3_600_000))
            item = rng.choice(items)
            window.append(
                {
                    "event_type": rng.choice(TYPES),
                    "ts": ts,
                    "item_id": item,
                    "category": str(int(item) % 7),
                }
            )
        current = window[-1]["item_id"]
        score = (
            -2.5
            + 2.0 * (window[-1]["event_type"] == "cart")
            + 0.6 * sum(e["item_id"] == current for e in window[:-1])
        )
        labels.append(float(rng.random() < 1 / (1 + pow(2.718, -score))))
        windows.append(window)
    return windows, labels


def build_tiny_bundle(out_dir: Path, seed: int = 0, steps: int = 60) -> Path:
    """Train a 2-layer, hidden-64 BERT for `steps` steps on synthetic windows; export a bundle."""
    threads = torch.get_num_threads()
    torch.set_num_threads(
        1
    )  # a model this small gains nothing from threads; on a busy host they stall
    try:
        return _build(out_dir, seed, steps)
    finally:
        torch.set_num_threads(threads)


def _build(out_dir: Path, seed: int, steps: int) -> Path:
    torch.manual_seed(seed)
    tokenizer = load_tokenizer(default_base_dir())
    encoder = Encoder(tokenizer, TINY_ENCODING)
    config = ModelConfig(
        labels=("purchase",), bert=tiny_bert_config(len(tokenizer), TINY_ENCODING.max_len)
    )
    model = BehaviorBert(config)
    windows, labels = synthetic_windows(640, seed)
    encoded = [encoder.encode(w) for w in windows]
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3)
    model.train()
    rng = random.Random(seed)
    for _ in range(steps):
        rows = rng.sample(range(len(encoded)), 32)
        ids, mask = encoder.pad([encoded[i] for i in rows])
        logits = model(torch.tensor(ids), torch.tensor(mask))[:, 0]
        target = torch.tensor([labels[i] for i in rows])
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    return export_bundle(
        model,
        tokenizer,
        TINY_ENCODING,
        out_dir,
        base_model="tiny-bert-2x64 (random init, MiniLM tokenizer)",
        data_fingerprint={
            "synthetic": "model.tiny.synthetic_windows",
            "n": len(windows),
            "seed": seed,
        },
        metrics={"train_loss_last": loss.item()},
        save_checkpoint=True,
    )
