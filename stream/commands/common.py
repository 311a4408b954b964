"""Options and helpers shared by the Kafka subcommands."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click
from pydantic import ValidationError

from stream.settings import Settings

F = TypeVar("F", bound=Callable[..., Any])


def bootstrap_option(func: F) -> F:
    """`--bootstrap HOST:PORT`, defaulting to BSTREAM_BOOTSTRAP or 127.0.0.1:9092."""
    return click.option(
        "--bootstrap",
        metavar="HOST:PORT",
        default=None,
        help="Kafka bootstrap servers  [default: $BSTREAM_BOOTSTRAP or 127.0.0.1:9092]",
    )(func)


def load_settings(**overrides: Any) -> Settings:
    """Settings from BSTREAM_* with the given CLI values on top (None means: not given)."""
    given = {name: value for name, value in overrides.items() if value is not None}
    try:
        return Settings(**given)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        raise click.ClickException(f"bad setting {where}: {first['msg']}") from None
