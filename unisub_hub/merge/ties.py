"""``ties`` (Yadav et al., 2023): trim, elect sign, disjoint mean, on each layer's coefficients."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from ..errors import MergeError, option
from .base import MergeMethod

__all__ = ["Ties", "disjoint_mean", "trim"]


def trim(values: torch.Tensor, density: float) -> torch.Tensor:
    """``values`` with all but the ``density`` share of largest magnitudes set to zero (ties broken by position)."""
    keep = max(1, round(density * values.numel()))
    if keep >= values.numel():
        return values.clone()
    flat = values.reshape(-1)
    top = torch.topk(flat.abs(), keep, sorted=False).indices
    out = torch.zeros_like(flat)
    out[top] = flat[top]
    return out.reshape(values.shape)


def disjoint_mean(values: Sequence[torch.Tensor], weights: Sequence[float]) -> torch.Tensor:
    """TIES's sign election and disjoint merge: per entry, the sign of the weighted sum wins, and the
    entries of that sign are averaged with their weights (entries of the other sign, and zeros, left out)."""
    weighted = torch.stack([w * v for w, v in zip(weights, values, strict=True)])
    sign = torch.sign(weighted.sum(0))
    agrees = (torch.sign(torch.stack(list(values))) == sign) & (sign != 0)
    scale = torch.tensor(list(weights), dtype=weighted.dtype).reshape(-1, *([1] * (weighted.ndim - 1)))
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
        return disjoint_mean([trim(c, self.density) for c in coefficients], weights)
