"""``ties`` (Yadav et al., 2023): trim, elect sign, disjoint mean, on each layer's coefficients."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from ..errors import MergeError, option
from .base import MergeMethod

__all__ = ["Ties", "disjoint_mean", "trim", "trim_each"]


def trim(values: torch.Tensor, density: float) -> torch.Tensor:
    """``values`` with all but the ``density`` share of largest magnitudes set to zero (ties broken by position)."""
    return trim_each(values.unsqueeze(0), density)[0]


def trim_each(stacked: torch.Tensor, density: float) -> torch.Tensor:
    """:func:`trim` of every task of ``stacked`` (tasks along the first dimension) in one pass:
    a merge of tiny ``k x k`` cores costs its Python calls, not its arithmetic."""
    flat = stacked.reshape(len(stacked), -1)
    keep = max(1, round(density * flat.shape[1]))
    if keep >= flat.shape[1]:
        return stacked.clone()
    top = torch.topk(flat.abs(), keep, dim=1, sorted=False).indices
    return torch.zeros_like(flat).scatter_(1, top, flat.gather(1, top)).reshape(stacked.shape)


def disjoint_mean(values: Sequence[torch.Tensor] | torch.Tensor, weights: Sequence[float]) -> torch.Tensor:
    """TIES's sign election and disjoint merge: per entry, the sign of the weighted sum wins, and the
    entries of that sign are averaged with their weights (entries of the other sign, and zeros, left out).

    ``values`` is one tensor per task, or the tasks stacked along the first dimension."""
    stacked = values if isinstance(values, torch.Tensor) else torch.stack(list(values))
    scale = torch.tensor(list(weights), dtype=stacked.dtype).reshape(-1, *([1] * (stacked.ndim - 1)))
    weighted = scale * stacked
    sign = torch.sign(weighted.sum(0))
    agrees = (torch.sign(stacked) == sign) & (sign != 0)
    numerator = (weighted * agrees).sum(0)
    denominator = (scale * agrees).sum(0)
    return torch.where(
        denominator != 0,
        numerator / denominator.where(denominator != 0, torch.ones_like(denominator)),
        torch.zeros_like(numerator),
    )


class Ties(MergeMethod):
    """Each task trimmed to its top ``density`` by magnitude, then sign election and the disjoint mean.

    Works on a layer's coefficient tensor, the task's coordinates around the basis mean.
    The disjoint mean divides by the weights it uses, so the shared mean keeps scale 1.
    """

    name = "ties"
    normalized = True

    def __init__(self, density: float = 0.5) -> None:
        if not 0 < density <= 1:
            raise MergeError(f"{option('density')} must be in (0, 1], got {density}")
        self.density = density

    def parameters(self) -> dict[str, Any]:
        return {"method": self.name, "density": self.density}

    def merge_layer(self, layer: str, coefficients: Sequence[torch.Tensor], weights: Sequence[float]) -> torch.Tensor:
        return disjoint_mean(trim_each(torch.stack(list(coefficients)), self.density), weights)
