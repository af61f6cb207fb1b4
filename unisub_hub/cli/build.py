"""``unisub-hub build``."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import click

from ..errors import ExecutorError
from ..pipeline.build import BuildOutcome, BuildSettings, build, holdout_warning
from ..pipeline.executors import EXECUTOR_HELP, check_executor_target, open_executor
from ..pipeline.settings import settings_of
from .messages import message
from .options import json_option, register_option, settings_from, settings_options
from .output import emit_json, human_bytes, print_table, progress_bar, stderr, stdout
from .refs import check_can_register, open_registry, register_written, resolve_folder


def command_line() -> str:
    """The command as the user typed it, for provenance."""
    return "unisub-hub " + shlex.join(sys.argv[1:])


def _read_patterns(path: Path | None) -> list[str]:
    if path is None:
        return []
    patterns = [line.strip() for line in path.read_text().splitlines() if line.strip() and not line.startswith("#")]
    if (
        not patterns
    ):  # an empty list would include every layer: the opposite of what a selection that kept nothing means
        raise click.BadParameter(
            f"{path} names no layer (did `analyze --select` keep none?)", param_hint="--include-from"
        )
    return patterns


_FROM_PARENT = [item.name for item, how in settings_of(BuildSettings) if how.from_parent] + ["include_from"]
"""What ``--update`` takes from the parent basis (the settings that say so, and the file of --include globs)."""


def _check_update_flags(ctx: click.Context) -> None:
    """With --update the basis's own settings hold; a flag that would change them is a mistake, not a wish."""
    given = [name for name in _FROM_PARENT if ctx.get_parameter_source(name) is click.core.ParameterSource.COMMANDLINE]
    if given:
        flags = ", ".join("--" + name.replace("_", "-") for name in given)
        raise click.UsageError(
            f"{flags}: with --update the parent basis decides these (a grown basis always keeps its state)"
        )


def _executor_target(ctx: click.Context, param: click.Parameter, value: str) -> str:
    try:
        return check_executor_target(value)
    except ExecutorError as error:
        raise click.BadParameter(message(error)) from None


@click.command("build")
@click.argument("sources", nargs=-1, required=True)
@click.option(
    "--out", type=click.Path(path_type=Path), required=True, help="Folder to write the basis into (must not exist)."
)
@settings_options(BuildSettings)
@click.option(
    "--include-from",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="File of --include globs, one per line (e.g. from `analyze --select`).",
)
@click.option("--executor", default="serial", show_default=True, callback=_executor_target, help=EXECUTOR_HELP)
@click.option(
    "--workers", type=click.IntRange(min=1), default=None, help="Worker processes of --executor dask (default 2)."
)
@click.option(
    "--update",
    "parent",
    default=None,
    metavar="BASIS",
    help="Grow BASIS (built with --keep-state; a folder or registry reference) by SOURCES into --out, without reading "
    "its members.",
)
@register_option
@json_option
def build_command(sources, out, include_from, executor, workers, parent, register, as_json, **given):
    """Build a basis from a collection of checkpoints or LoRA adapters.

    SOURCES are folders, globs, Hub repo ids (org/name[@revision]) or text files listing
    one source per line.

    Example:

        unisub-hub build adapters/* --out minilm-basis --k 8 --holdout 2
    """
    check_can_register(register)
    settings = settings_from(BuildSettings, given, include=[*given["include"], *_read_patterns(include_from)])
    if settings.k is not None and settings.variance is not None:
        raise click.UsageError("give --k or --variance, not both")
    if workers is not None and executor != "dask":
        raise click.UsageError("--workers sizes the local cluster of --executor dask")
    if parent is not None:
        _check_update_flags(click.get_current_context())
    with open_executor(executor, workers=workers) as engine_executor, progress_bar(enabled=not as_json) as bars:
        if parent is not None:
            from ..pipeline.grow import grow

            outcome = grow(
                resolve_folder(parent, "basis"),
                sources,
                out,
                k=settings.k,
                name=settings.name,
                device=settings.device,
                max_memory=settings.max_memory,
                shard_size=settings.shard_size,
                allow_pickle=settings.allow_pickle,
                progress=bars,
                executor=engine_executor,
                command=command_line(),
            )
        else:
            outcome = build(sources, out, settings, progress=bars, executor=engine_executor, command=command_line())
    entry = register_written(outcome.basis.path) if register else None
    sizes = outcome.sizes
    if (
        parent is None and sizes["basis_bytes"] > sizes["sources_bytes"]
    ):  # stderr: a warning, whichever way the result is printed
        stderr.print(
            f"Warning: the basis ({human_bytes(sizes['basis_bytes'])}) is larger than its "
            f"{len(outcome.report.sources)} training sources together "
            f"({human_bytes(sizes['sources_bytes'])}); --modes 1 stores k directions of full weight size per layer, "
            "--modes 2,3 or a smaller --k stores less"
        )
    if warning := holdout_warning(outcome.report):
        stderr.print(f"Warning: {warning}")
    if as_json:
        emit_json({**build_json(outcome), "registered": entry.to_dict() if entry else None})
    else:
        print_build(outcome)
        if entry:
            stdout.print(f"Registered as basis {entry.ref} in {open_registry().home}")


def build_json(outcome: BuildOutcome) -> dict:
    return {
        "basis": str(outcome.basis.path),
        "content_id": outcome.basis.content_id,
        "layers": [spec.name for spec in outcome.selection.layers],
        "passthrough": outcome.selection.passthrough,
        "sizes": outcome.sizes,
        "report": outcome.report.to_dict(),
    }


def print_build(outcome: BuildOutcome) -> None:
    rows = []
    for layer in outcome.report.layers:
        ev = " ".join(f"{m}:{r.explained_variance:.3f}" for m, r in layer.mode_reports.items())
        null = " ".join(
            f"{m}:{r.null_explained_variance:.3f}"
            for m, r in layer.mode_reports.items()
            if r.null_explained_variance is not None
        )
        held = layer.mean_error(holdout=True, centered=True)
        rows.append(
            [
                layer.name,
                "x".join(map(str, layer.shape)),
                " ".join(f"{m}:{r}" for m, r in layer.ranks.items()),
                ev,
                null,
                f"{layer.mean_error(holdout=False, centered=True):.4f}",
                "-" if held is None else f"{held:.4f}",
            ]
        )
    # The error shown is relative to each member's update (its difference from the mean, or the LoRA
    # update itself): relative to the whole weight (--json's rel_error), a lost update looks small.
    print_table(
        "Layers",
        [
            "layer",
            "shape",
            "ranks",
            "explained var.",
            "Gaussian null",
            "train err (of update)",
            "holdout err (of update)",
        ],
        rows,
    )
    if outcome.selection.passthrough:
        reasons: dict[str, int] = {}
        for reason in outcome.selection.passthrough.values():
            reasons[reason] = reasons.get(reason, 0) + 1
        stdout.print("Passthrough: " + "; ".join(f"{n} tensor(s): {r}" for r, n in sorted(reasons.items())))
    sizes = outcome.sizes
    stdout.print(
        f"Basis {outcome.basis.content_id[:19]}... written to {outcome.basis.path} "
        f"({human_bytes(sizes['basis_bytes'])}; sources {human_bytes(sizes['sources_bytes'])}; "
        f"{outcome.report.passes} passes)"
    )
