"""Runtime: loads the tiny real bundle, predicts, buckets, is thread-safe, rejects bad bundles."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import torch
from sklearn.metrics import roc_auc_score

from model.bundle import META_FILE, MODEL_FILE, SERVING_TOKENIZER, TOKENIZER_DIR, BundleError
from model.encoding import (
    Encoder,
    EncodingConfig,
    ServingTokenizer,
    load_serving_tokenizer,
    load_tokenizer,
)
from model.runtime import Runtime
from model.tiny import synthetic_windows


@pytest.fixture(scope="module")
def runtime(tiny_bundle: Path) -> Runtime:
    return Runtime.load(tiny_bundle, device="cpu")


def copy_bundle(tiny_bundle: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(tiny_bundle, tmp_path / "b"))


def test_predict_returns_one_probability_dict_per_window(runtime: Runtime) -> None:
    windows, _ = synthetic_windows(20, seed=3)

    preds = runtime.predict(windows + [[]])

    assert len(preds) == 21
    assert all(set(p) == {"purchase"} and 0.0 <= p["purchase"] <= 1.0 for p in preds)
    assert runtime.labels == ["purchase"] and runtime.max_len == 64 and runtime.device == "cpu"
    assert runtime.version.startswith("purchase-")


def test_tiny_bundle_scores_are_meaningful(runtime: Runtime) -> None:
    windows, labels = synthetic_windows(600, seed=11)  # held out: training used seed 0

    scores = [p["purchase"] for p in runtime.predict(windows)]

    assert roc_auc_score(labels, scores) > 0.7


class ShapeRecorder(torch.nn.Module):
    """Wraps the real loaded module and records the padded shapes it is called with."""

    def __init__(self, inner: torch.nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.shapes: list[tuple[int, int]] = []

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        self.shapes.append(tuple(ids.shape))  # type: ignore[arg-type]
        return self.inner(ids, mask)  # type: ignore[no-any-return]


def test_windows_are_padded_to_length_buckets_and_padding_does_not_change_scores(
    tiny_bundle: Path,
) -> None:
    rt = Runtime.load(tiny_bundle, device="cpu")
    recorder = ShapeRecorder(rt.module)
    rt.module = recorder
    short = [{"event_type": "view", "ts": 1000, "item_id": "1"}]
    long = [
        {"event_type": "view", "ts": 1000 * i, "item_id": str(i % 4), "category": "1"}
        for i in range(1, 15)
    ]

    together = rt.predict([short, long, short])
    alone = rt.predict([short]) + rt.predict([long])

    assert sorted(recorder.shapes[:2]) == [(1, 64), (2, 16)]  # 5 tokens -> 16, 58 tokens -> 64
    assert together[0]["purchase"] == pytest.approx(alone[0]["purchase"], abs=1e-5)
    assert together[1]["purchase"] == pytest.approx(alone[1]["purchase"], abs=1e-5)


def test_predict_is_thread_safe(runtime: Runtime) -> None:
    windows, _ = synthetic_windows(64, seed=5)
    expected = runtime.predict(windows)

    def run(offset: int) -> list[dict[str, float]]:
        return runtime.predict(windows[offset:] + windows[:offset])

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(run, range(0, 64, 4)))

    for offset, result in zip(range(0, 64, 4), results, strict=True):
        rotated = expected[offset:] + expected[:offset]
        assert [r["purchase"] for r in result] == pytest.approx(
            [r["purchase"] for r in rotated], abs=1e-6
        )


def test_int8_quantization_stays_close(tiny_bundle: Path, runtime: Runtime) -> None:
    windows, _ = synthetic_windows(100, seed=7)

    fp32 = runtime.predict(windows)
    int8 = Runtime.load(tiny_bundle, device="cpu", quantize=True).predict(windows)

    assert max(abs(a["purchase"] - b["purchase"]) for a, b in zip(fp32, int8, strict=True)) < 0.05


def test_missing_bundle_is_a_bundle_error(tmp_path: Path) -> None:
    with pytest.raises(BundleError, match="not found"):
        Runtime.load(tmp_path / "nope")
    with pytest.raises(BundleError, match="bundle.json is missing"):
        Runtime.load(tmp_path)


def edit_meta(bundle: Path, **changes: Any) -> None:
    meta = json.loads((bundle / META_FILE).read_text())
    for key, value in changes.items():
        meta[key] = value
    (bundle / META_FILE).write_text(json.dumps(meta))


def test_format_version_mismatch_is_a_bundle_error(tiny_bundle: Path, tmp_path: Path) -> None:
    bundle = copy_bundle(tiny_bundle, tmp_path)
    edit_meta(bundle, format=99)

    with pytest.raises(BundleError, match="version mismatch"):
        Runtime.load(bundle)


def test_encoding_version_mismatch_is_a_bundle_error(tiny_bundle: Path, tmp_path: Path) -> None:
    bundle = copy_bundle(tiny_bundle, tmp_path)
    meta = json.loads((bundle / META_FILE).read_text())
    edit_meta(bundle, encoding={**meta["encoding"], "version": 0})

    with pytest.raises(BundleError, match="encoding version"):
        Runtime.load(bundle)


@pytest.mark.parametrize("damage", ["json", "model_bytes", "model_missing"])
def test_corrupt_bundle_is_a_bundle_error(tiny_bundle: Path, tmp_path: Path, damage: str) -> None:
    bundle = copy_bundle(tiny_bundle, tmp_path)
    if damage == "json":
        (bundle / META_FILE).write_text("{not json")
    elif damage == "model_bytes":
        data = bytearray((bundle / MODEL_FILE).read_bytes())
        data[len(data) // 2] ^= 0xFF
        (bundle / MODEL_FILE).write_bytes(bytes(data))
    else:
        (bundle / MODEL_FILE).unlink()

    with pytest.raises(BundleError, match="corrupt"):
        Runtime.load(bundle)


def test_unreadable_model_without_hash_check_is_still_a_bundle_error(
    tiny_bundle: Path, tmp_path: Path
) -> None:
    bundle = copy_bundle(tiny_bundle, tmp_path)
    (bundle / MODEL_FILE).write_bytes(b"not a torchscript archive")
    edit_meta(bundle, files={})  # no hash to catch it: torch.jit.load must

    with pytest.raises(BundleError, match="corrupt"):
        Runtime.load(bundle)


def test_serving_loads_without_transformers(tiny_bundle: Path) -> None:
    # transformers takes seconds to import; every worker start and recovery would pay them.
    code = (
        "import sys; from model.runtime import Runtime; "
        f"r = Runtime.load({str(tiny_bundle)!r}, device='cpu'); r.predict([[]]); "
        "print(type(r.encoder.tokenizer).__name__, 'transformers' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)

    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["ServingTokenizer", "False"]


def test_serving_tokenizer_gives_the_training_tokenizer_ids(tiny_bundle: Path) -> None:
    tokenizer_dir = tiny_bundle / TOKENIZER_DIR
    training, serving = load_tokenizer(tokenizer_dir), load_serving_tokenizer(tokenizer_dir)
    windows, _ = synthetic_windows(200, seed=5)
    cfg = EncodingConfig(separator=";", summary=True)

    trained = [Encoder(training, cfg).encode(w).input_ids for w in windows]
    served = [Encoder(serving, cfg).encode(w).input_ids for w in windows]

    assert served == trained
    assert isinstance(serving, ServingTokenizer)


def test_a_bundle_exported_before_the_tokenizer_check_loads_with_transformers(
    tiny_bundle: Path, runtime: Runtime, tmp_path: Path
) -> None:
    bundle = copy_bundle(tiny_bundle, tmp_path)
    meta = json.loads((bundle / META_FILE).read_text())
    assert meta["extensions"] == {SERVING_TOKENIZER: "tokenizers"}  # what export writes now
    meta["extensions"] = {}
    (bundle / META_FILE).write_text(json.dumps(meta))
    windows, _ = synthetic_windows(20, seed=4)

    older = Runtime.load(bundle, device="cpu")

    assert not isinstance(older.encoder.tokenizer, ServingTokenizer)
    assert older.predict(windows) == runtime.predict(windows)
