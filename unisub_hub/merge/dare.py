"""``dare-linear`` and ``dare-ties`` (Yu et al., 2024): drop at random, rescale, then sum or TIES."""

from __future__ import annotations

from typing import Any

import torch

from ..errors import MergeError, option
from .base import MergeMethod
from .linear import weighted_sum
from .ties import disjoint_mean

__all__ = ["Dare"]


class Dare(MergeMethod):
    """Each entry of each task kept with probability ``density`` and rescaled by ``1 / density``;
    then the weighted sum (``dare-linear``) or, with ``sign_consensus``, TIES's sign election and
    disjoint mean (``dare-ties``).

    ``seed`` fixes the draws: one draw per group of same-shaped layers, the groups in the order
    their first layer is given, so the same tasks, weights and seed give the same merged
    coefficients (and content id). At density 1
    nothing is dropped: ``dare-linear`` is then ``linear``.
    """

    def __init__(self, density: float = 0.5, seed: int = 0, *, sign_consensus: bool = False) -> None:
        if not 0 < density <= 1:
            raise MergeError(f"{option('density')} must be in (0, 1], got {density}")
        self.density, self.seed, self.sign_consensus = density, seed, sign_consensus
        self.generator = torch.Generator().manual_seed(seed)

    @property
    def name(self) -> str:  # type: ignore[override]
        return "dare-ties" if self.sign_consensus else "dare-linear"

    @property
    def normalized(self) -> bool:  # type: ignore[override]
        return self.sign_consensus

    def parameters(self) -> dict[str, Any]:
        return {"method": self.name, "density": self.density, "seed": self.seed}

    def drop(self, values: torch.Tensor) -> torch.Tensor:
        if self.density >= 1:
            return values.clone()
        keep = torch.rand(values.shape, generator=self.generator, dtype=torch.float64) < self.density
        return values * keep / self.density

    def merge_stacked(self, stacked: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        dropped = self.drop(stacked)
        if self.sign_consensus:
            return disjoint_mean(dropped, weights, dim=1)
        return weighted_sum(dropped, weights)
