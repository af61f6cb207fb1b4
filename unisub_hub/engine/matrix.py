"""One layer of one source, seen as a ``p x q`` matrix, dense or in low-rank factors.

The engine never needs more of a source than the handful of products defined here, so a
LoRA adapter can take part in every decomposition through its ``p x r`` and ``q x r``
factors without ever forming the ``p x q`` update ``B A`` (docs/engine.md).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

__all__ = ["Dense", "Factored", "LayerMatrix", "LowRank", "all_finite", "lora_canonical", "matrix_shape", "matrix_view"]


def leading_ones(tensor_shape: tuple[int, ...] | list[int] | torch.Size) -> int:
    """How many leading size-1 dimensions the matrix view drops (a ``1 x 17 x 64`` position
    embedding is the ``17 x 64`` matrix it holds), keeping at least two dimensions."""
    count = 0
    while len(tensor_shape) - count > 2 and tensor_shape[count] == 1:
        count += 1
    return count


def matrix_shape(tensor_shape: tuple[int, ...] | list[int]) -> tuple[int, int]:
    """The ``p x q`` matrix view of a weight's shape: rows, then the product of the rest
    (after leading size-1 dimensions)."""
    shape = tuple(tensor_shape)[leading_ones(tensor_shape) :]
    return shape[0], math.prod(shape[1:])


def matrix_view(tensor: torch.Tensor) -> torch.Tensor:
    """View a weight as a matrix: ``(out, in, kh, kw)`` conv kernels become ``out x (in*kh*kw)``,
    ``(1, n, d)`` becomes ``n x d``."""
    if tensor.ndim < 2:
        raise ValueError(f"a {tensor.ndim}-D tensor has no matrix view")
    return tensor.reshape(matrix_shape(tensor.shape))


def row_index(tensor_shape: tuple[int, ...] | list[int], start: int, stop: int) -> tuple[slice, ...]:
    """The index that reads rows ``start:stop`` of the matrix view from the stored tensor."""
    return (slice(0, 1),) * leading_ones(tensor_shape) + (slice(start, stop),)


def all_finite(tensor: torch.Tensor) -> bool:
    """Whether ``tensor`` holds no NaN or Inf.

    The 2-norm is finite only when every entry is, and it costs one fused pass where
    ``isfinite().all()`` writes a boolean copy first (about 10x slower on a 1024 x 1024
    float32 matrix). Only a norm that overflows or is not finite needs the exact check.
    """
    return bool(torch.isfinite(torch.linalg.vector_norm(tensor))) or bool(torch.isfinite(tensor).all())


@dataclass(frozen=True)
class Dense:
    """A layer given as its full ``p x q`` matrix."""

    value: torch.Tensor

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.value.shape)  # type: ignore[return-value]

    @property
    def parts(self) -> tuple[torch.Tensor, ...]:
        """The tensors that hold the matrix."""
        return (self.value,)

    def to(self, device: torch.device, dtype: torch.dtype) -> Dense:
        return Dense(self.value.to(device=device, dtype=dtype))

    def dense(self) -> torch.Tensor:
        return self.value

    def left_factor(self) -> torch.Tensor:
        """A matrix ``L`` with ``L L^T = X X^T``."""
        return self.value

    def right_factor(self) -> torch.Tensor:
        """A matrix ``R`` with ``R R^T = X^T X``."""
        return self.value.T

    def sq_norm(self) -> torch.Tensor:
        """``||X||_F^2`` as a sum of row dot products: as accurate as summing the squares, without
        their ``p x q`` temporary (the fused 2-norm has none either, but in float32 it is about
        1000x less accurate: 2e-5 against 3e-8 relative on a 1024 x 1024 matrix)."""
        return torch.linalg.vecdot(self.value, self.value).sum()

    def left_apply(self, omega: torch.Tensor) -> torch.Tensor:
        """``X X^T omega`` (the mode-2 Gram applied to a thin matrix)."""
        return self.value @ (self.value.T @ omega)

    def right_apply(self, omega: torch.Tensor) -> torch.Tensor:
        """``X^T X omega`` (the mode-3 Gram applied to a thin matrix)."""
        return self.value.T @ (self.value @ omega)

    def left_project(self, left: torch.Tensor) -> torch.Tensor:
        """``left^T X``."""
        return left.T @ self.value

    def right_project(self, right: torch.Tensor) -> torch.Tensor:
        """``X right``."""
        return self.value @ right

    def core(self, left: torch.Tensor, right: torch.Tensor) -> torch.Tensor:
        """``left^T X right``."""
        return left.T @ self.value @ right

    def inner(self, other: torch.Tensor) -> torch.Tensor:
        """Frobenius inner product with a dense matrix (row dot products, no temporary)."""
        return torch.linalg.vecdot(self.value, other).sum()


@dataclass(frozen=True)
class LowRank:
    """A layer given as ``P diag(s) Q^T`` with orthonormal ``P (p x r)`` and ``Q (q x r)``."""

    left: torch.Tensor
    singular_values: torch.Tensor
    right: torch.Tensor

    @property
    def shape(self) -> tuple[int, int]:
        return (self.left.shape[0], self.right.shape[0])

    @property
    def rank(self) -> int:
        return self.singular_values.shape[0]

    @property
    def parts(self) -> tuple[torch.Tensor, ...]:
        return (self.left, self.singular_values, self.right)

    def to(self, device: torch.device, dtype: torch.dtype) -> LowRank:
        return LowRank(*(t.to(device=device, dtype=dtype) for t in (self.left, self.singular_values, self.right)))

    def dense(self) -> torch.Tensor:
        return (self.left * self.singular_values) @ self.right.T

    def left_factor(self) -> torch.Tensor:
        return self.left * self.singular_values

    def right_factor(self) -> torch.Tensor:
        return self.right * self.singular_values

    def sq_norm(self) -> torch.Tensor:
        return self.singular_values.square().sum()

    def left_apply(self, omega: torch.Tensor) -> torch.Tensor:
        return self.left @ (self.singular_values.square()[:, None] * (self.left.T @ omega))

    def right_apply(self, omega: torch.Tensor) -> torch.Tensor:
        return self.right @ (self.singular_values.square()[:, None] * (self.right.T @ omega))

    def left_project(self, left: torch.Tensor) -> torch.Tensor:
        return ((left.T @ self.left) * self.singular_values) @ self.right.T

    def right_project(self, right: torch.Tensor) -> torch.Tensor:
        return (self.left * self.singular_values) @ (self.right.T @ right)

    def core(self, left: torch.Tensor, right: torch.Tensor) -> torch.Tensor:
        return ((left.T @ self.left) * self.singular_values) @ (self.right.T @ right)

    def inner(self, other: torch.Tensor) -> torch.Tensor:
        return ((self.left.T @ other @ self.right).diagonal() * self.singular_values).sum()


@dataclass(frozen=True)
class Factored:
    """A LoRA update ``scale * B A`` kept in its raw factors ``B (p x r)`` and ``A (r x q)``.

    Every product the randomized solver and the projections need is cheap in these factors
    (``X X^T Omega = s^2 B (A A^T) (B^T Omega)``, ``U^T X V = s (U^T B)(A V)``), so no QR is
    paid for them; the orthonormal :class:`LowRank` form is computed only where a factor
    stack is needed (the exact solver).
    """

    lora_b: torch.Tensor
    lora_a: torch.Tensor
    scale: float

    @property
    def shape(self) -> tuple[int, int]:
        return (self.lora_b.shape[0], self.lora_a.shape[1])

    @property
    def parts(self) -> tuple[torch.Tensor, ...]:
        return (self.lora_b, self.lora_a)

    def to(self, device: torch.device, dtype: torch.dtype) -> Factored:
        return Factored(
            self.lora_b.to(device=device, dtype=dtype), self.lora_a.to(device=device, dtype=dtype), self.scale
        )

    def canonical(self) -> LowRank:
        return lora_canonical(self.lora_b, self.lora_a, self.scale)

    @property
    def singular_values(self) -> torch.Tensor:
        return self.canonical().singular_values

    def dense(self) -> torch.Tensor:
        return (self.lora_b @ self.lora_a) * self.scale

    def left_factor(self) -> torch.Tensor:
        return self.canonical().left_factor()

    def right_factor(self) -> torch.Tensor:
        return self.canonical().right_factor()

    def sq_norm(self) -> torch.Tensor:
        return (self.lora_b.T @ self.lora_b * (self.lora_a @ self.lora_a.T)).sum() * self.scale**2

    def left_apply(self, omega: torch.Tensor) -> torch.Tensor:
        return self.lora_b @ ((self.lora_a @ self.lora_a.T) @ (self.lora_b.T @ omega)) * self.scale**2

    def right_apply(self, omega: torch.Tensor) -> torch.Tensor:
        return self.lora_a.T @ ((self.lora_b.T @ self.lora_b) @ (self.lora_a @ omega)) * self.scale**2

    def left_project(self, left: torch.Tensor) -> torch.Tensor:
        return (left.T @ self.lora_b) @ self.lora_a * self.scale

    def right_project(self, right: torch.Tensor) -> torch.Tensor:
        return self.lora_b @ (self.lora_a @ right) * self.scale

    def core(self, left: torch.Tensor, right: torch.Tensor) -> torch.Tensor:
        return (left.T @ self.lora_b) @ (self.lora_a @ right) * self.scale

    def inner(self, other: torch.Tensor) -> torch.Tensor:
        return ((other @ self.lora_a.T) * self.lora_b).sum() * self.scale


LayerMatrix = Dense | LowRank | Factored


def lora_canonical(lora_b: torch.Tensor, lora_a: torch.Tensor, scale: float) -> LowRank:
    """Canonical form ``P diag(s) Q^T`` of the LoRA update ``scale * B A``.

    A thin QR of ``B`` and of ``A^T`` and an ``r x r`` SVD of ``R_B R_A^T`` give the exact
    SVD of ``scale * B A`` at ``O((p + q) r^2)`` cost. The result no longer depends on
    LoRA's gauge freedom (``B G, G^-1 A`` give the same factors).

    Args:
        lora_b: ``p x r`` matrix ``lora_B``.
        lora_a: ``r x q`` matrix ``lora_A`` (conv adapters already flattened to ``r x q``).
        scale: ``lora_alpha / r`` (or ``/ sqrt(r)`` with rsLoRA).
    """
    if lora_b.ndim != 2 or lora_a.ndim != 2 or lora_b.shape[1] != lora_a.shape[0]:
        raise ValueError(f"LoRA factors do not chain: B {tuple(lora_b.shape)} and A {tuple(lora_a.shape)}")
    q_b, r_b = torch.linalg.qr(lora_b)
    q_a, r_a = torch.linalg.qr(lora_a.T)
    small_u, small_s, small_vh = torch.linalg.svd(r_b @ r_a.T * scale)
    return LowRank(q_b @ small_u, small_s, q_a @ small_vh.T)


def lora_scale(alpha: float, rank: int, *, use_rslora: bool) -> float:
    """PEFT's scaling of ``B A``: ``alpha / r``, or ``alpha / sqrt(r)`` with rsLoRA."""
    return alpha / math.sqrt(rank) if use_rslora else alpha / rank
