"""Layer quality from heavy-tailed spectra: the alpha metric (docs/engine.md, "Quality numbers").

Per source, a WeightWatcher-style power-law fit to the tail of the eigenvalues of
``W^T W``: ``alpha = 1 + n / sum ln(lambda_i / xmin)`` over the ``n`` eigenvalues at or above
``xmin``, with ``xmin`` chosen by the least Kolmogorov-Smirnov distance between the tail and
the fitted law. Per layer, over its ``N`` alphas: ``phi(a) = exp(-0.5 (a - 2))`` on
``[2, 6]`` (else 0) and ``q = (1 - exp(-N / 20)) * mean(phi) * exp(-std)``, clipped to [0, 1].
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

__all__ = ["MIN_EIGENVALUES", "AlphaFit", "LayerQuality", "QualityThresholds", "fit_power_law", "layer_quality"]


@dataclass(frozen=True)
class AlphaFit:
    alpha: float
    xmin: float
    tail: int
    """Number of eigenvalues in the fitted tail."""
    ks_distance: float


MIN_EIGENVALUES = 50
"""Fewer positive eigenvalues than this give no alpha: a tail of a handful of values fits any
power law (a 16 x 48 matrix of random numbers fits alpha 1.7), so the fit cannot speak, as
WeightWatcher skips such layers."""


def fit_power_law(eigenvalues: torch.Tensor, *, min_tail: int = 5, min_values: int = MIN_EIGENVALUES) -> AlphaFit:
    """Fit ``p(x) ~ x^-alpha`` for ``x >= xmin`` to positive eigenvalues (maximum likelihood, KS-chosen ``xmin``).

    Every candidate ``xmin`` that leaves at least ``min_tail`` values is tried at once. Fewer
    than ``min_values`` positive eigenvalues give NaN (see :data:`MIN_EIGENVALUES`).
    """
    values = eigenvalues.double().flatten()
    values = torch.sort(values[values > values.max() * 1e-12]).values if values.numel() else values
    count = values.numel()
    if count < max(min_tail + 1, min_values):
        return AlphaFit(float("nan"), float("nan"), count, float("nan"))
    logs = values.log()
    suffix = logs.flip(0).cumsum(0).flip(0)  # sum of log(values[i:])
    candidates = torch.arange(0, count - min_tail + 1)
    tails = count - candidates
    sums = suffix[candidates] - tails * logs[candidates]  # sum ln(x / xmin) over the tail
    alphas = 1 + tails / sums.clamp_min(1e-300)
    best = (float("inf"), 0)
    for index, alpha in zip(candidates.tolist(), alphas.tolist(), strict=True):
        tail = values[index:]
        xmin = tail[0]
        empirical = torch.arange(tail.numel(), dtype=torch.float64) / tail.numel()
        model = 1 - (tail / xmin).pow(1 - alpha)
        distance = float((empirical - model).abs().max())
        if distance < best[0]:
            best = (distance, index)
    distance, index = best
    return AlphaFit(float(alphas[index]), float(values[index]), int(tails[index]), distance)


@dataclass(frozen=True)
class QualityThresholds:
    low: float = 2.0
    high: float = 6.0
    max_std: float = 1.0
    min_share_in_range: float = 0.5
    min_q: float = 0.2


@dataclass(frozen=True)
class LayerQuality:
    alphas: list[float]
    mean_alpha: float
    std_alpha: float
    q: float
    retained: bool
    reason: str = ""
    """Why the layer is kept or not, in words (every threshold it fails)."""


def layer_quality(alphas: list[float], thresholds: QualityThresholds = QualityThresholds()) -> LayerQuality:
    """The layer score ``q`` and whether the layer is kept, from its sources' alphas."""
    finite = [a for a in alphas if math.isfinite(a)]
    if not finite:
        return LayerQuality(
            alphas,
            float("nan"),
            float("nan"),
            0.0,
            False,
            f"no alpha could be fitted (fewer than {MIN_EIGENVALUES} eigenvalues: a small layer or a low-rank adapter)",
        )
    values = torch.tensor(finite, dtype=torch.float64)
    mean = float(values.mean())
    std = float(values.std(unbiased=False))
    in_range = (values >= thresholds.low) & (values <= thresholds.high)
    phi = torch.where(in_range, torch.exp(-0.5 * (values - 2)), torch.zeros_like(values))
    q = (1 - math.exp(-len(finite) / 20)) * float(phi.mean()) * math.exp(-std)
    q = min(1.0, max(0.0, q))
    share = float(in_range.double().mean())
    failed = [
        text
        for ok, text in (
            (
                thresholds.low <= mean <= thresholds.high,
                f"mean alpha {mean:.2f} outside [{thresholds.low:g}, {thresholds.high:g}]",
            ),
            (std <= thresholds.max_std, f"alpha spread {std:.2f} above {thresholds.max_std:g}"),
            (share >= thresholds.min_share_in_range, f"only {share:.0%} of alphas in range"),
            (q >= thresholds.min_q, f"q {q:.3f} below {thresholds.min_q:g}"),
        )
        if not ok
    ]
    reason = "; ".join(failed) if failed else f"alpha fit: mean {mean:.2f}, spread {std:.2f}, q {q:.3f}"
    return LayerQuality(alphas, mean, std, q, not failed, reason)
