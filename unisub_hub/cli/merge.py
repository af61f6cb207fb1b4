"""``unisub-hub merge``."""

from __future__ import annotations

from pathlib import Path

import click

from .build import command_line
from .options import json_option, register_option
from .output import emit_json, human_bytes, stdout
from .refs import check_can_register, open_basis, open_coefficients, open_registry, register_written

_METHODS = ["linear", "ties", "dare-linear", "dare-ties"]


def _weights(ctx: click.Context, param: click.Parameter, value: str | None) -> list[float] | None:
    if value is None:
        return None
    try:
        return [float(part) for part in value.split(",")]
    except ValueError:
        raise click.BadParameter(f"{value!r}: give one number per task, separated by commas (0.5,0.5)") from None


@click.command("merge")
@click.argument("task_refs", nargs=-1, required=True, metavar="TASK TASK...")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Folder to write the merged task into.")
@click.option("--name", default=None, help="Task name (default: the --out folder name).")
@click.option("--method", type=click.Choice(_METHODS), default="linear", show_default=True, help="How to merge.")
@click.option(
    "--weights", callback=_weights, default=None, help="One weight per task, comma-separated (default equal)."
)
@click.option(
    "--density",
    type=click.FloatRange(0, 1, min_open=True),
    default=None,
    help="ties, dare-*: the share of each task's coefficients kept (default 0.5).",
)
@click.option("--seed", type=click.IntRange(0, 2**63 - 1), default=None, help="dare-*: seeds the drops (default 0).")
@click.option(
    "--heads",
    type=click.Choice(["average", "first", "none"]),
    default=None,
    help="Passthrough tensors (heads): averaged, the first task's, or none (default: kept when all tasks have the "
    "same, else none).",
)
@click.option("--basis", "basis_ref", default=None, help="The tasks' basis, when it is not registered.")
@register_option
@json_option
def merge_command(task_refs, out, name, method, weights, density, seed, heads, basis_ref, register, as_json):
    """Merge tasks of one basis in coefficient space (linear, TIES, DARE), without data.

    Tasks must share a basis (move others onto it with `rebase`). On a centred basis the
    tasks share its mean, so linear weights must sum to 1. The result is a coefficient set
    like any other: eval, materialize, push, train further and serve it.

    Example:

        unisub-hub merge sst2-task imdb-task --method ties --density 0.5 --out sentiment-task
    """
    check_can_register(register)
    from ..pipeline.merge import check_same_basis, merge

    tasks = [open_coefficients(ref) for ref in task_refs]
    basis = open_basis(basis_ref or check_same_basis(tasks))
    registry = open_registry()
    locations = [registry.find("task", task.content_id) for task in tasks]
    outcome = merge(
        tasks,
        basis,
        out,
        method=method,
        weights=weights,
        density=density,
        seed=seed,
        heads=heads,
        name=name,
        repo_ids=[entry.hub_repo if entry else None for entry in locations],
        command=command_line(),
    )
    entry = register_written(outcome.coefficients.path, basis=basis.path) if register else None
    result = {
        "coefficients": str(outcome.coefficients.path),
        "content_id": outcome.coefficients.content_id,
        "basis": basis.content_id,
        "merged_from": outcome.coefficients.manifest["merged_from"],
        "merge": outcome.method,
        "size_bytes": outcome.coefficients.artifact.size_bytes(),
        "registered": entry.to_dict() if entry else None,
    }
    if as_json:
        emit_json(result)
        return
    stdout.print(
        f"Merged {len(tasks)} tasks ({method}, heads: {outcome.heads}) into {outcome.coefficients.path} "
        f"({outcome.coefficients.content_id[:19]}..., {human_bytes(result['size_bytes'])})"
    )
    if entry:
        stdout.print(f"Registered as task {entry.ref}")
