"""Export: TorchScript parity is checked, and a failing model never produces a bundle."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from model.bundle import CHECKPOINT_FILE, MODEL_FILE, TOKENIZER_DIR, sha256_file, validate_bundle
from model.encoding import EncodingConfig
from model.export import (
    ExportError,
    check_serving_tokenizer,
    export_bundle,
    load_checkpoint,
    synthetic_batch,
)
from model.model import BehaviorBert, ModelConfig, Probabilities, default_base_dir
from model.runtime import load_tokenizer
from model.tiny import tiny_bert_config

ENCODING = EncodingConfig(max_len=32, buckets=(16,))


class DataDependent(BehaviorBert):
    """Python control flow on tensor values: tracing bakes in one branch, so parity must fail."""

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        logits = super().forward(input_ids, attention_mask)
        if int(input_ids[0, 1]) % 2 == 0:
            return logits + 3.0
        return logits - 3.0


def small_config() -> ModelConfig:
    return ModelConfig(bert=tiny_bert_config(30522, 32))


@pytest.fixture(scope="module")
def tokenizer():  # type: ignore[no-untyped-def]
    return load_tokenizer(default_base_dir())


def test_export_writes_a_valid_bundle_with_parity(tmp_path: Path, tokenizer) -> None:  # type: ignore[no-untyped-def]
    torch.manual_seed(0)
    model = BehaviorBert(small_config()).eval()

    out = export_bundle(model, tokenizer, ENCODING, tmp_path / "b", base_model="test")

    meta = validate_bundle(out)
    assert meta.metrics["export_parity_max_abs_diff"] < 1e-4
    assert meta.files[MODEL_FILE] == sha256_file(out / MODEL_FILE)
    assert (out / TOKENIZER_DIR).is_dir() and (out / CHECKPOINT_FILE).is_file()
    ids, mask = synthetic_batch(30522, 3, 32, seed=9)
    scripted = torch.jit.load(str(out / MODEL_FILE))
    reloaded = Probabilities(load_checkpoint(out / CHECKPOINT_FILE))
    with torch.no_grad():
        assert torch.allclose(scripted(ids, mask), reloaded(ids, mask), atol=1e-5)


def test_export_refuses_a_model_whose_trace_disagrees(tmp_path: Path, tokenizer) -> None:  # type: ignore[no-untyped-def]
    model = DataDependent(small_config()).eval()

    with pytest.raises(ExportError, match="parity"):
        export_bundle(model, tokenizer, ENCODING, tmp_path / "bad", base_model="test")

    assert not (tmp_path / "bad").exists()
    assert list(tmp_path.iterdir()) == []  # no staging leftovers either


def test_export_refuses_to_overwrite_a_directory_that_is_not_a_bundle(
    tmp_path: Path, tokenizer
) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "precious.txt").write_text("keep me")

    with pytest.raises(ExportError, match="not a bundle"):
        export_bundle(
            BehaviorBert(small_config()), tokenizer, ENCODING, tmp_path, base_model="test"
        )

    assert (tmp_path / "precious.txt").read_text() == "keep me"


def test_re_export_replaces_an_existing_bundle(tmp_path: Path, tokenizer) -> None:  # type: ignore[no-untyped-def]
    model = BehaviorBert(small_config()).eval()
    first = validate_bundle(
        export_bundle(model, tokenizer, ENCODING, tmp_path / "b", base_model="t")
    )
    torch.nn.init.normal_(model.head.weight)

    second = validate_bundle(
        export_bundle(model, tokenizer, ENCODING, tmp_path / "b", base_model="t")
    )

    assert first.files[MODEL_FILE] != second.files[MODEL_FILE]


def test_export_refuses_a_tokenizer_that_serving_would_read_differently(
    tmp_path: Path,
    tokenizer,  # type: ignore[no-untyped-def]
) -> None:
    saved = tmp_path / "tok"
    tokenizer.save_pretrained(str(saved))
    check_serving_tokenizer(tokenizer, saved, ENCODING)  # as saved: the same ids
    spec = json.loads((saved / "tokenizer.json").read_text())
    vocab = spec["model"]["vocab"]
    vocab["view"], vocab["cart"] = vocab["cart"], vocab["view"]  # what serving would then read
    (saved / "tokenizer.json").write_text(json.dumps(spec))

    with pytest.raises(ExportError, match="unlike training"):
        check_serving_tokenizer(tokenizer, saved, ENCODING)
