"""Model CLI commands (train, eval, export, bench-model): thin click wrappers over model.* logic."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click

from schemas.formats import FORMAT_NAMES
from stream.commands import checks
from stream.commands.common import env_default
from stream.commands.explain import explain  # noqa: F401  (`bstream explain`, in its own module)

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

FORMAT = click.Choice(FORMAT_NAMES)
EXISTING_FILE = click.Path(exists=True, dir_okay=False, path_type=Path)
POSITIVE = click.FloatRange(min=0, min_open=True)
COUNT = click.IntRange(min=1)
LABELS = ("purchase", "cart", "fav", "click")  # model.labels.LABEL_EVENT_TYPES, without importing


def bundle_option(func: Callable[..., Any]) -> Callable[..., Any]:
    """`--bundle DIR`, defaulting to $BSTREAM_MODEL; checked to be a bundle before any work."""

    def check(_ctx: click.Context, _param: click.Parameter, value: Path | None) -> Path:
        return checks.bundle_dir(value, "--bundle")

    return click.option(
        "--bundle", envvar="BSTREAM_MODEL", type=click.Path(path_type=Path), callback=check,
        help=f"Model bundle directory  {env_default('model')}",
    )(func)  # fmt: skip


BUNDLE = bundle_option


def renamed(old: str, new: str) -> None:
    """A one-line pointer from an option's old name to its new one."""
    raise click.BadParameter(
        f"renamed: use {new} N for bootstrap resamples ({old} means HOST:PORT in Kafka commands)",
        param_hint=old,
    )


def quiet_transformers() -> None:
    """Drop transformers' "Using the default loss: ForCausalLMLoss" notice (no loss is used)."""
    import logging

    logging.getLogger("transformers.modeling_utils").addFilter(
        lambda record: "ForCausalLMLoss" not in record.getMessage()
    )


@contextmanager
def user_errors() -> Iterator[None]:
    """Turn expected failures into one-line click errors (no tracebacks for user mistakes)."""
    from model.bundle import BundleError
    from model.export import ExportError
    from schemas.formats import FormatError

    try:
        yield
    except (BundleError, ExportError, FormatError, ValueError, FileNotFoundError) as exc:
        raise click.ClickException(
            str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        ) from exc


def data_options(func: Callable[..., Any]) -> Callable[..., Any]:
    func = click.option(
        "--format",
        "fmt",
        type=FORMAT,
        default="jsonl",
        show_default=True,
        help="Format of --data.",
    )(func)
    func = click.option(
        "--data", required=True, type=EXISTING_FILE, help="Event file (jsonl, taobao or rees46)."
    )(func)
    return func


@click.command()
@data_options
@click.option(
    "--out", required=True, type=click.Path(path_type=Path), help="Bundle directory to write."
)
@click.option(
    "--base",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Local HF BERT dir  [default: the packaged all-MiniLM-L6-v2]",
)
@click.option(
    "--max-minutes",
    type=POSITIVE,
    default=28.0,
    show_default=True,
    help="Budget for the whole command (see --clock); keeps the best checkpoint so far.",
)
@click.option(
    "--epochs",
    type=POSITIVE,
    default=3.0,
    show_default=True,
    help="Passes over the training sample.",
)
@click.option(
    "--max-len",
    type=click.IntRange(min=8),
    default=64,
    show_default=True,
    help="Tokens per window, including [CLS]/[SEP].",
)
@click.option(
    "--window",
    type=COUNT,
    default=50,
    show_default=True,
    help="Newest events considered per window.",
)
@click.option(
    "--max-train",
    type=COUNT,
    default=None,
    help="Training windows per epoch  [default: all]",
)
@click.option(
    "--balance",
    type=click.Choice(["natural", "balanced"]),
    default="natural",
    show_default=True,
    help="Train at the natural positive rate, or on a class-balanced sample.",
)
@click.option(
    "--fusion",
    type=click.Choice(["auto", "features", "features+ngrams", "none"]),
    default="auto",
    show_default=True,
    help="Late fusion: the head also sees window aggregates (and n-grams if val prefers them).",
)
@click.option(
    "--batch-size", type=COUNT, default=16, show_default=True, help="Training batch size."
)
@click.option(
    "--lr",
    type=POSITIVE,
    default=2e-4,
    show_default=True,
    help="Encoder learning rate (head: 10x).",
)
@click.option(
    "--linear-lr",
    type=click.FloatRange(min=0),
    default=0.5,
    show_default=True,
    help="Fused linear parts' learning rate, as a multiple of --lr (0: keep the LR warm start).",
)
@click.option(
    "--recent-frac",
    type=click.FloatRange(0, 1, min_open=True),
    default=1.0,
    show_default=True,
    help="Fine-tune the encoder on the newest share of train windows (1: all); baselines and "
    "the linear warm start always use all.",
)
@click.option(
    "--layers",
    type=click.IntRange(min=0),
    default=3,
    show_default=True,
    help="Keep only the base model's first N layers (0: all); fewer layers see more data.",
)
@click.option(
    "--val-size",
    type=COUNT,
    default=3000,
    show_default=True,
    help="Val windows for early stopping.",
)
@click.option(
    "--labels",
    default="purchase,cart",
    show_default=True,
    help=f"Comma-separated heads from {', '.join(LABELS)}; the first is the primary.",
)
@click.option(
    "--item-identity",
    type=click.Choice(["local", "hash", "none"]),
    default="local",
    show_default=True,
    help="Item tokens: ids local to the window, hashed ids, or none.",
)
@click.option(
    "--time-mode",
    type=click.Choice(["every", "change"]),
    default="change",
    show_default=True,
    help="Time-gap tokens before every event, or only where the gap bucket changes.",
)
@click.option(
    "--horizon-min",
    type=POSITIVE,
    default=30.0,
    show_default=True,
    help="Label: purchase within this many minutes.",
)
@click.option(
    "--arch",
    type=click.Choice(["bidirectional", "causal"]),
    default="bidirectional",
    show_default=True,
    help="causal: every event of a window is a training example (more labels per step).",
)
@click.option(
    "--summary/--no-summary",
    default=True,
    show_default=True,
    help="Header of window aggregates (bought/basket/viewed/items/...); bidirectional only.",
)
@click.option(
    "--clock",
    type=click.Choice(["wall", "cpu"]),
    default="wall",
    show_default=True,
    help="--max-minutes in wall time, or in CPU time / 2 (fair on a busy shared machine).",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Random seed.")
@click.option(
    "--patience",
    type=click.IntRange(min=0),
    default=4,
    show_default=True,
    help="Validations without a val PR-AUC gain before training stops (0: never stop early).",
)
@click.option(
    "--threads",
    type=click.IntRange(min=1),
    default=None,
    help="Torch threads  [default: all cores, or 1 when the load average exceeds the cores]",
)
@click.option(
    "--init",
    type=click.Choice(["pretrained", "scratch"]),
    default="pretrained",
    show_default=True,
    help="Start from the pretrained weights, or from random ones (the ablation `eval --scratch` "
    "compares against).",
)
@click.option(
    "--dp-epsilon",
    type=POSITIVE,
    default=None,
    help="Train with differential privacy at this epsilon  [default: off]",
)
@click.option(
    "--dp-delta",
    type=click.FloatRange(0, 1, min_open=True, max_open=True),
    default=1e-5,
    show_default=True,
    help="DP delta (with --dp-epsilon).",
)
@click.option(
    "--dp-train",
    type=click.Choice(["all", "top", "head"]),
    default="head",
    show_default=True,
    help="What DP-SGD trains: all (but broadcast embeddings), top (last layer + head), head.",
)
def train(data: Path, fmt: str, out: Path, base: Path | None, **opts: Any) -> None:
    """Fine-tune the pretrained BERT on behaviour windows and write a bundle."""
    # Everything that can be wrong with the arguments is checked before data or model load.
    labels = checks.names(opts.pop("labels"), "--labels", LABELS)
    checks.out_dir(out, "--out")
    checks.format_matches(data, fmt)

    from model.data import load_data
    from model.encoding import EncodingConfig
    from model.model import default_base_dir
    from model.train import TrainConfig, train_bundle

    with user_errors():
        labelled = load_data(data, fmt, horizon_min=opts.pop("horizon_min"), labels=labels)
        click.echo(f"data: {json.dumps(labelled.stats)}")
        causal = opts.pop("arch") == "causal"
        opts["layers"] = opts["layers"] or None
        encoding = EncodingConfig(
            max_len=opts.pop("max_len"), window=opts.pop("window"),
            item_identity=opts.pop("item_identity"), time_mode=opts.pop("time_mode"),
            time_ref="prev" if causal else "now", name_order="oldest" if causal else "newest",
            summary=opts.pop("summary") and not causal,
        )  # fmt: skip
        cfg = TrainConfig(**{**opts, "head_lr": opts["lr"] * 10, "causal": causal})
        bundle, result = train_bundle(labelled, out, base or default_base_dir(), encoding, cfg)
    click.echo(f"best: {json.dumps(result.best)}; {result.stopped}; {result.seconds:.0f} s")
    click.echo(f"bundle written: {bundle}")


@click.command()
@BUNDLE
@data_options
@click.option(
    "--json",
    "json_path",
    type=click.Path(path_type=Path),
    help="Write the machine-readable report here.",
)
@click.option(
    "--out", type=click.Path(path_type=Path), help="Report directory  [default: <bundle>/eval]"
)
@click.option(
    "--horizon-min",
    type=POSITIVE,
    default=None,
    help="Label horizon in minutes  [default: the bundle's]",
)
@click.option(
    "--max-test",
    type=COUNT,
    default=None,
    help="Evaluate a random subset of the test split  [default: all]",
)
@click.option(
    "--resamples",
    "n_boot",
    type=COUNT,
    default=1000,
    show_default=True,
    help="Bootstrap resamples for the confidence intervals.",
)
@click.option(
    "--bootstrap",
    "old_bootstrap",
    hidden=True,
    callback=lambda _c, _p, v: renamed("--bootstrap", "--resamples") if v is not None else None,
    help="Renamed to --resamples.",
)
@click.option("--quantize", is_flag=True, help="Score the bundle with int8 dynamic quantization.")
@click.option(
    "--refit-baselines",
    is_flag=True,
    help="Fit the baselines on this file's train/val split  [default: the bundle's stored ones]",
)
@click.option(
    "--scratch",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=None,
    help="A bundle trained with `--init scratch` on the same data: report what pretraining adds.",
)
@click.option(
    "--learning-curve",
    is_flag=True,
    help="Also score the training run's snapshots (5k, 15k, 30k, ... windows) on test.",
)
@click.option(
    "--split",
    type=click.Choice(["test", "val"]),
    default="test",
    show_default=True,
    help="Rows to score: val to choose between bundles (settings, seeds) without looking at test.",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Random seed.")
def evaluate(
    bundle: Path,
    data: Path,
    fmt: str,
    json_path: Path | None,
    out: Path | None,
    horizon_min: float | None,
    old_bootstrap: None,
    **opts: Any,
) -> None:
    """Evaluate a bundle against its stored baselines (LR, LightGBM, n-gram LR) on test."""
    if json_path is not None:
        checks.out_file(json_path, "--json")
    if out is not None:
        checks.out_dir(out, "--out")
    checks.format_matches(data, fmt)
    from model.bundle import CURVE_FILE, validate_bundle
    from model.data import load_data
    from model.evaluate import evaluate as run_eval
    from model.evaluate import write_outputs

    with user_errors():
        meta = validate_bundle(bundle)
        if opts["scratch"] is not None:
            validate_bundle(opts["scratch"])
        if opts["learning_curve"] and not (bundle / CURVE_FILE).is_file():
            raise click.UsageError(
                f"--learning-curve: {bundle} has no snapshots ({CURVE_FILE}); "
                "retrain it with this version of `bstream train`"
            )
        fingerprint = meta.data_fingerprint or {}
        horizon = (
            horizon_min if horizon_min is not None else float(fingerprint.get("horizon_min", 30.0))
        )
        labelled = load_data(data, fmt, horizon_min=horizon)
        result, scores, y = run_eval(bundle, labelled, **opts)
        report = write_outputs(result, scores, y, out or bundle / "eval")
        if json_path:
            json_path.parent.mkdir(parents=True, exist_ok=True)
            json_path.write_text(json.dumps(result, indent=2, default=str) + "\n")
    click.echo(report.read_text())
    click.echo(f"report: {report}")


@click.command()
@BUNDLE
@click.option(
    "--checkpoint",
    type=EXISTING_FILE,
    help="State dict to export  [default: <bundle>/checkpoint.pt]",
)
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    help="Bundle directory to write  [default: the --bundle, in place]",
)
def export(bundle: Path, checkpoint: Path | None, out: Path | None) -> None:
    """Re-export a bundle's checkpoint to TorchScript; refuses if parity with eager fails."""
    checks.torch_checkpoint(checkpoint or bundle / "checkpoint.pt", "--checkpoint")
    if out is not None:
        checks.out_dir(out, "--out")
    from model.export import reexport

    quiet_transformers()

    with user_errors():
        written, diff = reexport(bundle, checkpoint, out or bundle)
    click.echo(f"exported {written} (parity max |dp| = {diff:.2e})")


@click.command(name="bench-model")
@BUNDLE
@click.option(
    "--batch-sizes",
    default="1,8,32,128",
    show_default=True,
    help="Comma-separated batch sizes (each >= 1).",
)
@click.option(
    "--seconds", type=POSITIVE, default=3.0, show_default=True, help="Measuring time per cell."
)
@click.option(
    "--lengths", default=None, help="Comma-separated token lengths  [default: the bundle's buckets]"
)
@click.option(
    "--device",
    type=click.Choice(["auto", "cpu", "cuda"]),
    default=None,
    help=f"Device  {env_default('device')}",
)
@click.option(
    "--json", "json_path", type=click.Path(path_type=Path), help="Write the figures as JSON."
)
@click.option(
    "--data", type=EXISTING_FILE, help="Measure int8's accuracy cost on this file's test split."
)
@click.option(
    "--format", "fmt", type=FORMAT, default="jsonl", show_default=True, help="Format of --data."
)
@click.option(
    "--sample", type=COUNT, default=1000, show_default=True, help="Test windows for the int8 cost."
)
def bench_model(
    bundle: Path,
    batch_sizes: str,
    seconds: float,
    lengths: str | None,
    device: str | None,
    json_path: Path | None,
    data: Path | None,
    fmt: str,
    sample: int,
) -> None:
    """Model-only throughput: eager vs TorchScript vs int8 by batch size; int8's accuracy cost."""
    sizes = checks.int_list(batch_sizes, "--batch-sizes")
    lens = checks.int_list(lengths, "--lengths", minimum=3) if lengths else None
    if json_path is not None:
        checks.out_file(json_path, "--json")
    if data is not None:
        checks.format_matches(data, fmt)
    device = device or os.environ.get("BSTREAM_DEVICE", "auto")
    from model.bench import run_bench

    with user_errors():
        real = int8_sample(bundle, data, fmt, sample) if data else None
        result = run_bench(bundle, sizes, lens, seconds, device, echo=click.echo, sample=real)
    if json_path:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(result, indent=2) + "\n")


def int8_sample(bundle: Path, data: Path, fmt: str, n: int) -> tuple[list[Any], list[float], str]:
    """Up to n random test-split windows of `data` (the bundle's window size) with labels."""
    import random

    from model.bundle import read_meta
    from model.data import load_data

    meta = read_meta(bundle)
    horizon = float((meta.data_fingerprint or {}).get("horizon_min", 30.0))
    labelled = load_data(data, fmt, horizon_min=horizon)
    test = labelled.split("test")
    chosen = random.Random(0).sample(test, min(n, len(test)))
    size = int(meta.encoding.get("window", 50))
    windows = [labelled.window(e, size) for e in chosen]
    return windows, [e.labels[0] for e in chosen], f"{len(chosen)} test windows of {data.name}"


@click.command()
@click.option(
    "--bundles", "members", multiple=True, required=True, type=click.Path(path_type=Path),
    help="A member bundle (repeat: --bundles A --bundles B ...).",
)  # fmt: skip
@click.option("--out", required=True, type=click.Path(path_type=Path), help="Bundle to write.")
@click.option("--data", type=EXISTING_FILE, help="Also score members and ensemble on val.")
@click.option(
    "--format", "fmt", type=FORMAT, default="jsonl", show_default=True, help="Format of --data."
)
@click.option("--max-val", type=COUNT, default=None, help="Random val subset  [default: all]")
def ensemble(
    members: tuple[Path, ...], out: Path, data: Path | None, fmt: str, max_val: int | None
) -> None:
    """Combine bundles (same tokenizer and encoding) into one that averages their probabilities."""
    for member in members:
        checks.bundle_dir(member, "--bundles")
    checks.out_dir(out, "--out")
    if data is not None:
        checks.format_matches(data, fmt)
    from model.bundle import update_metrics
    from model.ensemble import build_ensemble

    quiet_transformers()

    with user_errors():
        written = build_ensemble(members, out)
        click.echo(f"ensemble of {len(members)} bundles written: {written}")
        if data:
            update_metrics(written, {"val": val_scores([*members, written], data, fmt, max_val)})


def val_scores(bundles: list[Path], data: Path, fmt: str, limit: int | None) -> dict[str, Any]:
    """Val-split PR-AUC and AUC per bundle: choose ensemble members on these, never on test."""
    import numpy as np

    from model.bundle import read_meta
    from model.data import load_data
    from model.evaluate import bundle_scores, subsample
    from model.metrics import pr_auc, roc_auc
    from model.runtime import Runtime

    fingerprint = read_meta(bundles[-1]).data_fingerprint or {}
    labelled = load_data(data, fmt, horizon_min=float(fingerprint.get("horizon_min", 30.0)))
    val = subsample(labelled.split("val"), limit, seed=0)
    y = np.array([e.labels[0] for e in val])
    rows: dict[str, dict[str, float]] = {}
    for bundle in bundles:
        scores = bundle_scores(Runtime.load(bundle, device="cpu"), labelled, val, bundle.name)
        row = rows[str(bundle)] = {"pr_auc": pr_auc(y, scores), "auc": roc_auc(y, scores)}
        click.echo(f"val PR-AUC {row['pr_auc']:.4f}  AUC {row['auc']:.4f}  {bundle}")
    click.echo(f"(val: {len(y)} windows, {int(y.sum())} positives)")
    return {"n": len(y), "n_pos": int(y.sum()), "bundles": rows}
