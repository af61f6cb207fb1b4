"""``unisub-hub merge``."""

from __future__ import annotations

from pathlib import Path

import click

from ..constants import COEFFICIENTS_FORMAT
from ..format import check_artifact_output
from ..merge import METHODS
from .build import command_line
from .options import device_option, json_option, register_option
from .output import emit_json, human_bytes, stdout
from .refs import check_can_register, open_basis, open_coefficients, open_registry, register_written


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
@click.option("--method", type=click.Choice(list(METHODS)), default="linear", show_default=True, help="How to merge.")
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
@click.option(
    "--tune-on",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="Choose the weights on these labelled examples (JSONL/CSV, as train reads them), gradient-free: needs --base.",
)
@click.option("--base", default=None, help="With --tune-on: the base model folder the examples are scored on.")
@click.option(
    "--tune-budget", type=click.IntRange(min=1), default=40, show_default=True, help="With --tune-on: evaluations."
)
@device_option
@register_option
@json_option
def merge_command(  # noqa: PLR0913 (a click command takes its options as parameters)
    task_refs,
    out,
    name,
    method,
    weights,
    density,
    seed,
    heads,
    basis_ref,
    tune_on,
    base,
    tune_budget,
    device,
    register,
    as_json,
):
    """Merge tasks of one basis in coefficient space (linear, TIES, DARE), without data.

    Tasks must share a basis (move others onto it with `rebase`). On a centred basis the
    tasks share its mean, so linear weights must sum to 1. The result is a coefficient set
    like any other: eval, materialize, push, train further and serve it.

    With --tune-on, the weights are chosen on a few labelled examples of the target task
    (LoraHub's recipe: a gradient-free search from equal weights, loss plus a small L1 penalty).

    Example:

        unisub-hub merge sst2-task imdb-task --method ties --density 0.5 --out sentiment-task
        unisub-hub merge sst2-task imdb-task --tune-on few.jsonl --base my-model --out tuned-task
    """
    check_can_register(register)
    if tune_on is not None and base is None:
        raise click.UsageError("--tune-on needs --base (the model the examples are scored on)")
    if tune_on is not None and weights is not None:
        raise click.UsageError("--tune-on chooses the weights: give it or --weights, not both")
    from ..pipeline.merge import check_same_basis, head_rule, merge

    tasks = [open_coefficients(ref) for ref in task_refs]
    basis = open_basis(basis_ref or check_same_basis(tasks))
    tuned = None
    if tune_on is not None:
        from ..pipeline.tune import tune_weights

        check_artifact_output(out, COEFFICIENTS_FORMAT)  # before the search, not after it
        tuned = tune_weights(
            tasks,
            basis,
            base,
            tune_on,
            method=method,
            density=density,
            seed=seed,
            heads=head_rule(tasks, heads),
            budget=tune_budget,
            device=device,
        )
        weights = tuned.weights
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
        tuned=tuned.record() if tuned else None,
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
        "tuned": {"weights": tuned.weights, "metrics": tuned.metrics, "equal_weights": tuned.equal_metrics}
        if tuned
        else None,
    }
    if as_json:
        emit_json(result)
        return
    stdout.print(
        f"Merged {len(tasks)} tasks ({method}, heads: {outcome.heads}) into {outcome.coefficients.path} "
        f"({outcome.coefficients.content_id[:19]}..., {human_bytes(result['size_bytes'])})"
    )
    if tuned:
        metric = "accuracy" if "accuracy" in tuned.metrics else "loss"
        stdout.print(
            f"Weights {', '.join(f'{w:.3f}' for w in tuned.weights)} chosen on {tuned.examples} examples "
            f"({tuned.evaluations} evaluations): {metric} {tuned.metrics[metric]:.4f} "
            f"(equal weights: {tuned.equal_metrics[metric]:.4f})"
        )
    if entry:
        stdout.print(f"Registered as task {entry.ref}")
