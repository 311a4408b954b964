"""Drift reference of a bundle: histograms of its validation windows and their scores.

`train_bundle` writes it after export; `bstream drift-reference` adds one to an existing bundle.
The histograms and PSI are in model/drift.py (the worker uses the same profile function).
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import click

from model.data import LabelledData
from model.drift import build_reference, events_profile, save_reference

MAX_WINDOWS = 1000
CHUNK = 64


def reference_for_bundle(
    bundle_dir: Path, data: LabelledData, window: int, max_windows: int = MAX_WINDOWS, seed: int = 0
) -> Path:
    """Score a sample of the validation windows with the bundle; write drift_reference.json."""
    from model.runtime import Runtime

    runtime = Runtime.load(bundle_dir, device="cpu")
    val = data.split("val") or data.examples
    examples = random.Random(seed).sample(val, min(max_windows, len(val)))
    windows = [data.window(e, window) for e in examples]
    label = runtime.labels[0]
    scores: list[float] = []
    for start in range(0, len(windows), CHUNK):
        scores += [row[label] for row in runtime.predict(windows[start : start + CHUNK])]
    reference: dict[str, Any] = build_reference([events_profile(w) for w in windows], scores)
    reference.update(label=label, source=data.fingerprint.get("file"), split="val")
    return save_reference(bundle_dir, reference)


@click.command(name="drift-reference")
@click.option(
    "--bundle",
    required=True,
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Bundle directory to add drift_reference.json to.",
)
@click.option(
    "--data",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Event file whose validation windows make the reference.",
)
@click.option("--format", "fmt", default="jsonl", show_default=True, help="Input file format.")
@click.option(
    "--max-windows", default=MAX_WINDOWS, show_default=True, help="Validation windows to score."
)
def drift_reference(bundle: Path, data: Path, fmt: str, max_windows: int) -> None:
    """Add drift reference histograms (the validation windows of DATA) to an existing bundle."""
    from model.bundle import BundleError, read_meta
    from model.data import load_data
    from schemas.formats import FormatError

    try:
        meta = read_meta(bundle)
        horizon = float((meta.data_fingerprint or {}).get("horizon_min", 30.0))
        labelled = load_data(data, fmt, horizon_min=horizon, labels=meta.labels)
        path = reference_for_bundle(
            bundle, labelled, int(meta.encoding.get("window", 50)), max_windows
        )
    except (BundleError, FormatError, ValueError) as exc:
        raise click.ClickException(str(exc).splitlines()[0]) from None
    click.echo(f"wrote {path}")
