"""``unisub-hub info``."""

from __future__ import annotations

import click

from ..format import read_artifact
from .options import json_option
from .output import emit_json, human_bytes, print_table, stdout
from .refs import resolve_folder


@click.command("info")
@click.argument("artifact", metavar="PATH_OR_REF")
@click.option("--verify", is_flag=True, help="Also re-hash the tensor files against the content id.")
@json_option
def info_command(artifact, verify, as_json):
    """Show an artifact's manifest, layers, ranks, sizes and quality numbers.

    Example:

        unisub-hub info minilm-basis
    """
    opened = read_artifact(resolve_folder(artifact), verify=verify)
    manifest = opened.manifest
    size = opened.size_bytes()
    if as_json:
        emit_json(
            {
                "path": str(opened.path),
                "kind": opened.kind,
                "size_bytes": size,
                "verified": verify,
                "manifest": manifest,
            }
        )
        return
    kind = "basis" if opened.kind.endswith("basis") else "coefficient set"
    stdout.print(f"[bold]{manifest['name']}[/bold]: {kind}, format {manifest['format_version']}, {human_bytes(size)}")
    stdout.print(f"content id {manifest['content_id']}" + (" (verified)" if verify else ""))
    stdout.print(
        f"architecture {manifest['architecture']['name']} ({manifest['source_kind']}), created {manifest['created']}"
    )
    if opened.kind.endswith("basis"):
        quality = manifest.get("quality", {})
        rows = []
        for layer in manifest["layers"]:
            q = quality.get(layer["name"], {})
            rows.append(
                [
                    layer["name"],
                    "x".join(map(str, layer["shape"])),
                    ",".join(map(str, layer["modes"])),
                    " ".join(f"{m}:{r}" for m, r in layer["ranks"].items()),
                    " ".join(f"{m}:{v:.3f}" for m, v in layer.get("explained_variance", {}).items()),
                    " ".join(f"{m}:{v:.3f}" for m, v in (q.get("null_explained_variance") or {}).items()),
                    _error(q),
                ]
            )
        print_table(
            "Layers", ["layer", "shape", "modes", "ranks", "explained var.", "null", "rel. err of the update"], rows
        )
        roles = [s.get("role", "train") for s in manifest["sources"]]
        stdout.print(f"{roles.count('train')} training sources, {roles.count('holdout')} held out")
    else:
        basis = manifest["basis"]
        stdout.print(
            f"basis {basis['content_id']}"
            + (f" ({basis['repo_id']}@{basis['revision'][:8]})" if basis.get("repo_id") else "")
        )
        errors = (manifest.get("metrics") or {}).get("layers", {})
        rows = [
            [e["name"], "x".join(map(str, e["shape"])), _task_error(errors.get(e["name"]), e.get("rel_error"))]
            for e in manifest["layers"]
        ]
        print_table(
            f"Coefficients ({manifest.get('lineage', 'projected')})",
            ["layer", "shape", "rel. error of the update"],
            rows,
        )
        if manifest["passthrough"]:
            print_table(
                "Passthrough tensors (stored whole)",
                ["tensor", "shape", "dtype", "why"],
                [
                    [e["name"], "x".join(map(str, e["shape"])), e["dtype"], e.get("reason", "")]
                    for e in manifest["passthrough"]
                ],
            )


def _error(quality: dict) -> str:
    """The headline error of a layer: held-out members' when there are any, relative to their update."""
    for key, label in (("holdout_mean_rel_error_centered", "held out"), ("mean_rel_error_centered", "train")):
        if quality.get(key) is not None:
            return f"{quality[key]:.4f} ({label})"
    return ""


def _task_error(measured: dict | None, whole: float | None) -> str:
    """A projected layer's error relative to its update (centred), else relative to the whole weight, said so."""
    if measured and measured.get("rel_error_centered") is not None:
        return f"{measured['rel_error_centered']:.4f}"
    return "" if whole is None else f"{whole:.4f} (of the weight)"
