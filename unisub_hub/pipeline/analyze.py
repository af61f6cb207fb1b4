"""``analyze``: the spectra of a collection, its null baseline and layer quality, without a basis."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from ..engine import (
    BuildOptions,
    Progress,
    RankRule,
    build_basis,
    parse_modes,
    resolve_device,
)
from ..engine.alpha import QualityThresholds, fit_power_law, layer_quality
from ..engine.matrix import Dense
from ..engine.quality import CURVE_POINTS
from ..engine.spec import SilentProgress
from ..format.kinds import source_kind
from ..io.collection import open_sources
from .build import check_duplicates, holdout_warning, split_holdout
from .selection import select_layers

__all__ = ["AnalyzeReport", "analyze"]


@dataclass
class AnalyzeReport:
    layers: list[dict[str, Any]]
    sources: list[str]
    q_all: float
    q_arch: float
    retained: list[str]
    holdout: list[str] = field(default_factory=list)
    warning: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "sources": self.sources,
            "holdout": self.holdout,
            "warning": self.warning,
            "q_all": self.q_all,
            "q_arch": self.q_arch,
            "retained": self.retained,
            "layers": self.layers,
        }


def analyze(
    source_specs: Sequence[str],
    *,
    modes: str = "2,3",
    center: bool | None = None,
    include: Sequence[str] = (),
    exclude: Sequence[str] = (),
    device: str = "auto",
    allow_pickle: bool = False,
    thresholds: QualityThresholds = QualityThresholds(),
    holdout: int | Sequence[str] | None = None,
    k: int = 8,
    progress: Progress | None = None,
) -> AnalyzeReport:
    """Explained variance per layer and mode (with the Gaussian null) and the alpha layer quality.

    ``q_all`` is the mean ``q`` over every layer; ``q_arch`` the mean ``q`` of the retained
    layers times the share of layers retained (0 when none is). ``holdout`` members are left
    out of the spectra and projected on the top ``k`` directions: ``warning`` says when that
    recovers no more than the mean alone (:func:`~unisub_hub.pipeline.build.holdout_warning`).
    """
    sources = open_sources(source_specs, allow_pickle=allow_pickle)
    selection = select_layers([s.tensors for s in sources], include=include, exclude=exclude)
    check_duplicates(sources)
    if center is None:
        center = source_kind(sources[0].kind).centered_by_default
    train, held = split_holdout(sources, holdout)
    options = BuildOptions(modes=parse_modes(modes), rank=RankRule(k=k if held else 1), center=center, device=device)
    result = build_basis(selection.layers, train, holdout=held, options=options, progress=progress)
    alphas = _alphas(selection.layers, sources, resolve_device(device), progress)
    layers = []
    for report in result.report.layers:
        quality = layer_quality(alphas[report.name], thresholds)
        entry: dict[str, Any] = {"name": report.name, "shape": list(report.shape), "modes": {}}
        for mode, mode_report in report.mode_reports.items():
            entry["modes"][mode] = {
                "k_for": mode_report.k_for,
                "null_k_for": mode_report.null_k_for,
                "null_method": mode_report.null_method,
                "explained_variance_curve": mode_report.curve,
                "null_explained_variance_curve": mode_report.null_curve,
                "singular_values": mode_report.singular_values[:CURVE_POINTS],
            }
        retained, reason = quality.retained, quality.reason
        if not retained:  # the alpha rules did not keep it: the spectrum against its null may
            retained, reason = _spectrum_verdict(entry["modes"], reason)
        entry.update(
            alphas=quality.alphas,
            mean_alpha=quality.mean_alpha,
            std_alpha=quality.std_alpha,
            q=quality.q,
            retained=retained,
            reason=reason,
        )
        layers.append(entry)
    kept = [layer["name"] for layer in layers if layer["retained"]]
    q_all = sum(layer["q"] for layer in layers) / len(layers)
    q_kept = [layer["q"] for layer in layers if layer["retained"]]
    q_arch = (sum(q_kept) / len(q_kept)) * (len(q_kept) / len(layers)) if q_kept else 0.0
    return AnalyzeReport(
        layers=layers,
        sources=[s.name for s in train],
        q_all=q_all,
        q_arch=q_arch,
        retained=kept,
        holdout=[s.name for s in held],
        warning=holdout_warning(result.report),
    )


SPECTRUM_MARGIN = 0.5
"""The spectrum keeps a layer that reaches 90 % with at most this share of the directions its
null needs: one direction fewer is what sampling noise gives unrelated members."""


def _spectrum_verdict(modes: dict[str, dict[str, Any]], why: str) -> tuple[bool, str]:
    """Keep a layer whose spectrum reaches 90 % with clearly fewer directions than its null needs.

    This evidence wins over the alpha rules: a shared subspace is what a basis stores, and a
    spectrum far from its null measures exactly that, while the alpha fit describes each
    member's own weights (heavy tails) and says nothing about what members share. So a layer
    the alpha rules reject (or cannot fit) is still kept when its spectrum is far from its null,
    and the reason names both.
    """
    verdicts = []
    for mode, data in modes.items():
        null = data.get("null_k_for")
        if null is not None:
            kept = data["k_for"]["0.9"] <= SPECTRUM_MARGIN * null["0.9"]
            verdicts.append((kept, f"mode {mode}: k90 {data['k_for']['0.9']} against a null of {null['0.9']}"))
    if not verdicts:
        return False, f"{why}; no null to compare the spectrum with"
    kept = any(ok for ok, _ in verdicts)
    return (
        kept,
        f"{why}; {'kept' if kept else 'not kept'} by its spectrum, which must need at most half its null's directions "
        f"({', '.join(text for _, text in verdicts)})",
    )


def _alphas(layers, sources, device: torch.device, progress: Progress | None) -> dict[str, list[float]]:  # noqa: ANN001
    out: dict[str, list[float]] = {spec.name: [] for spec in layers}
    advance = (progress or SilentProgress()).task("alpha fits", len(sources))
    names = [spec.name for spec in layers]
    for source in sources:
        for name in names:
            matrix = source.load([name])[name].to(device, torch.float64)
            singular = torch.linalg.svdvals(matrix.value) if isinstance(matrix, Dense) else matrix.singular_values
            out[name].append(fit_power_law(singular.square().cpu()).alpha)
        advance()
    return out
