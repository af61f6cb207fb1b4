"""Top-``k`` factors by randomized subspace iteration on streamed Gram products.

For wide layers (``d`` in the thousands) a dense ``d x d`` Gram and its ``eigh`` cost
``O(d^3)`` per layer side, about 10 s at ``d = 4096`` on two cores. When only the top ``k``
directions are wanted, ``G Omega`` for a thin ``d x l`` matrix ``Omega`` (``l = k + oversample``)
is a sum over sources of ``F_m (F_m^T Omega)``: cheap for LoRA factors and never needing
``G`` itself. Each pass over the sources multiplies by ``G`` once; after ``1 + power_iterations``
passes the leading left singular vectors of the last product span the top-``k`` eigenspace
to high accuracy whenever the spectrum has a gap (Halko, Martinsson and Tropp 2011).
Centring is exact: ``G_c Omega = G Omega - N M (M^T Omega)`` with the mean from the first pass.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .matrix import LayerMatrix

__all__ = ["SketchAccumulator"]


@dataclass
class SketchAccumulator:
    """``sum_m G_m Omega`` for both sides of one layer in one pass, plus the first pass's sums."""

    left_test: torch.Tensor | None
    right_test: torch.Tensor | None
    total: torch.Tensor | None
    left: torch.Tensor | None = None
    right: torch.Tensor | None = None
    sq_norm: torch.Tensor | None = None
    count: int = 0
    _started: bool = field(default=False, repr=False)

    def add(self, matrix: LayerMatrix, *, first_pass: bool) -> None:
        self.count += 1
        if self.left_test is not None:
            product = matrix.left_apply(self.left_test)
            self.left = product if self.left is None else self.left.add_(product)
        if self.right_test is not None:
            product = matrix.right_apply(self.right_test)
            self.right = product if self.right is None else self.right.add_(product)
        if first_pass:
            norm = matrix.sq_norm()
            self.sq_norm = norm if self.sq_norm is None else self.sq_norm + norm
            if self.total is not None:
                self.total += matrix.dense()

    def merge(self, other: SketchAccumulator) -> SketchAccumulator:
        self.count += other.count
        for name in ("left", "right", "sq_norm"):
            mine, theirs = getattr(self, name), getattr(other, name)
            if theirs is not None:
                setattr(self, name, theirs if mine is None else mine + theirs)
        if self.total is not None and other.total is not None:
            self.total += other.total
        return self

    @staticmethod
    def centred(product: torch.Tensor, test: torch.Tensor, mean: torch.Tensor | None, count: int) -> torch.Tensor:
        """``G_c test`` from ``G test``: subtract ``N M (M^T test)`` (``mean`` is this side's view of ``M``)."""
        return product if mean is None else product - count * (mean @ (mean.T @ test))
