"""The worker's hot swap, without a broker: announced-bundle checks, the swap, freeing the old."""

from __future__ import annotations

import gc
import json
import weakref
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import pytest

from model.bundle import MODEL_FILE, sha256_file
from model.runtime import Runtime
from stream.metrics import Metrics
from stream.modelswap import LoadFailed, ModelSwapper, Startup, load_announced
from stream.registry import Announcement
from stream.settings import Settings


def announced(bundle: Path) -> Announcement:
    meta = json.loads((bundle / "bundle.json").read_text())
    return Announcement(
        "champion",
        bundle.name,
        meta["version"],
        str(bundle),
        sha256_file(bundle / MODEL_FILE),
        meta["labels"],
        int(meta["encoding"]["window"]),
        "test",
        1,
    )


def test_load_announced_checks_sha256_labels_window_and_version(tiny_bundle: Path) -> None:
    made = announced(tiny_bundle)
    settings = Settings(device="cpu")

    assert load_announced(made, settings, ["purchase"]).version == made.version
    with pytest.raises(LoadFailed, match="sha256 mismatch"):
        load_announced(replace(made, sha256="0" * 64), settings, None)
    with pytest.raises(LoadFailed, match="labels"):
        load_announced(made, settings, ["cart"])
    with pytest.raises(LoadFailed, match="window"):
        load_announced(made, Settings(device="cpu", window_size=2), None)
    with pytest.raises(LoadFailed, match="announced as"):
        load_announced(replace(made, version="other"), settings, None)
    with pytest.raises(LoadFailed, match="cannot read"):
        load_announced(replace(made, location="/nonexistent"), settings, None)


def test_a_swap_replaces_the_model_and_frees_the_old_one(
    tiny_bundle: Path, second_bundle: Path
) -> None:
    old = Runtime.load(tiny_bundle, device="cpu")
    new = Runtime.load(second_bundle, device="cpu")
    worker = SimpleNamespace(inference=SimpleNamespace(model=old, explainer=None), shadow=None)
    metrics = Metrics()
    swapper = ModelSwapper(Settings(device="cpu"), worker, metrics, Startup(old, None))
    gone = weakref.ref(old)
    del old

    swapper._swap_champion(announced(second_bundle), new, 0.1)
    gc.collect()

    assert worker.inference.model is new and swapper.champion_version == new.version
    assert metrics.health.model_version == new.version
    assert gone() is None  # nothing else held the replaced runtime
    assert b'bstream_model_info{model_version="%s",role="champion"} 1.0' % new.version.encode() in (
        metrics.exposition()
    )
