"""Ensemble bundles: the mean of real members, loaded by the runtime; mismatches refused."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from torch import nn

from model.bundle import META_FILE, MODEL_FILE, TOKENIZER_DIR, read_meta, validate_bundle
from model.ensemble import (
    EnsembleError,
    MeanOfMembers,
    build_ensemble,
    eager_ensemble,
    ensemble_labels,
)
from model.export import synthetic_batch
from model.runtime import Runtime
from model.tiny import build_tiny_bundle, synthetic_windows
from stream.cli import main


class Constant(nn.Module):
    """A member whose probabilities are fixed (the mixing is plain arithmetic)."""

    def __init__(self, probs: list[float]) -> None:
        super().__init__()
        self.probs = torch.tensor([probs])

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.probs.expand(input_ids.size(0), -1)


@pytest.fixture(scope="module")
def second_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_bundle(tmp_path_factory.mktemp("seed1") / "tiny1", seed=1, steps=30)


@pytest.fixture(scope="module")
def ensemble(
    tiny_bundle: Path, second_bundle: Path, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    return build_ensemble([tiny_bundle, second_bundle], tmp_path_factory.mktemp("ens") / "ens")


def edited_copy(bundle: Path, tmp_path: Path, **encoding: object) -> Path:
    copy = Path(shutil.copytree(bundle, tmp_path / "edited"))
    meta = json.loads((copy / META_FILE).read_text())
    meta["encoding"].update(encoding)
    (copy / META_FILE).write_text(json.dumps(meta))
    return copy


def test_labels_are_the_union_with_the_shared_primary_first() -> None:
    assert ensemble_labels([["purchase", "cart"], ["purchase"], ["purchase", "fav"]]) == [
        "purchase", "cart", "fav",
    ]  # fmt: skip
    with pytest.raises(EnsembleError, match="primary"):
        ensemble_labels([["purchase"], ["cart", "purchase"]])


def test_each_label_is_averaged_over_the_members_that_have_it() -> None:
    mean = MeanOfMembers(
        [Constant([0.2, 0.4]), Constant([0.6])], [["purchase", "cart"], ["purchase"]]
    )

    probs = mean(torch.zeros(3, 8, dtype=torch.long), torch.ones(3, 8, dtype=torch.long))

    assert mean.labels == ["purchase", "cart"]
    assert torch.allclose(probs, torch.tensor([[0.4, 0.4]] * 3))


def test_ensemble_predicts_the_mean_of_its_members(
    tiny_bundle: Path, second_bundle: Path, ensemble: Path
) -> None:
    windows, _ = synthetic_windows(6, seed=11)
    members = [Runtime.load(b, device="cpu") for b in (tiny_bundle, second_bundle)]

    runtime = Runtime.load(ensemble, device="cpu")
    got = [p["purchase"] for p in runtime.predict(windows)]

    each = [[p["purchase"] for p in member.predict(windows)] for member in members]
    assert each[0] != pytest.approx(each[1], abs=1e-3)  # the members really differ
    assert got == pytest.approx([(a + b) / 2 for a, b in zip(*each, strict=True)], abs=1e-5)
    meta = validate_bundle(ensemble)
    assert [m["version"] for m in meta.model["members"]] == [m.version for m in members]
    assert meta.metrics["export_parity_max_abs_diff"] < 1e-4
    assert runtime.labels == ["purchase"] and runtime.version.startswith("ensemble2-purchase-")


def test_the_eager_ensemble_rebuilt_from_model_ts_matches_it(ensemble: Path) -> None:
    script = torch.jit.load(str(ensemble / MODEL_FILE))
    ids, mask = synthetic_batch(30522, 4, 32, seed=5)

    eager = eager_ensemble(script, read_meta(ensemble))

    with torch.no_grad():
        assert torch.allclose(eager(ids, mask), script(ids, mask), atol=1e-6)


def test_members_with_another_encoding_or_tokenizer_are_refused(
    tiny_bundle: Path, tmp_path: Path
) -> None:
    other_encoding = edited_copy(tiny_bundle, tmp_path, window=5)
    with pytest.raises(EnsembleError, match=r"encoding differs \(window: 5 != 20\)"):
        build_ensemble([tiny_bundle, other_encoding], tmp_path / "out")

    other_tokenizer = edited_copy(tiny_bundle, tmp_path / "t")
    with (other_tokenizer / TOKENIZER_DIR / "tokenizer_config.json").open("a") as handle:
        handle.write("\n")
    with pytest.raises(EnsembleError, match="tokenizer differs"):
        build_ensemble([tiny_bundle, other_tokenizer], tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_cli_refuses_a_mismatch_in_one_line(tiny_bundle: Path, tmp_path: Path) -> None:
    other = edited_copy(tiny_bundle, tmp_path, max_len=32)

    result = CliRunner().invoke(
        main,
        [
            "ensemble",
            "--bundles",
            str(tiny_bundle),
            "--bundles",
            str(other),
            "--out",
            str(tmp_path / "o"),
        ],
    )

    assert result.exit_code != 0
    assert result.output.strip().splitlines() == [
        f"Error: cannot ensemble {other} with {tiny_bundle}: its encoding differs "
        "(max_len: 32 != 64)"
    ]


def test_an_ensemble_also_loads_int8_close_to_fp32(ensemble: Path) -> None:
    windows, _ = synthetic_windows(6, seed=3)

    fp32 = Runtime.load(ensemble, device="cpu").predict(windows)
    int8 = Runtime.load(ensemble, device="cpu", quantize=True).predict(windows)

    gaps = [abs(a[k] - b[k]) for a, b in zip(fp32, int8, strict=True) for k in a]
    assert max(gaps) < 0.05
