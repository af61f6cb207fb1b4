"""``unisub-hub materialize``."""

from __future__ import annotations

from pathlib import Path

import click

from ..pipeline.materialize import FORMATS, materialize
from .options import device_option, json_option, shard_size_option
from .output import emit_json, stdout
from .refs import open_basis, open_coefficients


@click.command("materialize")
@click.argument("coefficients")
@click.option(
    "--basis",
    "basis_ref",
    default=None,
    help="The basis (folder or registry reference); default: the registered basis the coefficients name.",
)
@click.option(
    "--base",
    type=click.Path(exists=True, path_type=Path),
    default=None,
    help="Base model folder (needed for --format merged).",
)
@click.option(
    "--out", type=click.Path(path_type=Path), required=True, help="Folder to write the model or adapter into."
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(FORMATS),
    default="auto",
    show_default=True,
    help="auto: a LoRA set in its source's layout (peft, kohya or diffusers), hf for checkpoints; merged: base + "
    "update.",
)
@shard_size_option("5GB")
@device_option
@json_option
def materialize_command(coefficients, basis_ref, base, out, fmt, shard_size, device, as_json):
    """Rebuild a loadable model (or PEFT adapter) from basis + coefficients.

    Example:

        unisub-hub materialize sst2-task --basis minilm-basis --out sst2-adapter --format peft
    """
    coefficient_set = open_coefficients(coefficients)
    basis = open_basis(basis_ref or coefficient_set.basis_id)
    outcome = materialize(coefficient_set, basis, out, base=base, fmt=fmt, shard_size=shard_size, device=device)
    if as_json:
        emit_json({"path": str(outcome.path), "format": outcome.format, "files": outcome.files})
    else:
        stdout.print(f"Wrote {outcome.format} output to {outcome.path}: {', '.join(outcome.files)}")
