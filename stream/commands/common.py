"""Options and helpers shared by the Kafka subcommands."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click
from pydantic import ValidationError

from stream.commands.checks import bootstrap_servers
from stream.settings import Settings

F = TypeVar("F", bound=Callable[..., Any])


def env_default(field: str, fallback: Any = None) -> str:
    """The one style every command uses for a default from the environment.

    `[default: $BSTREAM_X or <Settings default>]`, or `[default: $BSTREAM_X]` when there is none.
    """
    value = Settings.model_fields[field].default if fallback is None else fallback
    if isinstance(value, bool):
        value = "on" if value else "off"
    env = f"$BSTREAM_{field.upper()}"
    return f"[default: {env} or {value}]" if value not in (None, "") else f"[default: {env}]"


def bootstrap_option(func: F) -> F:
    """`--bootstrap HOST:PORT`, defaulting to BSTREAM_BOOTSTRAP or 127.0.0.1:9092."""
    return click.option(
        "--bootstrap",
        metavar="HOST:PORT",
        default=None,
        help=f"Kafka bootstrap servers  {env_default('bootstrap')}",
    )(func)


def load_settings(**overrides: Any) -> Settings:
    """Settings from BSTREAM_* with the given CLI values on top (None means: not given)."""
    given = {name: value for name, value in overrides.items() if value is not None}
    try:
        settings = Settings(**given)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        raise click.ClickException(f"bad setting {where}: {first['msg']}") from None
    bootstrap_servers(settings.bootstrap)
    return settings
