"""``project``: one source and a basis in, a coefficient set (a "task") out."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..constants import COEFFICIENTS_FORMAT, DEFAULT_SHARD_SIZE
from ..engine import all_finite, fit_layer, resolve_device
from ..errors import IncompatibleSourcesError, NonFiniteError
from ..format import BasisArtifact, CoefficientSet, check_artifact_output, save_coefficients
from ..format.common import safe_name
from ..io.collection import Source, open_source
from .ties import is_tied

__all__ = ["ProjectOutcome", "project"]


@dataclass
class ProjectOutcome:
    coefficients: CoefficientSet
    errors: dict[str, dict[str, float]]
    """Per layer: ``rel_error`` (``||X - X_hat|| / ||X||``) and ``rel_error_centered``."""
    sizes: dict[str, int] = field(default_factory=dict)


def _check_layer(basis: BasisArtifact, source: Source, layer: str) -> None:
    expected = tuple(basis.entry(layer)["shape"])
    info = source.tensors.get(layer)
    if info is None:
        raise IncompatibleSourcesError(source.missing_layer(layer), source=source.name)
    if tuple(info.shape) != expected:
        raise IncompatibleSourcesError(
            f"tensor {layer} has shape {'x'.join(map(str, info.shape))}, the basis expects "
            f"{'x'.join(map(str, expected))}",
            source=source.name,
        )


def project(
    source: str | Source,
    basis: BasisArtifact,
    out: str | Path,
    *,
    name: str | None = None,
    device: str = "auto",
    allow_pickle: bool = False,
    shard_size: int = DEFAULT_SHARD_SIZE,
    command: str | None = None,
) -> ProjectOutcome:
    """Project a source onto ``basis`` and write its coefficient set to ``out``.

    Every tensor the basis does not decompose is stored whole as passthrough (for LoRA:
    the adapter's other tensors, and the raw factors of modules outside the basis).
    """
    check_artifact_output(out, COEFFICIENTS_FORMAT)
    if isinstance(source, str):
        source = open_source(source, allow_pickle=allow_pickle)
    if source.kind != basis.manifest["source_kind"]:
        raise IncompatibleSourcesError(
            f"is a {source.kind} source but the basis was built from {basis.manifest['source_kind']} sources",
            source=source.name,
        )
    target = resolve_device(device)
    coefficients: dict[str, torch.Tensor] = {}
    errors: dict[str, dict[str, float]] = {}
    extras: dict[str, dict[str, Any]] = {}
    for layer in basis.layer_names:
        _check_layer(basis, source, layer)
        layer_basis = basis.layer(layer, device=target, dtype=torch.float64)
        matrix = source.load([layer])[layer].to(target, torch.float64)
        _check_finite(matrix.parts, getattr(matrix, "scale", 1.0), source, layer)
        fit = fit_layer(layer_basis, matrix)
        coef, residual, total, centered = fit.coef, float(fit.residual), float(fit.total), float(fit.centered_total)
        errors[layer] = {
            "rel_error": math.sqrt(residual / total) if total > 0 else 0.0,
            "rel_error_centered": math.sqrt(residual / centered) if centered > 0 else 0.0,
        }
        coefficients[layer] = coef
        extras[layer] = {"rel_error": errors[layer]["rel_error"], **source.layer_fields(layer)}
    ties = basis.manifest.get("tied") or {}  # found among checkpoint tensors only (the kinds match)
    tied = {alias: target for alias, target in ties.items() if is_tied(source, alias, target)}  # type: ignore[arg-type]
    passthrough, reasons = source.passthrough(set(basis.layer_names) | set(tied))
    for key, value in passthrough.items():
        _check_finite([value], 1.0, source, key)
    passthrough_bytes = sum(t.numel() * t.element_size() for t in passthrough.values())
    mean_error = sum(e["rel_error"] for e in errors.values()) / max(len(errors), 1)
    saved = save_coefficients(
        out,
        coefficients,
        passthrough,
        name=name or safe_name(Path(out).name),
        basis_manifest=basis.manifest,
        source=source.provenance(),
        lora=source.lora_block(),
        tied=tied,
        layer_extras=extras,
        passthrough_reasons=reasons,
        metrics={"mean_rel_error": mean_error, "layers": errors},
        sizes={"source_bytes": source.size_bytes(), "passthrough_bytes": passthrough_bytes},
        command=command,
        shard_size=shard_size,
        config=source.member_config(),
    )
    sizes = {
        "source_bytes": source.size_bytes(),
        "coefficients_bytes": saved.artifact.size_bytes(),
        "passthrough_bytes": passthrough_bytes,
    }
    return ProjectOutcome(coefficients=saved, errors=errors, sizes=sizes)


def _check_finite(parts, scale: float, source: Source, name: str) -> None:
    """Refuse NaN or Inf (values, or a LoRA scale that overflowed) before anything is computed or written."""
    if not math.isfinite(scale):
        raise NonFiniteError(f"layer {name}: the LoRA scale is {scale} (lora_alpha / r overflowed)", source=source.name)
    for part in parts:
        if part.is_floating_point() and not all_finite(part):
            raise NonFiniteError(f"tensor {name} holds NaN or Inf", source=source.name)
