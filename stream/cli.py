"""The `bstream` command line: a click group whose subcommands load lazily (torch is slow)."""

from __future__ import annotations

import importlib

import click

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
    "train": "model.commands:train",
    "eval": "model.commands:evaluate",
    "export": "model.commands:export",
    "bench-model": "model.commands:bench_model",
    "explain": "model.commands:explain",
    "ensemble": "model.commands:ensemble",
    "promote": "stream.commands.promote:promote",
    "models": "stream.commands.promote:models",
    "retrain": "stream.commands.retrain:retrain",
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


class LazyGroup(click.Group):
    """A click group that imports a subcommand's module only when that subcommand runs."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = COMMANDS.get(cmd_name)
        if target is None:
            return None
        module_name, attr = target.split(":")
        try:
            return getattr(importlib.import_module(module_name), attr)  # type: ignore[no-any-return]
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
