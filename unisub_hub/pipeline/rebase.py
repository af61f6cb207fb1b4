"""``rebase``: a coefficient set moved from its basis to another basis of the same layers.

No model is read: each layer's update ``M1 + U1 C1 V1^T`` is projected onto the new basis
through small cross products (:func:`~unisub_hub.engine.rebase_layer`), and the share that
falls outside it is reported per layer. Passthrough tensors are copied as they are.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch

from ..constants import COEFFICIENTS_FORMAT
from ..engine import all_finite, rebase_layer, resolve_device
from ..errors import IncompatibleSourcesError, NonFiniteError
from ..format import BasisArtifact, CoefficientSet, check_artifact_output, save_coefficients
from ..format.checks import check_pair
from ..format.common import safe_name
from ..format.kinds import source_kind

__all__ = ["RebaseOutcome", "check_rebase", "rebase"]


@dataclass
class RebaseOutcome:
    coefficients: CoefficientSet
    errors: dict[str, dict[str, float]]
    """Per layer: ``rel_error`` (of the whole layer) and ``rel_error_centered`` (of its difference
    from the new basis's mean): what the new basis cannot hold of the task."""


def check_rebase(task: CoefficientSet, old: BasisArtifact, new: BasisArtifact) -> None:
    """Refuse a target basis that cannot stand for this task: another kind of source, or
    missing one of the task's layers, or a layer of another shape."""
    check_pair(task, old)
    where = f"basis {new.manifest['name']} ({new.content_id[:19]}...)"
    if new.manifest["source_kind"] != old.manifest["source_kind"]:
        raise IncompatibleSourcesError(
            f"{where} was built from {new.manifest['source_kind']} sources, the task's from "
            f"{old.manifest['source_kind']}",
            source=str(task.path),
        )
    shapes = {entry["name"]: entry["shape"] for entry in new.manifest["layers"]}
    for entry in old.manifest["layers"]:
        if entry["name"] not in task.layer_names:
            continue
        if entry["name"] not in shapes:
            raise IncompatibleSourcesError(
                f"{where} has no layer {entry['name']} (another architecture or layer selection)", source=str(task.path)
            )
        if shapes[entry["name"]] != entry["shape"]:
            raise IncompatibleSourcesError(
                f"{where} has layer {entry['name']} of shape {shapes[entry['name']]}, the task's basis "
                f"{entry['shape']}",
                source=str(task.path),
            )


def rebase(
    task: CoefficientSet,
    old: BasisArtifact,
    new: BasisArtifact,
    out: str | Path,
    *,
    name: str | None = None,
    device: str = "auto",
    command: str | None = None,
) -> RebaseOutcome:
    """Write ``task`` moved onto ``new`` to ``out``, with lineage ``rebased``.

    Raises:
        IncompatibleSourcesError: see :func:`check_rebase`.
        NonFiniteError: the moved coefficients are not finite (nothing written).
    """
    check_artifact_output(out, COEFFICIENTS_FORMAT)
    check_rebase(task, old, new)
    target = resolve_device(device)
    coefficients: dict[str, torch.Tensor] = {}
    errors: dict[str, dict[str, float]] = {}
    entries = {entry["name"]: entry for entry in task.manifest["layers"]}
    for layer in task.layer_names:
        new_layer = new.layer(layer, device=target, dtype=torch.float64)
        fit = rebase_layer(
            old.layer(layer, device=target, dtype=torch.float64), task.coefficient(layer, target).double(), new_layer
        )
        if not all_finite(fit.coef):
            raise NonFiniteError(
                f"layer {layer}: moved coefficients hold NaN or Inf; nothing written", source=str(task.path)
            )
        residual, total, centred = float(fit.residual), float(fit.total), float(fit.centered_total)
        errors[layer] = {
            "rel_error": math.sqrt(residual / total) if total > 0 else 0.0,
            "rel_error_centered": math.sqrt(residual / centred) if centred > 0 else 0.0,
        }
        coefficients[layer] = fit.coef
    manifest = task.manifest
    kinds = {layer: entry["lora_kind"] for layer, entry in entries.items() if "lora_kind" in entry}
    bases = {layer: new.layer(layer, device=target, dtype=torch.float64) for layer in coefficients}
    extras, lora_info = source_kind(new.manifest).computed_fields(
        bases, coefficients, lora_kinds=kinds, block=manifest.get("lora")
    )
    for layer, error in errors.items():
        extras[layer]["rel_error"] = error["rel_error"]
    passthrough = {entry["name"]: task.passthrough(entry["name"]) for entry in manifest["passthrough"]}
    reasons = {entry["name"]: entry["reason"] for entry in manifest["passthrough"] if "reason" in entry}
    mean_error = sum(e["rel_error"] for e in errors.values()) / max(len(errors), 1)
    saved = save_coefficients(
        out,
        coefficients,
        passthrough,
        name=name or safe_name(Path(out).name),
        basis_manifest=new.manifest,
        source=manifest.get("source"),
        lora=lora_info,
        layer_extras=extras,
        passthrough_reasons=reasons,
        metrics={"mean_rel_error": mean_error, "layers": errors},
        command=command,
        lineage="rebased",
        rebased_from={"content_id": task.content_id, "basis": old.content_id, "name": manifest["name"]},
    )
    return RebaseOutcome(saved, errors)
