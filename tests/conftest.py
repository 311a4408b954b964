"""Shared fixtures: a real embedded broker and a tiny real model bundle."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from stream.kafka.broker import EmbeddedBroker

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO.parent / "shared" / "data"
TAOBAO_SLICE = SHARED_DATA / "taobao" / "UserBehavior_timeslice_110k.csv"
TAOBAO_USERS = SHARED_DATA / "taobao_users" / "UserBehavior_users800.csv"


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedBroker]:
    """One real Tansu broker for the whole session, on a free port; always torn down."""
    log = tmp_path_factory.mktemp("broker") / "broker.log"
    with EmbeddedBroker(log_path=log) as running:
        yield running


@pytest.fixture
def fresh_broker(tmp_path: Path) -> Iterator[EmbeddedBroker]:
    """A broker of its own, for tests that stop or restart it."""
    with EmbeddedBroker(log_path=tmp_path / "broker.log") as running:
        yield running


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny real bundle (small BERT config, exported through the real export path)."""
    from model.tiny import build_tiny_bundle

    return build_tiny_bundle(tmp_path_factory.mktemp("bundle") / "tiny")


def need_shared(path: Path) -> Path:
    """Skip the calling test when the shared data file is absent."""
    if not path.is_file():
        pytest.skip(f"shared data not present: {path}")
    return path


@pytest.fixture(scope="session")
def second_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Another tiny real bundle (other seed, so another version): the one promoted in swap tests."""
    from model.tiny import build_tiny_bundle

    return build_tiny_bundle(tmp_path_factory.mktemp("bundle2") / "tiny2", seed=1, steps=20)
