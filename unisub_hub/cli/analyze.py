"""``unisub-hub analyze``."""

from __future__ import annotations

from pathlib import Path

import click

from ..engine.modes import MODE_SETS
from ..pipeline.analyze import analyze
from ..pipeline.build import parse_holdout
from .options import device_option, json_option
from .output import emit_json, print_table, progress_bar, stderr, stdout


@click.command("analyze")
@click.argument("sources", nargs=-1, required=True)
@click.option(
    "--modes", type=click.Choice(list(MODE_SETS)), default="2,3", show_default=True, help="Which spectra to compute."
)
@click.option(
    "--center/--no-center", default=None, help="Subtract the mean (default: on for checkpoints, off for LoRA)."
)
@click.option("--include", multiple=True, help="Glob of tensor names to analyse (repeatable).")
@click.option("--exclude", multiple=True, help="Glob of tensor names to skip (repeatable).")
@click.option(
    "--plot",
    "plot_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Write scree plots (PNG) into this folder.",
)
@click.option(
    "--select",
    "select_file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write the retained layer names here, for `build --include-from`.",
)
@click.option(
    "--holdout",
    default=None,
    help="Leave sources out of the spectra and project them on the top --k directions: a count (the last N) or "
    "comma-separated names; warns when that recovers no more than the mean alone.",
)
@click.option(
    "--k",
    type=click.IntRange(min=1),
    default=8,
    show_default=True,
    help="Directions held-out members are projected on.",
)
@device_option
@click.option("--allow-pickle", is_flag=True, help="Accept .bin/.pt weights (loaded with weights_only=True).")
@json_option
def analyze_command(
    sources, modes, center, include, exclude, plot_dir, select_file, holdout, k, device, allow_pickle, as_json
):
    """Spectra of a collection without writing a basis: explained variance, null, layer quality.

    Layer quality follows the alpha metric: a power-law fit to each source's eigenvalue tail,
    scored per layer (q) and retained when its alphas are consistently in [2, 6]. A layer the
    alpha rules reject is still retained when its spectrum reaches 90 % with at most half the
    directions of its Gaussian null: shared directions are what a basis stores, and the
    spectrum measures them directly (each layer's reason says which evidence decided).

    Example:

        unisub-hub analyze adapters/* --plot spectra/ --select keep.txt
    """
    with progress_bar(enabled=not as_json) as bars:
        report = analyze(
            sources,
            modes=modes,
            center=center,
            include=include,
            exclude=exclude,
            device=device,
            allow_pickle=allow_pickle,
            holdout=parse_holdout(holdout) if holdout else None,
            k=k,
            progress=bars,
        )
    if report.warning:
        stderr.print(f"Warning: {report.warning}")
    plots = []
    if plot_dir is not None:
        from ..pipeline.plots import plot_scree

        plots.append(
            str(
                plot_scree(
                    report.layers,
                    plot_dir / "scree.png",
                    title=f"Explained variance of {len(report.sources)} sources vs Gaussian null",
                )
            )
        )
    if select_file is not None:
        select_file.write_text("".join(f"{name}\n" for name in report.retained))
    if as_json:
        emit_json({**report.to_dict(), "plots": plots})
        return
    rows = []
    for layer in report.layers:
        ks = " ".join(
            f"{m}: {'/'.join(str(data['k_for'][t]) for t in ('0.5', '0.8', '0.9', '0.95'))}"
            + (
                f" (null {'/'.join(str(data['null_k_for'][t]) for t in ('0.5', '0.8', '0.9', '0.95'))})"
                if data.get("null_k_for")
                else ""
            )
            for m, data in layer["modes"].items()
        )
        rows.append(
            [
                layer["name"],
                "x".join(map(str, layer["shape"])),
                ks,
                f"{layer['mean_alpha']:.2f}",
                f"{layer['q']:.3f}",
                ("yes: " if layer["retained"] else "no: ") + layer["reason"],
            ]
        )
    print_table(
        "Spectra (k for 50/80/90/95 % explained variance) and layer quality",
        ["layer", "shape", "k per mode", "mean alpha", "q", "kept, and why"],
        rows,
    )
    stdout.print(
        f"q_all {report.q_all:.3f}, q_arch {report.q_arch:.3f}; {len(report.retained)} of {len(report.layers)} layers "
        "retained"
    )
    for plot in plots:
        stdout.print(f"wrote {plot}")
