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

from .matrix import Factored, LayerMatrix

__all__ = ["SketchAccumulator", "add_batched"]


def add_batched(
    accumulators: list[SketchAccumulator], matrices: list[Factored], *, first_pass: bool, tests: tuple[torch.Tensor | None, torch.Tensor | None]
) -> None:
    """Fold same-shaped LoRA updates into their accumulators with a handful of batched GEMMs.

    One source holds dozens of modules of one shape (every layer's q_proj, say); stacking them
    turns ~10 small matrix products per module into ~10 ``bmm`` calls per shape.
    """
    lora_b = torch.stack([m.lora_b for m in matrices])
    lora_a = torch.stack([m.lora_a for m in matrices])
    scale2 = torch.tensor([m.scale**2 for m in matrices], dtype=lora_b.dtype, device=lora_b.device)[:, None, None]
    b_gram = lora_b.transpose(1, 2) @ lora_b
    a_gram = lora_a @ lora_a.transpose(1, 2)
    left_tests, right_tests = tests  # the accumulators' test matrices, stacked once per pass
    left = None if left_tests is None else lora_b @ (a_gram @ (lora_b.transpose(1, 2) @ left_tests)) * scale2
    right = None if right_tests is None else lora_a.transpose(1, 2) @ (b_gram @ (lora_a @ right_tests)) * scale2
    norms = (b_gram * a_gram).sum((1, 2)) * scale2.flatten() if first_pass else None
    for index, acc in enumerate(accumulators):
        acc.add_products(
            None if left is None else left[index],
            None if right is None else right[index],
            None if norms is None else norms[index],
            matrices[index] if first_pass else None,
        )


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
        left = None if self.left_test is None else matrix.left_apply(self.left_test)
        right = None if self.right_test is None else matrix.right_apply(self.right_test)
        self.add_products(left, right, matrix.sq_norm() if first_pass else None, matrix if first_pass else None)

    def add_products(self, left: torch.Tensor | None, right: torch.Tensor | None, sq_norm: torch.Tensor | None, matrix: LayerMatrix | None) -> None:
        """Fold in one source's ``G_m Omega`` products (computed here or batched by the caller)."""
        self.count += 1
        if left is not None:
            self.left = left.clone() if self.left is None else self.left.add_(left)
        if right is not None:
            self.right = right.clone() if self.right is None else self.right.add_(right)
        if sq_norm is not None:
            self.sq_norm = sq_norm if self.sq_norm is None else self.sq_norm + sq_norm
        if matrix is not None and self.total is not None:
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
