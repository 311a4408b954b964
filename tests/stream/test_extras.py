"""Install extras: the serving path runs without [train]/[explain]; their commands say what to add.

The checks run in one fresh interpreter where the extras' packages are made unimportable
(`sys.modules[name] = None`), as after a `pip install .` without extras.
"""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest

from model.extras import EXTRAS, MissingExtra, extra_for_module, require_extra

# the extras' modules, and what only they pull in (MiniLM -> sentence-transformers)
HIDDEN = sorted({m for mods in EXTRAS.values() for m in mods} | {"sentence_transformers"})
SERVING = ["worker", "replay", "topics", "tail", "simulate", "erase"]
OFFLINE = ["train", "eval", "bench-model", "ensemble"]
SLIM = f"""
import json, sys
for name in {HIDDEN!r}:
    sys.modules[name] = None  # not installed
import model.explain, model.runtime, stream.commands.replay, stream.commands.worker, stream.worker
from click.testing import CliRunner
from stream.cli import main
runs = [[c, "--help"] for c in {SERVING!r}] + [[c, "--data", "x.jsonl"] for c in {OFFLINE!r}]
out = {{}}
for args in runs:
    got = CliRunner().invoke(main, args, prog_name="bstream")
    out[args[0]] = [got.exit_code, got.output]
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def slim() -> dict[str, Any]:
    """command -> [exit code, output] of `bstream <command> ...` with no extras importable."""
    done = subprocess.run([sys.executable, "-c", SLIM], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.splitlines()[-1])  # type: ignore[no-any-return]


@pytest.mark.parametrize("command", SERVING)
def test_serving_commands_work_without_extras(slim: dict[str, Any], command: str) -> None:
    code, output = slim[command]

    assert code == 0, output
    assert output.startswith(f"Usage: bstream {command}")


@pytest.mark.parametrize("command", OFFLINE)
def test_offline_commands_without_the_extra_say_which_to_install(
    slim: dict[str, Any], command: str
) -> None:
    code, output = slim[command]

    assert code == 1
    assert output == (
        f"Error: bstream {command} needs the [train] extra: install 'behavior-stream[train]'\n"
    )


def test_extra_lookups() -> None:
    assert extra_for_module("captum.attr") == "explain"
    assert extra_for_module("torch") is None
    require_extra("train")  # installed in the development venv
    with pytest.raises(KeyError):
        require_extra("gpu")
    assert issubclass(MissingExtra, ValueError)  # CLIs turn it into one `Error:` line
