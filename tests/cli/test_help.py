"""Consistent help: every option documented, environment defaults shown one way."""

from __future__ import annotations

import re

import click
import pytest
from click.testing import CliRunner

from stream.cli import COMMANDS, main


def _commands() -> list[tuple[str, click.Command]]:
    found = []
    for name in sorted(COMMANDS):
        command = main.get_command(click.Context(main), name)
        assert command is not None
        found.append((name, command))
        if isinstance(command, click.Group):
            found += [(f"{name} {sub}", command.commands[sub]) for sub in sorted(command.commands)]
    return found


COMMAND_LIST = _commands()


@pytest.mark.parametrize(("name", "command"), COMMAND_LIST, ids=[n for n, _ in COMMAND_LIST])
def test_every_option_has_help(name: str, command: click.Command) -> None:
    for param in command.params:
        if isinstance(param, click.Option) and not param.hidden:
            assert (param.help or "").strip(), f"bstream {name} {param.opts[0]} has no help"


@pytest.mark.parametrize(("name", "command"), COMMAND_LIST, ids=[n for n, _ in COMMAND_LIST])
def test_environment_defaults_are_shown_one_way(name: str, command: click.Command) -> None:
    for param in command.params:
        text = getattr(param, "help", None) or ""
        for mention in re.findall(r"\[[^\]]*\$BSTREAM_\w+[^\]]*\]", text):
            assert mention.startswith("[default: $BSTREAM_"), f"bstream {name}: {mention}"
        assert not getattr(param, "show_envvar", False), f"bstream {name} {param.name}"


def test_eval_resamples_replaces_bootstrap() -> None:
    result = CliRunner().invoke(main, ["eval", "--help"])

    assert "--resamples" in result.output
    assert "--bootstrap" not in result.output


def test_defaults_agree_across_commands() -> None:
    """bench and bench-model default like the others: --format jsonl, --device from settings."""
    helps = {name: CliRunner().invoke(main, [name, "--help"]).output for name in COMMANDS}

    for name in ("bench", "train", "eval", "bench-model", "replay", "explain", "ensemble"):
        assert re.search(r"--format \[jsonl\|taobao\|rees46\]", helps[name]), name
        assert "[default: jsonl]" in " ".join(helps[name].split()), name
    for name in ("worker", "bench", "bench-model"):
        assert "[default: $BSTREAM_DEVICE or auto]" in " ".join(helps[name].split()), name
