"""Choosing how many directions to keep, from a spectrum of eigenvalues."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import EngineError

__all__ = ["VARIANCE_TARGETS", "RankRule", "explained_variance", "k_for_variance", "numerical_rank"]

VARIANCE_TARGETS = (0.5, 0.8, 0.9, 0.95)
"""The explained-variance levels every quality report gives the ``k`` for."""


@dataclass(frozen=True)
class RankRule:
    """A fixed ``k`` per mode, or the smallest ``k`` reaching an explained-variance target."""

    k: int | None = None
    variance: float | None = None

    def __post_init__(self) -> None:
        if (self.k is None) == (self.variance is None):
            raise EngineError("give exactly one of k (a fixed rank) or variance (a target in (0, 1])")
        if self.k is not None and self.k < 1:
            raise EngineError(f"rank k must be at least 1, got {self.k}")
        if self.variance is not None and not 0 < self.variance <= 1:
            raise EngineError(f"variance target must lie in (0, 1], got {self.variance}")

    def choose(self, eigenvalues: torch.Tensor, limit: int) -> int:
        """Rank for a descending spectrum of eigenvalues, capped at ``limit`` (what the data can have).

        0 when the data has no direction at all (a layer equal in every source): the build
        then leaves the layer out (:attr:`BuildResult.constant`) instead of failing.
        """
        if limit < 1:
            return 0
        if self.k is not None:
            return min(self.k, limit)
        return min(k_for_variance(eigenvalues, self.variance), limit)  # type: ignore[arg-type]


def explained_variance(eigenvalues: torch.Tensor) -> torch.Tensor:
    """Cumulative explained variance: entry ``i`` is the share of the top ``i + 1`` eigenvalues."""
    values = eigenvalues.clamp_min(0).double()
    total = values.sum()
    if total <= 0:
        return torch.ones_like(values)
    return values.cumsum(0) / total


def k_for_variance(eigenvalues: torch.Tensor, target: float) -> int:
    """Smallest ``k`` whose top-``k`` eigenvalues explain at least ``target`` of the total."""
    curve = explained_variance(eigenvalues)
    reached = torch.nonzero(curve >= target - 1e-12)
    return int(reached[0]) + 1 if len(reached) else len(curve)


def numerical_rank(eigenvalues: torch.Tensor, *, rtol: float | None = None) -> int:
    """Number of eigenvalues above round-off relative to the largest one.

    The default tolerance, ``eps * max(n, 100)``, sits well above the round-off of an ``eigh``
    of a Gram (a few ``eps * lambda_max``) and well below a real direction's share: in
    float32 it keeps eigenvalues down to about ``1e-4`` of the largest at ``n = 1024``
    (a thousand times that, as before, silently cut ``k`` on ordinary spectra).
    """
    if eigenvalues.numel() == 0:
        return 0
    top = eigenvalues.max().clamp_min(0)
    if top == 0:
        return 0
    if rtol is None:
        rtol = torch.finfo(eigenvalues.dtype).eps * max(eigenvalues.shape[0], 100)
    return int((eigenvalues > top * rtol).sum())
