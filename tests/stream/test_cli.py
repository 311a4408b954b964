"""CLI behaviour shared by the Kafka subcommands: help, settings from the environment, errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from stream.kafka.broker import free_port
from tests.stream.kafka_helpers import run_cli

MY_COMMANDS = [
    ["broker"],
    ["topics"],
    ["topics", "create"],
    ["topics", "list"],
    ["replay"],
    ["simulate"],
    ["tail"],
]


@pytest.mark.parametrize("command", MY_COMMANDS, ids=" ".join)
def test_every_command_has_help(command: list[str]) -> None:
    result = run_cli(*command, "--help")

    assert result.exit_code == 0
    assert "Usage: main " + " ".join(command) in result.output


@pytest.mark.parametrize("command", [["topics", "create"], ["replay"], ["tail"]], ids=" ".join)
def test_kafka_commands_take_bootstrap(command: list[str]) -> None:
    assert "--bootstrap HOST:PORT" in run_cli(*command, "--help").output


def test_bootstrap_default_comes_from_the_environment() -> None:
    bootstrap = f"127.0.0.1:{free_port()}"

    result = run_cli("tail", env={"BSTREAM_BOOTSTRAP": bootstrap})

    assert result.exit_code == 1
    assert f"cannot reach Kafka at {bootstrap}" in result.stderr


def test_a_bad_setting_in_the_environment_is_one_line() -> None:
    result = run_cli("topics", "create", env={"BSTREAM_PARTITIONS": "zero"})

    assert result.exit_code == 1
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("Error: bad setting partitions: Input should be a valid integer")


@pytest.mark.parametrize(
    "args",
    [
        ["replay", "f.jsonl", "--rate", "-5"],
        ["replay", "f.jsonl", "--limit", "0"],
        ["replay", "f.jsonl", "--partitioner", "crc"],
        ["topics", "create", "--partitions", "0"],
        ["tail", "--limit", "0"],
        ["broker", "--port", "70000"],
    ],
    ids=" ".join,
)
def test_bad_option_values_are_usage_errors(args: list[str], tmp_path: Path) -> None:
    result = run_cli(*args)

    assert result.exit_code == 2
    assert result.stderr.strip().splitlines()[-1].startswith("Error: Invalid value for")
