"""``unisub-hub train``."""

from __future__ import annotations

from pathlib import Path

import click
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)

from ..pipeline.train import TrainOptions
from .build import command_line
from .messages import message_text
from .options import device_option, json_option, register_option, settings_from, settings_options
from .output import emit_json, human_bytes, stderr, stdout
from .refs import check_can_register, open_basis, register_written


class _Bar:
    """Training progress as a rich bar with the running loss, on stderr."""

    def __init__(self, bars: Progress, quiet: bool) -> None:
        self.bars, self.quiet = bars, quiet
        self.task = TaskID(-1)
        self.running: float | None = None

    def start(self, total_steps: int) -> None:
        self.task = self.bars.add_task("training", total=total_steps, loss="")

    def step(self, loss: float) -> None:
        self.running = loss if self.running is None else 0.9 * self.running + 0.1 * loss
        self.bars.update(self.task, advance=1, loss=f"loss {self.running:.4f}")

    def epoch(self, number: int, metrics: dict | None) -> None:
        if metrics is not None and not self.quiet:
            stderr.print(f"epoch {number}: eval {_metrics_text(metrics)}")


@click.command("train")
@click.argument("basis_ref", metavar="BASIS")
@click.option(
    "--base",
    required=True,
    help="The base model folder or Hub id, with its tokenizer (transformers: sequence classification or causal LM).",
)
@click.option(
    "--data",
    "data",
    type=click.Path(path_type=Path),
    required=True,
    help="Training data, JSONL, CSV or TSV: text + label (classification); text, prompt + completion, or messages "
    "(causal LM).",
)
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Folder to write the coefficient set into.")
@click.option(
    "--eval",
    "eval_data",
    type=click.Path(path_type=Path),
    default=None,
    help="Evaluation data, same layout; scored after every epoch.",
)
@click.option("--name", default=None, help="Task name (default: the --out folder name).")
@settings_options(TrainOptions)
@device_option
@register_option
@json_option
def train_command(basis_ref, base, data, out, eval_data, name, device, register, as_json, **given):
    """Learn a new task as coefficients on a frozen basis.

    A sequence-classification base learns labels (the task keeps its own head); a causal
    LM learns text: every token of 'text', the completion of 'prompt' + 'completion', or
    the assistant turns of 'messages' (rendered with the tokenizer's chat template). Only
    the task's coefficients (k x k per layer for a Tucker basis) train; the result is a
    coefficient set like any other: eval, materialize, push, serve it.

    Example:

        unisub-hub train minilm-basis --base minilm-base --data train.jsonl --eval test.jsonl --out sst2-task
    """
    check_can_register(register)
    from ..pipeline.train import train

    basis = open_basis(basis_ref)
    options = settings_from(TrainOptions, given)
    bars = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[loss]}"),
        TimeElapsedColumn(),
        console=stderr,
        disable=as_json or not stderr.is_terminal,
    )
    with bars:
        outcome = train(
            basis,
            base,
            data,
            out,
            eval_data=eval_data,
            options=options,
            name=name,
            device=device,
            progress=_Bar(bars, as_json),
            command=command_line(),
        )
    for note in outcome.notes:
        stderr.print(f"Note: {message_text(note)}")
    entry = register_written(outcome.coefficients.path, basis=basis.path) if register else None
    result = {
        "coefficients": str(outcome.coefficients.path),
        "content_id": outcome.coefficients.content_id,
        "basis": outcome.coefficients.basis_id,
        "objective": outcome.objective,
        "steps": outcome.steps,
        "final_loss": outcome.final_loss,
        "eval": outcome.eval_metrics,
        "eval_accuracy": outcome.eval_accuracy,
        "trainable_parameters": outcome.trainable_parameters,
        "size_bytes": outcome.coefficients.artifact.size_bytes(),
        "seconds": round(outcome.seconds, 2),
        "registered": entry.to_dict() if entry else None,
    }
    if as_json:
        emit_json(result)
        return
    scored = _metrics_text(outcome.eval_metrics[-1]) if outcome.eval_metrics else ""
    steps = f"{outcome.steps} step{'s' if outcome.steps != 1 else ''}"
    stdout.print(
        f"Trained {outcome.trainable_parameters:,} parameters for {steps} on {outcome.objective} data "
        f"(mean loss of the last epoch {outcome.final_loss:.4f}{', eval ' + scored if scored else ''}); "
        f"coefficients {outcome.coefficients.content_id[:19]}... written to {outcome.coefficients.path} "
        f"({human_bytes(outcome.coefficients.artifact.size_bytes())})"
    )
    if entry:
        stdout.print(f"Registered as task {entry.ref}")


def _metrics_text(metrics: dict) -> str:
    shown = [(key, metrics[key]) for key in ("accuracy", "loss", "perplexity") if key in metrics]
    return ", ".join(f"{key} {value:.4f}" for key, value in shown)
