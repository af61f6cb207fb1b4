"""``unisub-hub demo``."""

from __future__ import annotations

from pathlib import Path

import click

from ..constants import unisub_home
from .options import json_option
from .output import emit_json, print_table, stderr, stdout


@click.command("demo")
@click.option(
    "--report",
    "report_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("unisub-demo"),
    show_default=True,
    help="Folder for report.md, numbers.json and plots.",
)
@click.option("--quick", is_flag=True, help="Fewer, shorter-trained adapters (for a smoke test).")
@json_option
def demo_command(report_dir, quick, as_json):
    """Run the whole journey on built-in example models, offline, and write a report.

    Trains (once, cached in the home folder) LoRA adapters of all-MiniLM-L6-v2 on ten small
    text tasks and two zoos of digit classifiers; builds bases with held-out members; compares
    accuracy of original, universal-subspace, secondary-subspace and mean-only models; pushes
    to and pulls from a local Hub server.

    Example:

        unisub-hub demo --report unisub-demo
    """
    from ..examples.demo import run_demo
    from ..examples.report import collection_rows

    root = click.get_current_context().find_root()
    home = root.meta.get("home") or unisub_home()
    result = run_demo(
        Path(home),
        report_dir,
        quick=quick,
        log=(lambda message: None) if as_json else (lambda message: stderr.print(message)),
    )
    if as_json:
        emit_json(
            {
                "report": str(report_dir / "report.md"),
                "numbers": str(report_dir / "numbers.json"),
                "seconds": result.seconds,
                "hub": result.hub,
                "accuracy": {c.name: c.accuracy for c in result.collections},
                "places": result.places,
                "served": {k: result.served[k] for k in ("command", "max_abs_logit_difference", "request_ms")},
                "generation": {
                    "eval": result.generation["eval"],
                    "completions": result.generation["served"]["completions"],
                },
            }
        )
        return
    for collection in result.collections:
        print_table(
            f"{collection.name} (held out: {len(collection.heldout)})",
            ["measure", "value"],
            collection_rows(collection),
        )
    stdout.print(
        f"Pulled {result.hub['task']} through the local Hub and materialized it: accuracy "
        f"{result.hub['materialized_accuracy']:.3f}"
    )
    stdout.print(
        f"Served {len(result.served['results'])} rows of two tasks in one request: logits within "
        f"{result.served['max_abs_logit_difference']:.1e} of the library's"
    )
    generation = result.generation
    stdout.print(
        f"Generation task {generation['eval_task']} (completion loss): "
        + ", ".join(f"{label} {scores['loss']:.3f}" for label, scores in generation["eval"].items())
    )
    stdout.print(f"Report: {report_dir / 'report.md'} ({result.seconds['total']:.0f} s)")
    stdout.print(f"Go on from the basis {result.places['basis']} on the base {result.places['base']}")
