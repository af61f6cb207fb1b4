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

from .build import command_line
from .options import device_option, json_option, register_option
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

    def epoch(self, number: int, accuracy: float | None) -> None:
        if accuracy is not None and not self.quiet:
            stderr.print(f"epoch {number}: eval accuracy {accuracy:.4f}")


@click.command("train")
@click.argument("basis_ref", metavar="BASIS")
@click.option(
    "--base", required=True, help="The base model folder (transformers sequence classification, with its tokenizer)."
)
@click.option(
    "--data",
    "data",
    type=click.Path(path_type=Path),
    required=True,
    help="Training examples: JSONL, CSV or TSV with text, optional text_pair, and label.",
)
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Folder to write the coefficient set into.")
@click.option(
    "--eval",
    "eval_data",
    type=click.Path(path_type=Path),
    default=None,
    help="Evaluation examples, same layout; accuracy is reported per epoch.",
)
@click.option("--name", default=None, help="Task name (default: the --out folder name).")
@click.option("--epochs", type=click.IntRange(min=1), default=1, show_default=True)
@click.option("--max-steps", type=click.IntRange(min=1), default=None, help="Stop after this many optimizer steps.")
@click.option(
    "--lr",
    type=float,
    default=5e-3,
    show_default=True,
    help="AdamW learning rate (coefficient-only training takes 10-100x LoRA's).",
)
@click.option("--batch-size", type=click.IntRange(min=1), default=16, show_default=True)
@click.option(
    "--seed",
    type=int,
    default=0,
    show_default=True,
    help="Seeds initialisation, shuffling and dropout: same seed, same coefficients.",
)
@click.option(
    "--init",
    default="zero",
    show_default=True,
    help="zero, mean, or a fine-tune (folder or Hub id) whose projection starts the task.",
)
@click.option(
    "--train-head/--no-train-head", default=True, show_default=True, help="Train the task's own classifier head."
)
@click.option("--max-length", type=click.IntRange(min=2), default=128, show_default=True, help="Tokens per example.")
@click.option("--text-column", default="text", show_default=True)
@click.option("--text-pair-column", default="text_pair", show_default=True)
@click.option("--label-column", default="label", show_default=True)
@device_option
@register_option
@json_option
def train_command(
    basis_ref,
    base,
    data,
    out,
    eval_data,
    name,
    epochs,
    max_steps,
    lr,
    batch_size,
    seed,
    init,
    train_head,
    max_length,
    text_column,
    text_pair_column,
    label_column,
    device,
    register,
    as_json,
):
    """Learn a new task as coefficients on a frozen basis (sequence classification).

    Only the task's coefficients (k x k per layer for a Tucker basis) and its head train;
    the result is a coefficient set like any other: materialize, push and pull it.

    Example:

        unisub-hub train minilm-basis --base minilm-base --data train.jsonl --eval test.jsonl --out sst2-task
    """
    check_can_register(register)
    from ..pipeline.train import TrainOptions, train

    basis = open_basis(basis_ref)
    options = TrainOptions(
        epochs=epochs,
        max_steps=max_steps,
        lr=lr,
        batch_size=batch_size,
        seed=seed,
        init=init,
        train_head=train_head,
        max_length=max_length,
        text_column=text_column,
        pair_column=text_pair_column,
        label_column=label_column,
    )
    bars = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[loss]}"),
        TimeElapsedColumn(),
        console=stderr,
        disable=as_json,
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
    entry = register_written(outcome.coefficients.path, basis=basis.path) if register else None
    result = {
        "coefficients": str(outcome.coefficients.path),
        "content_id": outcome.coefficients.content_id,
        "basis": outcome.coefficients.basis_id,
        "steps": outcome.steps,
        "final_loss": outcome.final_loss,
        "eval_accuracy": outcome.eval_accuracy,
        "trainable_parameters": outcome.trainable_parameters,
        "size_bytes": outcome.coefficients.artifact.size_bytes(),
        "seconds": round(outcome.seconds, 2),
        "registered": entry.to_dict() if entry else None,
    }
    if as_json:
        emit_json(result)
        return
    accuracy = f", eval accuracy {outcome.eval_accuracy[-1]:.4f}" if outcome.eval_accuracy else ""
    stdout.print(
        f"Trained {outcome.trainable_parameters:,} parameters for {outcome.steps} steps (final loss "
        f"{outcome.final_loss:.4f}{accuracy}); "
        f"coefficients {outcome.coefficients.content_id[:19]}... written to {outcome.coefficients.path} "
        f"({human_bytes(outcome.coefficients.artifact.size_bytes())})"
    )
    if entry:
        stdout.print(f"Registered as task {entry.ref}")
