"""Model-test fixtures: a small simulated event file and a tiny local HF BERT base directory."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
import torch
from transformers import BertConfig, BertModel

from model.model import default_base_dir
from model.runtime import load_tokenizer
from model.tiny import tiny_bert_config
from stream.simulate import simulate_events


@pytest.fixture(scope="session")
def sim_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """300 simulated users as JSONL (the replay format)."""
    path = tmp_path_factory.mktemp("sim") / "events.jsonl"
    path.write_bytes(
        b"\n".join(orjson.dumps(e) for e in simulate_events(users=300, seed=3)) + b"\n"
    )
    return path


@pytest.fixture(scope="session")
def tiny_base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A local HF BERT directory (2 layers, hidden 64, MiniLM tokenizer) for fast `--base` runs."""
    path = tmp_path_factory.mktemp("tiny-base")
    torch.manual_seed(0)
    BertModel(
        BertConfig.from_dict(tiny_bert_config(30522, 64)), add_pooling_layer=False
    ).save_pretrained(path)
    load_tokenizer(default_base_dir()).save_pretrained(path)
    return path
