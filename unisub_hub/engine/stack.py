"""Same-shaped LoRA updates of one source, stacked so that each product is one batched GEMM.

A source holds dozens of modules of one shape (every layer's ``q_proj``, say). Per-module
products of ``p x r`` and ``r x q`` factors are too small to keep two cores busy and each
costs a Python round trip; stacked, the randomized solver's ``X X^T Omega`` for all of them
is three ``bmm`` calls, and the sums go straight into the accumulators (``baddbmm_``)
without a temporary per module.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property

import torch

from .matrix import Factored, all_finite

__all__ = ["FactoredStack", "TuckerBases"]


class FactoredStack:
    """``n`` LoRA updates ``s_i B_i A_i`` of one shape and rank: ``B (n, p, r)``, ``A (n, r, q)``.

    Args:
        names: the layer of each update, in stacking order.
        lora_b: the stacked ``B`` factors.
        lora_a: the stacked ``A`` factors.
        scales: ``s_i`` as an ``(n,)`` float64 tensor on the factors' device (a bf16 scale
            would round ``alpha / r``); products use it in the factors' dtype.
    """

    def __init__(self, names: Sequence[str], lora_b: torch.Tensor, lora_a: torch.Tensor, scales: torch.Tensor) -> None:
        self.names = tuple(names)
        self.lora_b = lora_b
        self.lora_a = lora_a
        self.scales = scales

    @classmethod
    def of(
        cls,
        names: Sequence[str],
        matrices: Sequence[Factored],
        device: torch.device,
        dtype: torch.dtype | None = None,
        *,
        into: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> FactoredStack:
        """Stack then cast (``dtype=None`` keeps the factors' own), so a bf16 source is converted in one call.

        ``into`` gives ``(B, A)`` buffers to fill instead (cast while copied, in their dtype).
        """
        if into is None:
            lora_b = torch.stack([m.lora_b for m in matrices]).to(device=device, dtype=dtype)
            lora_a = torch.stack([m.lora_a for m in matrices]).to(device=device, dtype=dtype)
        else:
            lora_b, lora_a = into
            for index, matrix in enumerate(matrices):
                lora_b[index].copy_(matrix.lora_b)
                lora_a[index].copy_(matrix.lora_a)
        scales = torch.tensor([m.scale for m in matrices], dtype=torch.float64, device=device)
        return cls(names, lora_b, lora_a, scales)

    def to(self, dtype: torch.dtype) -> FactoredStack:
        """This stack in ``dtype``: itself (and its cached Grams) when already there."""
        if self.lora_b.dtype == dtype:
            return self
        return FactoredStack(self.names, self.lora_b.to(dtype), self.lora_a.to(dtype), self.scales)

    @property
    def rank(self) -> int:
        return self.lora_b.shape[2]

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (self.lora_b, self.lora_a))

    def matrix(self, index: int) -> Factored:
        """One update as a :class:`Factored` view (no copy)."""
        return Factored(self.lora_b[index], self.lora_a[index], float(self.scales[index]))

    def all_finite(self) -> bool:
        """Whether every factor entry is finite.

        Read off the Gram diagonals the passes need anyway: a column's squared norm is finite
        exactly when its entries are, unless it overflows, which the full check then settles.
        """
        diagonals = torch.cat(
            [self.b_gram.diagonal(dim1=1, dim2=2).flatten(), self.a_gram.diagonal(dim1=1, dim2=2).flatten()]
        )
        if bool(torch.isfinite(diagonals).all()):
            return True
        return all_finite(self.lora_b) and all_finite(self.lora_a)

    @cached_property
    def _scales(self) -> torch.Tensor:
        return self.scales.to(self.lora_b.dtype)

    @cached_property
    def b_gram(self) -> torch.Tensor:
        """``B_i^T B_i``, ``(n, r, r)``; kept, since every pass over a cached source needs it."""
        return self.lora_b.transpose(1, 2) @ self.lora_b

    @cached_property
    def a_gram(self) -> torch.Tensor:
        """``A_i A_i^T``, ``(n, r, r)``."""
        return self.lora_a @ self.lora_a.transpose(1, 2)

    def sq_norms(self) -> torch.Tensor:
        """``||s_i B_i A_i||_F^2 = s_i^2 <B_i^T B_i, A_i A_i^T>``, ``(n,)``."""
        return (self.b_gram * self.a_gram).sum((1, 2)) * self._scales.square()

    def add_left_apply(self, out: torch.Tensor, tests: torch.Tensor) -> None:
        """``out_i += X_i X_i^T tests_i = s_i^2 B_i (A_i A_i^T)(B_i^T tests_i)``, in place."""
        middle = self.a_gram * self._scales.square()[:, None, None]
        out.baddbmm_(self.lora_b, middle @ (self.lora_b.transpose(1, 2) @ tests))

    def add_right_apply(self, out: torch.Tensor, tests: torch.Tensor) -> None:
        """``out_i += X_i^T X_i tests_i = s_i^2 A_i^T (B_i^T B_i)(A_i tests_i)``, in place."""
        middle = self.b_gram * self._scales.square()[:, None, None]
        out.baddbmm_(self.lora_a.transpose(1, 2), middle @ (self.lora_a @ tests))

    def tucker_residuals(self, bases: TuckerBases) -> tuple[torch.Tensor, torch.Tensor]:
        """``(||X_i - U_i C_i V_i^T||^2, ||X_i||^2)`` in float64, for the cores ``C_i = U_i^T X_i V_i``.

        Thin products per update, never ``B A`` itself, and the residual of the reconstruction
        a user gets, also for a basis orthonormal only to float32's precision. Its precision
        decides how the residual is summed:

        - in float64, as ``||X||^2 - 2 ||C||^2 + <C, (U^T U) C (V^T V)>`` with ``C = s (U^T B)(A V)``:
          the fewest products, and float64 has the digits for the difference;
        - in lower precisions, from its parts, since a difference of squared norms would keep
          only rounding for a member the basis holds well (3e-4 of relative error for one it
          holds exactly). With ``P = U^T B``, ``Q = A V``, ``B' = B - U P`` and ``A' = A - Q V^T``,
          ``X - U C V^T = s (B' A + U P A')``, whose squared norm is
          ``<B'^T B', A A^T> + <P^T (U^T U) P, A' A'^T> + 2 <U^T B', P A' A^T>`` (times ``s^2``):
          every term is a product of small Grams, each accurate to its own size.
        """
        a_gram = self.a_gram.double()
        total = (self.b_gram.double() * a_gram).sum((1, 2)) * self.scales.square()
        left, right = bases.left, bases.right
        down = left.transpose(1, 2) @ self.lora_b  # P = U^T B, (n, k, r)
        up = self.lora_a @ right  # Q = A V, (n, r, k)
        if self.lora_b.dtype == torch.float64:
            core = down @ up * self.scales[:, None, None]
            rebuilt = (bases.left_gram @ core @ bases.right_gram * core).sum((1, 2))
            return (total - 2 * core.square().sum((1, 2)) + rebuilt).clamp_min(0), total
        b_rest = torch.baddbmm(self.lora_b, left, down, alpha=-1)  # B' = B - U P
        a_rest = torch.baddbmm(self.lora_a, up, right.transpose(1, 2), alpha=-1)  # A' = A - Q V^T
        down64 = down.double()
        inside = (b_rest.transpose(1, 2) @ b_rest).double() * a_gram
        across = (down64.transpose(1, 2) @ bases.left_gram @ down64) * (a_rest @ a_rest.transpose(1, 2)).double()
        mixed = (down64 - bases.left_gram @ down64) * (
            down64 @ (a_rest @ self.lora_a.transpose(1, 2)).double()
        )  # U^T B' = (I - U^T U) P
        residual = (inside.sum((1, 2)) + across.sum((1, 2)) + 2 * mixed.sum((1, 2))) * self.scales.square()
        return residual.clamp_min(0), total


@dataclass(frozen=True)
class TuckerBases:
    """Two-sided bases of a stack's layers, ``U_i (p, k)`` and ``V_i (q, k)``, with their Grams.

    The bases are kept in the precision of the stacks they will meet, and their Grams
    ``U_i^T U_i`` and ``V_i^T V_i`` in float64 (they measure how far from orthonormal the
    bases are): both the same for every source, so made once here, not per source.
    """

    left: torch.Tensor
    right: torch.Tensor
    left_gram: torch.Tensor
    right_gram: torch.Tensor

    @classmethod
    def of(cls, left: torch.Tensor, right: torch.Tensor, dtype: torch.dtype) -> TuckerBases:
        left64, right64 = left.double(), right.double()
        return cls(left.to(dtype), right.to(dtype), left64.transpose(1, 2) @ left64, right64.transpose(1, 2) @ right64)
