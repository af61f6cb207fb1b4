"""``ties`` (Yadav et al., 2023): trim, elect sign, disjoint mean, on each layer's coefficients."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

from ..errors import MergeError, option
from .base import MergeMethod

__all__ = ["Ties", "disjoint_mean", "trim", "trim_each"]


def trim(values: torch.Tensor, density: float) -> torch.Tensor:
    """``values`` with all but the ``density`` share of largest magnitudes set to zero (ties broken by position)."""
    return trim_each(values.unsqueeze(0), density)[0]


def trim_each(stacked: torch.Tensor, density: float, *, leading: int = 1) -> torch.Tensor:
    """:func:`trim` of every tensor of ``stacked`` along its first ``leading`` dimensions (tasks,
    or layers and tasks) in one pass: a merge of tiny ``k x k`` cores costs its Python calls, not
    its arithmetic."""
    flat = stacked.reshape(math.prod(stacked.shape[:leading]), -1)
    keep = max(1, round(density * flat.shape[1]))
    if keep >= flat.shape[1]:
        return stacked.clone()
    top = torch.topk(flat.abs(), keep, dim=1, sorted=False).indices
    return torch.zeros_like(flat).scatter_(1, top, flat.gather(1, top)).reshape(stacked.shape)


def disjoint_mean(stacked: torch.Tensor, weights: torch.Tensor | Sequence[float], *, dim: int = 0) -> torch.Tensor:
    """TIES's sign election and disjoint merge: per entry, the sign of the weighted sum wins, and the
    entries of that sign are averaged with their weights (entries of the other sign, and zeros, left out).

    The tasks run along dimension ``dim`` of ``stacked``, which the result loses."""
    shape = [1] * stacked.ndim
    shape[dim] = -1
    scale = torch.as_tensor(weights, dtype=stacked.dtype).reshape(shape)
    weighted = scale * stacked
    sign = torch.sign(weighted.sum(dim, keepdim=True))
    agrees = (torch.sign(stacked) == sign) & (sign != 0)
    numerator = (weighted * agrees).sum(dim)
    denominator = (scale * agrees).sum(dim)
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

    def merge_stacked(self, stacked: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        return disjoint_mean(trim_each(stacked, self.density, leading=2), weights, dim=1)
