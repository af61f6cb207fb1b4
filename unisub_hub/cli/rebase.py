"""``unisub-hub rebase``."""

from __future__ import annotations

from pathlib import Path

import click

from .build import command_line
from .options import device_option, json_option, register_option
from .output import emit_json, print_table, stdout
from .refs import check_can_register, open_basis, open_coefficients, register_written


@click.command("rebase")
@click.argument("task_ref", metavar="TASK")
@click.option(
    "--basis", "basis_ref", required=True, help="The basis to move the task onto (folder or registry reference)."
)
@click.option(
    "--out", type=click.Path(path_type=Path), required=True, help="Folder to write the moved coefficient set into."
)
@click.option("--name", default=None, help="Task name (default: the --out folder name).")
@device_option
@register_option
@json_option
def rebase_command(task_ref, basis_ref, out, name, device, register, as_json):
    """Move a task onto another basis of the same layers, without the original model.

    Example:

        unisub-hub rebase sst2-task --basis minilm-basis:2 --out sst2-task-v2
    """
    check_can_register(register)
    from ..pipeline.rebase import rebase

    task = open_coefficients(task_ref)
    old, new = open_basis(task.basis_id), open_basis(basis_ref)
    outcome = rebase(task, old, new, out, name=name, device=device, command=command_line())
    entry = register_written(outcome.coefficients.path, basis=new.path) if register else None
    if as_json:
        emit_json(
            {
                "coefficients": str(outcome.coefficients.path),
                "content_id": outcome.coefficients.content_id,
                "basis": new.content_id,
                "rebased_from": task.content_id,
                "errors": outcome.errors,
                "registered": entry.to_dict() if entry else None,
            }
        )
        return
    print_table(
        "What the new basis cannot hold, per layer",
        ["layer", "rel. error", "rel. error (centred)"],
        [[layer, f"{e['rel_error']:.5f}", f"{e['rel_error_centered']:.4f}"] for layer, e in outcome.errors.items()],
    )
    stdout.print(
        f"Moved {task_ref} onto {basis_ref}: {outcome.coefficients.path} ({outcome.coefficients.content_id[:19]}...)"
    )
    if entry:
        stdout.print(f"Registered as task {entry.ref}")
