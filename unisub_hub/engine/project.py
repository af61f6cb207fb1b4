"""Coefficients of a source against a basis, and weights rebuilt from coefficients."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .basis import LayerBasis
from .matrix import Dense, Factored, LayerMatrix
from .modes import Factors

__all__ = [
    "LayerFit",
    "fit_layer",
    "project_layer",
    "rebase_layer",
    "reconstruct_layer",
    "reconstruct_lora",
    "update_rank",
]


def _reference(matrix: LayerMatrix) -> torch.Tensor:
    """A tensor of the matrix, whose device and dtype the basis is brought to."""
    if isinstance(matrix, Dense):
        return matrix.value
    return matrix.lora_b if isinstance(matrix, Factored) else matrix.left


def _mean(basis: LayerBasis, like: torch.Tensor) -> torch.Tensor | None:
    return None if basis.mean is None else basis.mean.to(device=like.device, dtype=like.dtype)


def project_layer(basis: LayerBasis, matrix: LayerMatrix) -> torch.Tensor:
    """Coefficients of one layer of one source: the orthogonal projection onto the basis.

    Returns ``C = U^T (X - M) V`` for Tucker, ``U^T (X - M)`` for mode 2, ``(X - M) V`` for
    mode 3, ``<phi_j, X - M>`` for mode 1, computed on the matrix's device and dtype. LoRA
    sources in low-rank form are never expanded, except against a mean.
    """
    like = _reference(matrix)
    matrix, mean = _centre(matrix, _mean(basis, like))
    return _project(basis, basis.factors.to(like), matrix, mean)


def _centre(matrix: LayerMatrix, mean: torch.Tensor | None) -> tuple[LayerMatrix, torch.Tensor | None]:
    """A dense layer minus the mean, and no mean left to subtract; a LoRA update as it is.

    A fine-tune differs from the mean by far less than its weights' size: projecting ``X``
    and ``M`` apart and subtracting would cancel away most of the digits (in float32, all of
    a small fine-tune's), where ``X - M`` keeps them.
    """
    if mean is None or not isinstance(matrix, Dense):
        return matrix, mean
    return Dense(matrix.value - mean), None


def _project(basis: LayerBasis, factors: Factors, matrix: LayerMatrix, mean: torch.Tensor | None) -> torch.Tensor:
    """The projection of ``matrix - mean`` (a LoRA update keeps its mean apart: it is not dense)."""
    coef = basis.strategy.project(factors, matrix)
    return coef if mean is None else coef - basis.strategy.project(factors, Dense(mean))


def reconstruct_layer(basis: LayerBasis, coef: torch.Tensor) -> torch.Tensor:
    """The ``p x q`` weight (or LoRA update) that ``coef`` stands for: ``M + U C V^T`` etc."""
    out = basis.strategy.reconstruct(basis.factors.to(coef), coef)
    mean = _mean(basis, coef)
    return out if mean is None else out + mean


@dataclass(frozen=True)
class LayerFit:
    """A layer's coefficients and the squared norms that say how well they fit it."""

    coef: torch.Tensor
    residual: torch.Tensor
    """``||X - X_hat||^2``."""
    total: torch.Tensor
    """``||X||^2``."""

    @property
    def centered_total(self) -> torch.Tensor:
        """``||X - M||^2``: the residual plus the energy the coefficients hold."""
        return self.residual + self.coef.square().sum()


def fit_layer(basis: LayerBasis, matrix: LayerMatrix, *, centred: bool = False) -> LayerFit:
    """Project one layer and measure the residual, without forming ``p x q`` residuals.

    ``||X - M - R||^2 = ||X - M||^2 - 2 <P, C> + ||R||^2`` where ``R`` is the reconstruction
    without the mean, ``P`` the adjoint of the reconstruction applied to ``X - M`` (which is
    the projection ``C`` itself) and ``||R||^2`` comes from the factors' small Gram matrices.
    It does not assume orthonormal factors, so a basis stored in float32 or bfloat16 gets its
    true error, not a rounding-inflated one. A dense layer is centred before anything else
    (see :func:`_centre`); the source is projected once, whatever the basis holds.

    With ``centred``, ``matrix`` is a dense layer already minus the basis's mean (a build's
    quality pass reads it so into a reused buffer instead of a fresh ``p x q`` tensor per
    source), and ``||X||^2 = ||X - M||^2 + 2 <X - M, M> + ||M||^2`` adds without cancelling.
    """
    like = _reference(matrix)
    factors = basis.factors.to(like)
    if centred:
        mean = _mean(basis, like)
        sq = matrix.sq_norm()
        total = sq + 2 * matrix.inner(mean) + Dense(mean).sq_norm()  # type: ignore[arg-type]
        coef = _project(basis, factors, matrix, None)
    else:
        total = matrix.sq_norm()
        centred_matrix, mean = _centre(matrix, _mean(basis, like))
        coef = _project(basis, factors, centred_matrix, mean)
        sq = centred_matrix.sq_norm() if mean is None else total - 2 * matrix.inner(mean) + mean.square().sum()
    rebuilt = basis.strategy.reconstruction_sq_norm(factors, coef)
    residual = (sq - 2 * coef.square().sum() + rebuilt).clamp_min(0)
    return LayerFit(coef, residual, total)


def reconstruct_lora(basis: LayerBasis, coef: torch.Tensor, max_rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    """LoRA factors ``B' (p x r')`` and ``A' (r' x q)`` with ``B' A' ~ reconstruct_layer``, ``r' <= max_rank``.

    Without a mean, ``U C V^T`` factors exactly through the SVD of the small ``C``; the
    singular values are split evenly between both factors. With a mean (or in mode 1) the
    dense update is truncated to ``max_rank`` by SVD, which is exact only when its rank allows.
    """
    factors = basis.factors.to(coef)
    if basis.mean is None and not basis.strategy.flat:
        small_u, small_s, small_vh = torch.linalg.svd(coef, full_matrices=False)
        keep = min(max_rank, int((small_s > small_s.max() * 1e-12).sum()) if small_s.numel() else 0) or 1
        root = small_s[:keep].sqrt()
        lora_b = small_u[:, :keep] * root
        lora_a = root[:, None] * small_vh[:keep]
        if factors.left is not None:
            lora_b = factors.left @ lora_b
        if factors.right is not None:
            lora_a = lora_a @ factors.right.T
        return lora_b, lora_a
    dense = reconstruct_layer(basis, coef)
    full_u, full_s, full_vh = torch.linalg.svd(dense, full_matrices=False)
    root = full_s[:max_rank].sqrt()
    return full_u[:, :max_rank] * root, root[:, None] * full_vh[:max_rank]


def update_rank(basis: LayerBasis, coef: torch.Tensor) -> int:
    """The rank of the update ``coef`` stands for (at least 1): the LoRA rank that exports it exactly.

    Without a mean, ``U C V^T`` has the rank of ``C`` (orthonormal sides); with a mean, or in
    mode 1, the rebuilt ``p x q`` update is measured once.
    """
    if basis.mean is None and not basis.strategy.flat:
        return max(1, int(torch.linalg.matrix_rank(coef)))
    return max(1, int(torch.linalg.matrix_rank(reconstruct_layer(basis, coef))))


def rebase_layer(old: LayerBasis, coef: torch.Tensor, new: LayerBasis) -> LayerFit:
    """A task's coefficients moved from ``old`` to ``new``: the projection of ``M1 + U1 C1 V1^T``
    onto the new basis, with the residual of what falls outside it.

    Tucker to Tucker: ``C2 = U2^T (M1 - M2) V2 + (U2^T U1) C1 (V1^T V2)``. Every mode set keeps
    the old update in its factors (:meth:`ModeSet.as_matrix`), so only the small cross
    products and the means' difference (once per layer, not per task) are formed. Exact when
    the new basis contains the old one.

    Returns:
        The new coefficients; ``total`` is ``||X||^2`` and ``centered_total`` ``||X - M2||^2``
        of the old task's layer ``X``.
    """
    like = coef
    low = old.strategy.as_matrix(old.factors.to(like), coef)
    old_mean, new_mean = _mean(old, like), _mean(new, like)
    shift: torch.Tensor | None
    if old_mean is None:
        shift = None if new_mean is None else -new_mean
    else:
        shift = old_mean if new_mean is None else old_mean - new_mean
    factors = new.factors.to(like)
    coef2 = new.strategy.project(factors, low)
    low_sq = low.sq_norm()
    centred_sq = low_sq
    if shift is not None:
        coef2 = coef2 + new.strategy.project(factors, Dense(shift))
        centred_sq = low_sq + 2 * low.inner(shift) + Dense(shift).sq_norm()
    total = low_sq if old_mean is None else low_sq + 2 * low.inner(old_mean) + Dense(old_mean).sq_norm()
    residual = (centred_sq - 2 * coef2.square().sum() + new.strategy.reconstruction_sq_norm(factors, coef2)).clamp_min(
        0
    )
    return LayerFit(coef2, residual, total)
