"""Quality numbers of a basis: spectra, explained variance, per-source errors, null baseline."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from .basis import LayerBasis
from .null import flat_null_eigenvalues, side_null_eigenvalues
from .rank import VARIANCE_TARGETS, explained_variance, k_for_variance

CURVE_POINTS = 64

__all__ = ["CURVE_POINTS", "BuildReport", "LayerReport", "ModeReport", "SourceFit", "assess_layer"]


@dataclass
class ModeReport:
    """Spectrum of one mode of one layer, with its Gaussian null counterpart."""

    rank: int
    singular_values: list[float]
    explained_variance: float
    """Share of the centred variance in this mode captured by the kept ``rank`` directions."""
    k_for: dict[str, int]
    """Smallest ``k`` reaching 50/80/90/95 % (keys ``"0.5"``, ...)."""
    null_explained_variance: float | None = None
    null_k_for: dict[str, int] | None = None
    null_method: str | None = None
    curve: list[float] | None = None
    """Explained variance of the top 1, 2, ... directions (first :data:`CURVE_POINTS`)."""
    null_curve: list[float] | None = None


@dataclass
class SourceFit:
    """Reconstruction error of one source in one layer."""

    rel_error: float
    """``||X - X_hat||_F / ||X||_F``."""
    rel_error_centered: float
    """``||X - X_hat||_F / ||X - M||_F``: the share of what the mean does not explain that is lost."""
    holdout: bool


@dataclass
class LayerReport:
    name: str
    shape: tuple[int, int]
    modes: tuple[int, ...]
    ranks: dict[str, int]
    centered: bool
    mode_reports: dict[str, ModeReport]
    fits: dict[str, SourceFit]
    fit: float
    """Share of the training sources' centred variance that the reconstruction keeps."""

    def mean_error(self, *, holdout: bool, centered: bool = False) -> float | None:
        values = [
            (f.rel_error_centered if centered else f.rel_error) for f in self.fits.values() if f.holdout == holdout
        ]
        return sum(values) / len(values) if values else None


@dataclass
class BuildReport:
    modes: tuple[int, ...]
    centered: bool
    device: str
    passes: int
    max_memory: int
    sources: list[str]
    holdout: list[str]
    layers: list[LayerReport] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> dict[str, Any]:
        """Per-layer headline numbers, small enough for a manifest."""
        return {layer.name: layer_summary(layer) for layer in self.layers}


def layer_summary(layer: LayerReport) -> dict[str, Any]:
    out: dict[str, Any] = {
        "fit": round(layer.fit, 6),
        "explained_variance": {m: round(r.explained_variance, 6) for m, r in layer.mode_reports.items()},
        "null_explained_variance": {
            m: round(r.null_explained_variance, 6)
            for m, r in layer.mode_reports.items()
            if r.null_explained_variance is not None
        },
        "k_for": {m: r.k_for for m, r in layer.mode_reports.items()},
        "mean_rel_error": _round(layer.mean_error(holdout=False)),
        "mean_rel_error_centered": _round(layer.mean_error(holdout=False, centered=True)),
    }
    if (held := layer.mean_error(holdout=True)) is not None:
        out["holdout_mean_rel_error"] = _round(held)
        out["holdout_mean_rel_error_centered"] = _round(layer.mean_error(holdout=True, centered=True))
    return out


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 8)


def _curve(eigenvalues: torch.Tensor, total: float | None) -> torch.Tensor:
    """Cumulative explained variance; against ``total`` when the spectrum is only the leading part."""
    if total is None:
        return explained_variance(eigenvalues)
    return eigenvalues.clamp_min(0).double().cumsum(0) / total if total > 0 else torch.ones_like(eigenvalues)


def _k_table(eigenvalues: torch.Tensor, total: float | None = None) -> dict[str, int]:
    """The k for each target; ``len + 1`` means "more than the leading values computed"."""
    if total is None:
        return {str(t): k_for_variance(eigenvalues, t) for t in VARIANCE_TARGETS}
    curve = _curve(eigenvalues, total)
    table = {}
    for target in VARIANCE_TARGETS:
        reached = torch.nonzero(curve >= target - 1e-12)
        table[str(target)] = int(reached[0]) + 1 if len(reached) else len(curve) + 1
    return table


def _share(eigenvalues: torch.Tensor, k: int, total: float | None = None) -> float:
    curve = _curve(eigenvalues, total)
    return float(curve[min(k, len(curve)) - 1]) if len(curve) else 1.0


def assess_layer(
    basis: LayerBasis,
    residuals: dict[str, tuple[float, float, float, bool]],
    *,
    null: bool,
    generator: torch.Generator,
    source_ranks: list[int] | None = None,
) -> LayerReport:
    """Turn a layer's basis and per-source squared residuals into a :class:`LayerReport`.

    Args:
        residuals: per source ``(||X - X_hat||^2, ||X||^2, ||X - M||^2, is_holdout)``.
        null: whether to compute the Gaussian null baseline (from the training sources' norms).
        source_ranks: the training sources' ranks when they are low-rank updates (LoRA), so that the
            null is made of random updates of the same ranks.
    """
    ranks = basis.ranks
    train = [v for v in residuals.values() if not v[3]]
    norms = torch.tensor([math.sqrt(v[2]) for v in train], dtype=torch.float64)
    mode_reports = {}
    nulls: dict[tuple[int, int], tuple[torch.Tensor, str]] = {}
    for mode, singular in basis.spectra.items():
        eigenvalues = singular.double().cpu().square()
        total = basis.variance_totals.get(mode)
        report = ModeReport(
            rank=ranks[mode],
            singular_values=[float(s) for s in singular.cpu()],
            explained_variance=_share(eigenvalues, ranks[mode], total),
            k_for=_k_table(eigenvalues, total),
            curve=[round(v, 6) for v in _curve(eigenvalues, total)[:CURVE_POINTS].tolist()],
        )
        if null and len(train) > 1:
            if mode == 1:
                p, q = basis.shape
                null_values = flat_null_eigenvalues(norms, p * q, center=basis.centered, generator=generator)
                method = "sampled"
            else:
                # A side's null depends on (its dimension, the other's) and the norms only: for a
                # square layer both sides have the same law, and one sample serves both.
                side = basis.shape if mode == 2 else basis.shape[::-1]
                if side not in nulls:
                    nulls[side] = side_null_eigenvalues(
                        basis.shape, mode, norms, generator=generator, ranks=source_ranks
                    )
                null_values, method = nulls[side]
            report.null_explained_variance = _share(null_values, ranks[mode])
            report.null_k_for = _k_table(null_values)
            report.null_method = method
            report.null_curve = [round(v, 6) for v in explained_variance(null_values)[:CURVE_POINTS].tolist()]
        mode_reports[str(mode)] = report
    fits = {
        name: SourceFit(
            rel_error=math.sqrt(res) / math.sqrt(total) if total > 0 else 0.0,
            rel_error_centered=math.sqrt(res) / math.sqrt(centered) if centered > 0 else 0.0,
            holdout=held,
        )
        for name, (res, total, centered, held) in residuals.items()
    }
    kept = sum(v[2] for v in train)
    lost = sum(v[0] for v in train)
    return LayerReport(
        name=basis.name,
        shape=basis.shape,
        modes=basis.modes,
        ranks={str(m): r for m, r in ranks.items()},
        centered=basis.centered,
        mode_reports=mode_reports,
        fits=fits,
        fit=1.0 - lost / kept if kept > 0 else 1.0,
    )
