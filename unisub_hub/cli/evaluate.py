"""``unisub-hub eval``."""

from __future__ import annotations

from pathlib import Path

import click

from .build import command_line
from .messages import message_text
from .options import device_option, json_option
from .output import emit_json, print_table, stderr
from .refs import open_registry

_SHOWN = ("accuracy", "loss", "perplexity", "examples", "tokens")


@click.command("eval")
@click.argument("models", nargs=-1, required=True, metavar="MODEL...")
@click.option("--base", required=True, help="The base model folder or Hub id (with its tokenizer).")
@click.option(
    "--data",
    type=click.Path(path_type=Path),
    required=True,
    help="Data to score on, JSONL, CSV or TSV: text + label (classification); text, prompt + completion, or "
    "messages (causal LM).",
)
@click.option("--batch-size", type=click.IntRange(min=1), default=16, show_default=True)
@click.option("--max-examples", type=click.IntRange(min=1), default=None, help="Score the first N examples only.")
@click.option(
    "--max-length", type=click.IntRange(min=2), default=512, show_default=True, help="Tokens per example (truncated)."
)
@click.option(
    "--record/--no-record",
    default=True,
    show_default=True,
    help="Record the scores of registered artifacts in the registry (and so on their Hub cards at push).",
)
@device_option
@json_option
def eval_command(models, base, data, batch_size, max_examples, max_length, record, device, as_json):
    """Score tasks, bases (their mean alone), PEFT adapters and the base on one data file.

    Each MODEL is a coefficient set or a basis (folder, registry reference or Hub id), a
    PEFT adapter folder, or the word 'base'. Classification data gives accuracy and loss;
    causal-LM data the mean loss over the tokens that carry it, and perplexity. Give the
    basis beside its tasks: the mean alone is the baseline a task has to beat.

    Example:

        unisub-hub eval sst2-task minilm-basis lora-sst2/ base --base minilm-base --data test.jsonl
    """
    from ..pipeline.evaluate import evaluate

    outcome = evaluate(
        list(models),
        base,
        data,
        registry=open_registry(),
        batch_size=batch_size,
        max_examples=max_examples,
        max_length=max_length,
        device=device,
        record=record,
        command=command_line(),
    )
    for note in outcome.notes:
        stderr.print(f"Note: {message_text(note)}")
    if as_json:
        emit_json(
            {
                "objective": outcome.objective,
                "data_sha256": outcome.data_sha256,
                "results": [result.to_dict() for result in outcome.results],
            }
        )
        return
    shown = [key for key in _SHOWN if any(key in result.metrics for result in outcome.results)]
    rows = [
        [
            result.model,
            result.kind,
            *(_cell(result.metrics.get(key)) for key in shown),
            "yes" if result.recorded else "",
        ]
        for result in outcome.results
    ]
    print_table(f"Scores on {Path(data).name} ({outcome.objective})", ["model", "kind", *shown, "recorded"], rows)


def _cell(value: object) -> str:
    if value is None:
        return "-"
    return f"{value:,}" if isinstance(value, int) else f"{value:.4f}"
