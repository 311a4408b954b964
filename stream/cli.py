"""The `bstream` command line: a click group whose subcommands load lazily (torch is slow)."""

from __future__ import annotations

import importlib
import sys
from typing import Any

import click

from model.extras import extra_for_module, install_hint, missing_modules

# name -> "module:attribute"; each module defines one click command and stays importable on its own.
COMMANDS: dict[str, str] = {
    "broker": "stream.commands.broker:broker",
    "topics": "stream.commands.topics:topics",
    "replay": "stream.commands.replay:replay",
    "simulate": "stream.commands.simulate:simulate",
    "tail": "stream.commands.tail:tail",
    "monitor": "stream.commands.monitor:monitor",
    "drift-reference": "model.reference:drift_reference",
    "worker": "stream.commands.worker:worker",
    "demo": "stream.commands.demo:demo",
    "erase": "stream.commands.erase:erase",
    "bench": "stream.commands.bench:bench",
    "train": "stream.commands.model:train",
    "eval": "stream.commands.model:evaluate",
    "export": "stream.commands.model:export",
    "bench-model": "stream.commands.model:bench_model",
    "explain": "stream.commands.model:explain",
    "ensemble": "stream.commands.model:ensemble",
    "promote": "stream.commands.promote:promote",
    "models": "stream.commands.promote:models",
    "retrain": "stream.commands.retrain:retrain",
}

# Commands of the offline stack: they need an install extra (pyproject.toml); the rest need none.
# `explain` runs occlusion with the base install; only its `--method ig` needs [explain].
COMMAND_EXTRAS: dict[str, str] = {
    "train": "train",
    "eval": "train",
    "bench-model": "train",
    "ensemble": "train",
    "demo": "train",
    "bench": "train",  # builds the tiny bundle on the MiniLM tokenizer
    "retrain": "train",
}

HELP = {
    "broker": "Run the embedded Kafka-compatible broker (Tansu) in the foreground.",
    "topics": "Manage the events, predictions and DLQ topics.",
    "replay": "Replay an event file (jsonl, taobao, rees46) onto the events topic.",
    "simulate": "Write synthetic behaviour events as JSONL.",
    "tail": "Print predictions as they arrive.",
    "monitor": "Live accuracy, calibration and label delay per model version (outcomes topic).",
    "drift-reference": "Add drift reference histograms (validation windows) to a bundle.",
    "worker": "Run the stream worker (windows -> batched model -> predictions).",
    "demo": "Run the whole loop locally: broker, topics, model, worker, replay, tail.",
    "erase": "Erase a user's window (right to erasure) via the control topic.",
    "bench": "Side-by-side pipeline benchmark: model ceiling, optimized vs naive, latency, memory.",
    "train": "Fine-tune the pretrained BERT on behaviour sequences and write a bundle.",
    "eval": "Evaluate a bundle against logistic regression and LightGBM baselines.",
    "export": "Re-export a bundle's checkpoint to TorchScript with a parity check.",
    "bench-model": "Model-only throughput: eager vs TorchScript vs int8 by batch size.",
    "explain": "Explain one user window: which events moved the score.",
    "ensemble": "Combine bundles into one bundle that averages their probabilities.",
    "promote": "Validate a bundle and announce it (champion/challenger); --rollback.",
    "models": "List the announced models and what each worker runs.",
    "retrain": "Re-fine-tune the champion on recent events; announce the candidate if it wins.",
}


def error_line(exc: click.ClickException) -> str:
    """The one line a failed command prints: `Error: ...`, with a help hint for usage errors."""
    message = " ".join(exc.format_message().split())
    if isinstance(exc, click.UsageError) and exc.ctx is not None:
        message += f" (see '{exc.ctx.command_path} --help')"
    return f"Error: {message}"


class LazyGroup(click.Group):
    """A click group that imports a subcommand's module only when that subcommand runs."""

    def main(  # type: ignore[override]
        self,
        args: Any = None,
        prog_name: str | None = None,
        standalone_mode: bool = True,
        **kw: Any,
    ) -> Any:
        """Like click's, but every failure is one `Error: ...` line on stderr (no usage block)."""
        if not standalone_mode:
            return super().main(args, prog_name, standalone_mode=False, **kw)
        try:
            code = super().main(args, prog_name, standalone_mode=False, **kw)
        except click.exceptions.NoArgsIsHelpError as exc:
            exc.show()  # `bstream` or `bstream topics` alone: the help text, as click does
            sys.exit(exc.exit_code)
        except click.ClickException as exc:
            click.echo(error_line(exc), err=True)
            sys.exit(exc.exit_code)
        except click.Abort:
            click.echo("Aborted!", err=True)
            sys.exit(1)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            sys.exit(130)
        sys.exit(code if isinstance(code, int) else 0)

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = COMMANDS.get(cmd_name)
        if target is None:
            return None
        extra = COMMAND_EXTRAS.get(cmd_name)
        if extra and missing_modules(extra):
            raise click.ClickException(
                f"bstream {cmd_name} needs the [{extra}] extra: {install_hint(extra)}"
            )
        module_name, attr = target.split(":")
        try:
            return getattr(importlib.import_module(module_name), attr)  # type: ignore[no-any-return]
        except ModuleNotFoundError as exc:
            needed = extra_for_module(exc.name or "")
            if needed is None:
                raise click.ClickException(f"command {cmd_name!r} is not available: {exc}") from exc
            raise click.ClickException(
                f"bstream {cmd_name} needs the [{needed}] extra: {install_hint(needed)}"
            ) from exc
        except (ImportError, AttributeError) as exc:
            raise click.ClickException(f"command {cmd_name!r} is not available: {exc}") from exc

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        # `bstream --help` lists commands from HELP so it never imports torch.
        with formatter.section("Commands"):
            formatter.write_dl([(name, HELP.get(name, "")) for name in self.list_commands(ctx)])


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="behavior-stream")
def main() -> None:
    """behavior-stream: streaming behaviour predictions from Kafka events with a fine-tuned BERT."""
