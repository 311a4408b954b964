"""Cheap argument checks that run before any heavy import (torch, transformers, faust).

Each check raises click.BadParameter / click.ClickException with one line that names the option
and says what would be right, so a wrong argument costs well under a second, never a model load.
"""

from __future__ import annotations

import os
import socket
import zipfile
from collections.abc import Sequence
from pathlib import Path

import click

# How many non-blank rows the format sniffer and the early format check look at.
SNIFF_ROWS = 20


def out_dir(path: Path, option: str) -> Path:
    """A directory to write: not an existing file, and its nearest existing parent writable."""
    if path.exists() and not path.is_dir():
        raise click.BadParameter(
            f"{path} is an existing file; give a directory path", param_hint=option
        )
    _writable_parent(path if path.is_dir() else path.parent, option, path)
    return path


def out_file(path: Path, option: str) -> Path:
    """A file to write: not a directory, and its nearest existing parent writable."""
    if path.is_dir():
        raise click.BadParameter(f"{path} is a directory; give a file path", param_hint=option)
    _writable_parent(path.parent, option, path)
    return path


def _writable_parent(parent: Path, option: str, path: Path) -> None:
    existing = parent.absolute()
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise click.BadParameter(f"cannot write {path}: {existing} is a file", param_hint=option)
    if not os.access(existing, os.W_OK | os.X_OK):
        raise click.BadParameter(
            f"cannot write {path}: {existing} is not writable", param_hint=option
        )


def log_file(path: Path, option: str) -> Path:
    """A log file whose directory already exists and is writable."""
    if path.is_dir():
        raise click.BadParameter(f"{path} is a directory; give a file path", param_hint=option)
    if not path.parent.absolute().is_dir():
        raise click.BadParameter(
            f"directory {path.parent} does not exist; create it or pick another path",
            param_hint=option,
        )
    if not os.access(path.parent.absolute(), os.W_OK | os.X_OK):
        raise click.BadParameter(f"directory {path.parent} is not writable", param_hint=option)
    return path


def bundle_dir(path: Path | None, option: str, env: str = "BSTREAM_MODEL") -> Path:
    """A model bundle directory that exists and holds bundle.json (contents are checked later)."""
    if path is None:
        raise click.UsageError(f"no model bundle: pass {option} DIR or set {env}")
    if not path.is_dir():
        raise click.BadParameter(
            f"{path} is not a directory; give a model bundle directory", param_hint=option
        )
    if not (path / "bundle.json").is_file():
        raise click.BadParameter(
            f"{path} is not a model bundle (no bundle.json); give a directory written by "
            "`bstream train`",
            param_hint=option,
        )
    return path


def torch_checkpoint(path: Path, option: str) -> Path:
    """A file written by torch.save (a zip archive since torch 1.6)."""
    if not zipfile.is_zipfile(path):
        raise click.BadParameter(
            f"{path} is not a PyTorch checkpoint (torch.save zip archive)", param_hint=option
        )
    return path


def int_list(text: str, option: str, minimum: int = 1) -> list[int]:
    """'1,8,32' -> [1, 8, 32]; each at least `minimum`."""
    values: list[int] = []
    for part in text.split(","):
        try:
            value = int(part.strip())
        except ValueError:
            raise click.BadParameter(
                f"{part.strip()!r} is not an integer; give comma-separated integers like 1,8,32",
                param_hint=option,
            ) from None
        if value < minimum:
            raise click.BadParameter(
                f"{value} is below {minimum}; give integers >= {minimum} like 1,8,32",
                param_hint=option,
            )
        values.append(value)
    return values


def names(text: str, option: str, allowed: Sequence[str]) -> tuple[str, ...]:
    """'a,b' -> ('a', 'b'), each one of `allowed`, at least one."""
    chosen = tuple(x.strip() for x in text.split(",") if x.strip())
    bad = [x for x in chosen if x not in allowed]
    if bad or not chosen:
        what = f"unknown {bad[0]!r}" if bad else "empty"
        raise click.BadParameter(
            f"{what}; give a comma-separated subset of {', '.join(allowed)}", param_hint=option
        )
    return chosen


def host(name: str, option: str) -> str:
    """A host name or address that resolves."""
    if not name.strip():
        raise click.BadParameter("empty; give a host name or IP address", param_hint=option)
    try:
        socket.getaddrinfo(name, None)
    except (socket.gaierror, UnicodeError):
        raise click.BadParameter(
            f"cannot resolve {name!r}; give a host name or IP address like 127.0.0.1",
            param_hint=option,
        ) from None
    return name


def bootstrap_servers(bootstrap: str) -> list[tuple[str, int]]:
    """'h1:9092,h2:9092' -> [(h1, 9092), (h2, 9092)]; a one-line error when malformed."""
    servers: list[tuple[str, int]] = []
    for part in bootstrap.split(","):
        name, _, port = part.strip().rpartition(":")
        name = name.strip("[]")  # [::1]:9092
        if not name or not port.isdigit() or not 0 < int(port) < 65536:
            raise click.BadParameter(
                f"{bootstrap!r} is not HOST:PORT[,HOST:PORT...] (e.g. 127.0.0.1:9092)",
                param_hint="--bootstrap / BSTREAM_BOOTSTRAP",
            )
        servers.append((name, int(port)))
    return servers


def port_free(port: int, option: str) -> None:
    """The port can be listened on now (0: any free port)."""
    if port == 0:
        return
    with socket.socket() as sock:
        try:
            sock.bind(("0.0.0.0", port))
        except OSError as exc:
            raise click.BadParameter(
                f"port {port} is not free ({exc.strerror}); pick another, or 0 for any free port",
                param_hint=option,
            ) from None


def sniff_format(path: Path) -> str | None:
    """Which input format a file looks like from its first rows: jsonl, taobao, rees46 or None."""
    from schemas.formats import FORMAT_NAMES, read_rows

    best, best_valid = None, 0
    for fmt in FORMAT_NAMES:
        valid = 0
        try:
            for n, row in enumerate(read_rows(path, fmt)):
                if n >= SNIFF_ROWS:
                    break
                valid += row.event is not None
        except (OSError, ValueError):
            continue
        if valid > best_valid:
            best, best_valid = fmt, valid
    return best


def format_matches(path: Path, fmt: str, option: str = "--format", strict: bool = True) -> None:
    """Refuse a file whose first rows are all invalid as `fmt`, naming the format it looks like.

    strict=False refuses only when another format reads those rows (a conclusive mistake).
    """
    from schemas.formats import read_rows

    rows = 0
    try:
        for row in read_rows(path, fmt):
            if row.event is not None:
                return
            rows += 1
            if rows >= SNIFF_ROWS:
                break
    except (OSError, ValueError):
        return  # unreadable files are reported by the reader itself, with its own reason
    if rows == 0 or (not strict and sniff_format(path) in (None, fmt)):
        return
    raise click.BadParameter(wrong_format_message(path, fmt, rows), param_hint=option)


def wrong_format_message(path: Path, fmt: str, rows: int) -> str:
    """'the first N rows of FILE are not valid FMT; it looks like X: pass --format X'."""
    looks = sniff_format(path)
    hint = (
        f"it looks like {looks}: pass --format {looks}"
        if looks and looks != fmt
        else "no format (jsonl, taobao, rees46) reads it"
    )
    return f"none of the first {rows} rows of {path} is a valid {fmt} event; {hint}"
