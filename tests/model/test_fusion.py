"""Late fusion: the pure input functions, a fused tiny model's export parity and runtime, and
loading bundles without fusion."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from model.encoding import Encoder, EncodingConfig
from model.export import checked_trace, export_bundle
from model.features import FEATURE_NAMES
from model.fusion import (
    FusionConfig,
    extra_inputs,
    model_words,
    ngram_ids,
    normalise,
    normaliser,
    raw_features,
    with_fusion,
)
from model.model import BehaviorBert, ModelConfig, default_base_dir
from model.runtime import Runtime, load_tokenizer
from model.tiny import TINY_ENCODING, synthetic_windows, tiny_bert_config
from model.train import TrainConfig, make_optimizer, trainable_state


def test_ngram_ids_are_stable_distinct_and_in_range() -> None:
    ids = ngram_ids(["cart", "seconds", "a", "cart", "seconds"], buckets=50)

    assert ids == sorted(set(ids)) and all(1 <= i <= 50 for i in ids)
    assert ids == ngram_ids(["cart", "seconds", "a", "cart", "seconds"], buckets=50)
    assert ngram_ids([], 50) == []


def test_model_words_are_the_kept_events_text() -> None:
    windows, _ = synthetic_windows(5, seed=1)
    tokenizer = load_tokenizer(default_base_dir())
    cfg = EncodingConfig(max_len=16, window=20)
    encoder = Encoder(tokenizer, cfg)
    for window in windows:
        enc = encoder.encode(window)
        words = model_words(window, cfg, enc)
        text_ids = [i for w in words for i in tokenizer.encode(w, add_special_tokens=False)]
        assert text_ids == enc.input_ids[1:-1]  # exactly what the model reads


def test_normalised_features_have_train_mean_zero() -> None:
    windows, _ = synthetic_windows(200, seed=2)
    raw = np.array([raw_features(w) for w in windows])
    mean, std = normaliser(raw)
    x = normalise(raw, FusionConfig(mean=mean, std=std))

    assert x.shape == (200, len(FEATURE_NAMES)) and x.dtype == np.float32
    assert np.allclose(x.mean(0), 0, atol=1e-4)


def fused_model(buckets: int = 64) -> tuple[BehaviorBert, FusionConfig]:
    windows, _ = synthetic_windows(50, seed=3)
    mean, std = normaliser(np.array([raw_features(w) for w in windows]))
    fusion = FusionConfig(mean=mean, std=std, ngram_buckets=buckets)
    torch.manual_seed(0)
    config = ModelConfig(
        labels=("purchase",), bert=tiny_bert_config(30522, 64), fusion=fusion.to_dict()
    )
    model = BehaviorBert(config).eval()
    with torch.no_grad():
        model.wide.weight.normal_()  # a zero wide part would hide a wrong n-gram input
        model.wide.weight[0] = 0.0  # the padding id, as training keeps it
    return model, fusion


def test_fused_export_parity_covers_the_extra_inputs() -> None:
    model, fusion = fused_model()

    _, diff = checked_trace(model, 30522, (16, 32, 64), fusion)

    assert diff < 1e-4


def test_fused_bundle_runtime_uses_features_and_ngrams(tmp_path: Path) -> None:
    model, fusion = fused_model()
    tokenizer = load_tokenizer(default_base_dir())
    bundle = export_bundle(model, tokenizer, TINY_ENCODING, tmp_path / "b", base_model="tiny")
    runtime = Runtime.load(bundle, device="cpu")
    windows, _ = synthetic_windows(20, seed=4)

    encoded = runtime.encode(windows)
    probs = [p["purchase"] for p in runtime.predict(windows)]

    assert runtime.fusion == fusion
    assert all(e.features is not None and e.ngrams for e in encoded)
    ids, mask = runtime.encoder.pad(encoded[:1])
    extra = [torch.from_numpy(x) for x in extra_inputs(encoded[:1], fusion)]
    with torch.no_grad():
        eager = torch.sigmoid(model(torch.tensor(ids), torch.tensor(mask), *extra))[0, 0]
    assert abs(float(eager) - probs[0]) < 1e-4
    plain = Encoder(tokenizer, TINY_ENCODING).encode(windows[0])
    assert with_fusion(windows[0], plain, TINY_ENCODING, fusion) == encoded[0]


def test_linear_lr_zero_keeps_the_warm_started_linear_parts_out_of_training() -> None:
    model, _ = fused_model()
    linear = [model.feature_head.weight, model.feature_head.bias, model.wide.weight]

    optimizer = make_optimizer(model, TrainConfig(linear_lr=0.0))
    snapshot = trainable_state(model)

    in_optimizer = {id(p) for group in optimizer.param_groups for p in group["params"]}
    assert not any(p.requires_grad or id(p) in in_optimizer for p in linear)
    assert {"feature_head.weight", "feature_head.bias", "wide.weight"} <= snapshot.keys()
    assert make_optimizer(model, TrainConfig()).param_groups[-1]["lr"] == 2e-4 * 0.5
