"""Streamed sums over sources: the mode-2 and mode-3 second moments of one layer.

For one side of a layer the engine needs the top eigenvectors of
``G = sum_m L_m L_m^T - N M M^T`` where ``L_m L_m^T`` is the source's contribution
(``X X^T`` for mode 2, ``X^T X`` for mode 3; ``(P S)(P S)^T`` for a LoRA source). While the
stacked width ``sum_m width(L_m)`` is below the side's dimension, the factors themselves are
kept (cheaper than the Gram, and an SVD of them is more accurate); past it they are folded
into a ``d x d`` Gram. Either way memory stays below ``d x d`` plus one source.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .matrix import LayerMatrix

__all__ = ["LayerAccumulator", "SideAccumulator"]


@dataclass
class SideAccumulator:
    """``sum_m L_m L_m^T`` for one side of one layer, as a factor stack or a Gram."""

    dim: int
    stack: list[torch.Tensor] = field(default_factory=list)
    gram: torch.Tensor | None = None

    @property
    def stack_width(self) -> int:
        return sum(part.shape[1] for part in self.stack)

    def add(self, factor: torch.Tensor) -> None:
        if self.gram is not None:
            self.gram.addmm_(factor, factor.T)
            return
        self.stack.append(factor.clone())  # never keep a source's own tensor alive
        if self.stack_width >= self.dim:
            self._fold()

    def merge(self, other: SideAccumulator) -> SideAccumulator:
        if other.gram is not None:
            if self.gram is None:
                self.gram, other.gram = other.gram, self.gram
                self.stack, other.stack = other.stack, self.stack
            else:
                self.gram += other.gram
        for part in other.stack:
            self.add(part)
        return self

    def _fold(self) -> None:
        stacked = torch.cat(self.stack, dim=1)
        self.gram = stacked @ stacked.T
        self.stack = []

    def eigen(self, mean: torch.Tensor | None, count: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Eigenvalues (descending, clamped at 0) and eigenvectors of ``G - count * mean mean^T``.

        ``mean`` is the side's view of the centre (``M`` for mode 2, ``M^T`` for mode 3), or
        ``None`` when the layer is not centred.
        """
        if self.gram is not None:
            gram = self.gram if mean is None else self.gram - count * (mean @ mean.T)
            values, vectors = torch.linalg.eigh((gram + gram.T) / 2)
            values, vectors = values.flip(0), vectors.flip(1)
            return values.clamp_min(0), vectors
        stacked = torch.cat(self.stack, dim=1)
        if mean is None:
            vectors, singular, _ = torch.linalg.svd(stacked, full_matrices=False)
            return singular.square(), vectors
        # The centre lies in the span of the stacked factors, so the centred Gram is exact
        # inside that span: orthonormalise it, then solve the small problem there.
        span, _ = torch.linalg.qr(stacked)
        inner_stack = span.T @ stacked
        inner_mean = span.T @ mean
        small = inner_stack @ inner_stack.T - count * (inner_mean @ inner_mean.T)
        values, vectors = torch.linalg.eigh((small + small.T) / 2)
        return values.flip(0).clamp_min(0), span @ vectors.flip(1)


@dataclass
class LayerAccumulator:
    """All streamed sums of one layer: count, sum (for the centre) and the side moments."""

    shape: tuple[int, int]
    left: SideAccumulator | None
    right: SideAccumulator | None
    total: torch.Tensor | None
    count: int = 0

    @classmethod
    def empty(
        cls, shape: tuple[int, int], modes: tuple[int, ...], center: bool, device: torch.device, dtype: torch.dtype
    ) -> LayerAccumulator:
        p, q = shape
        return cls(
            shape=shape,
            left=SideAccumulator(p) if 2 in modes else None,
            right=SideAccumulator(q) if 3 in modes else None,
            total=torch.zeros(p, q, device=device, dtype=dtype) if center else None,
        )

    def add(self, matrix: LayerMatrix) -> None:
        self.count += 1
        if self.left is not None:
            self.left.add(matrix.left_factor())
        if self.right is not None:
            self.right.add(matrix.right_factor())
        if self.total is not None:
            self.total += matrix.dense()

    def merge(self, other: LayerAccumulator) -> LayerAccumulator:
        self.count += other.count
        if self.left is not None and other.left is not None:
            self.left.merge(other.left)
        if self.right is not None and other.right is not None:
            self.right.merge(other.right)
        if self.total is not None and other.total is not None:
            self.total += other.total
        return self

    def mean(self) -> torch.Tensor | None:
        return None if self.total is None else self.total / self.count

    @staticmethod
    def bytes_needed(shape: tuple[int, int], modes: tuple[int, ...], center: bool, itemsize: int) -> int:
        """Upper bound of the accumulator's memory, for grouping layers under a budget."""
        p, q = shape
        size = (p * p if 2 in modes else 0) + (q * q if 3 in modes else 0) + (p * q if center else 0)
        return size * itemsize
