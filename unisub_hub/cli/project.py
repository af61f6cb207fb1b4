"""``unisub-hub project``."""

from __future__ import annotations

from pathlib import Path

import click

from ..pipeline.project import ProjectOutcome, project
from .build import command_line
from .options import device_option, json_option, register_option, shard_size_option
from .output import emit_json, human_bytes, print_table, stdout
from .refs import check_can_register, open_basis, register_written


@click.command("project")
@click.argument("source")
@click.option(
    "--basis",
    "basis_ref",
    required=True,
    help="The basis: a folder or a registry reference (name, name:version, name@alias, id prefix).",
)
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Folder to write the coefficient set into.")
@click.option("--name", default=None, help="Task name (default: the --out folder name).")
@device_option
@shard_size_option("5GB")
@click.option("--allow-pickle", is_flag=True, help="Accept .bin/.pt weights (loaded with weights_only=True).")
@register_option
@json_option
def project_command(source, basis_ref, out, name, device, shard_size, allow_pickle, register, as_json):
    """Store one fine-tune as coefficients on a basis (plus passthrough tensors).

    Example:

        unisub-hub project adapters/sst2 --basis minilm-basis --out sst2-task
    """
    check_can_register(register)
    basis = open_basis(basis_ref)
    outcome = project(
        source,
        basis,
        out,
        name=name,
        device=device,
        allow_pickle=allow_pickle,
        shard_size=shard_size,
        command=command_line(),
    )
    entry = register_written(outcome.coefficients.path, basis=basis.path) if register else None
    if as_json:
        emit_json({**project_json(outcome), "registered": entry.to_dict() if entry else None})
        return
    rows = [[layer, f"{e['rel_error']:.5f}", f"{e['rel_error_centered']:.4f}"] for layer, e in outcome.errors.items()]
    print_table("Reconstruction error per layer", ["layer", "rel. error", "rel. error (centred)"], rows)
    sizes = outcome.sizes
    stdout.print(
        f"Coefficients {outcome.coefficients.content_id[:19]}... written to {outcome.coefficients.path}: "
        f"{human_bytes(sizes['coefficients_bytes'])} (passthrough {human_bytes(sizes['passthrough_bytes'])}) "
        f"for a {human_bytes(sizes['source_bytes'])} source, "
        f"{sizes['source_bytes'] / sizes['coefficients_bytes']:.1f}x smaller"
    )
    if entry:
        stdout.print(f"Registered as task {entry.ref}")


def project_json(outcome: ProjectOutcome) -> dict:
    sizes = outcome.sizes
    return {
        "coefficients": str(outcome.coefficients.path),
        "content_id": outcome.coefficients.content_id,
        "basis": outcome.coefficients.basis_id,
        "errors": outcome.errors,
        "sizes": sizes,
        "compression_ratio": sizes["source_bytes"] / sizes["coefficients_bytes"],
    }
