"""Coefficients of a source against a basis, and weights rebuilt from coefficients."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .basis import LayerBasis
from .matrix import Dense, Factored, LayerMatrix

__all__ = ["LayerFit", "fit_layer", "project_layer", "reconstruct_layer", "reconstruct_lora"]


def _same(basis: LayerBasis, like: torch.Tensor) -> dict[str, torch.Tensor | None]:
    """Basis factors on the device and dtype of ``like``."""
    cast = lambda t: None if t is None else t.to(device=like.device, dtype=like.dtype)  # noqa: E731
    return {
        "mean": cast(basis.mean),
        "left": cast(basis.left),
        "right": cast(basis.right),
        "components": cast(basis.components),
    }


def _reference(matrix: LayerMatrix) -> torch.Tensor:
    """A tensor of the matrix, whose device and dtype the basis is brought to."""
    if isinstance(matrix, Dense):
        return matrix.value
    return matrix.lora_b if isinstance(matrix, Factored) else matrix.left


def project_layer(basis: LayerBasis, matrix: LayerMatrix) -> torch.Tensor:
    """Coefficients of one layer of one source: the orthogonal projection onto the basis.

    Returns ``C = U^T (X - M) V`` for Tucker, ``U^T (X - M)`` for mode 2, ``(X - M) V`` for
    mode 3, ``<phi_j, X - M>`` for mode 1, computed on the matrix's device and dtype. LoRA
    sources in low-rank form are never expanded, except against a mean.
    """
    f = _same(basis, _reference(matrix))
    matrix, mean = _centre(matrix, f["mean"])
    return _project(basis.modes, f, matrix, mean)


def _centre(matrix: LayerMatrix, mean: torch.Tensor | None) -> tuple[LayerMatrix, torch.Tensor | None]:
    """A dense layer minus the mean, and no mean left to subtract; a LoRA update as it is.

    A fine-tune differs from the mean by far less than its weights' size: projecting ``X``
    and ``M`` apart and subtracting would cancel away most of the digits (in float32, all of
    a small fine-tune's), where ``X - M`` keeps them.
    """
    if mean is None or not isinstance(matrix, Dense):
        return matrix, mean
    return Dense(matrix.value - mean), None


def _project(modes: tuple[int, ...], f: dict[str, torch.Tensor | None], matrix: LayerMatrix, mean: torch.Tensor | None) -> torch.Tensor:
    left, right, comps = f["left"], f["right"], f["components"]
    if modes == (1,):
        coef = torch.stack([matrix.inner(c) for c in comps])  # type: ignore[union-attr]
        if mean is not None:
            coef = coef - torch.einsum("kpq,pq->k", comps, mean)
        return coef
    if modes == (2, 3):
        coef = matrix.core(left, right)
        return coef if mean is None else coef - left.T @ mean @ right  # type: ignore[union-attr]
    if modes == (2,):
        coef = matrix.left_project(left)
        return coef if mean is None else coef - left.T @ mean  # type: ignore[union-attr]
    coef = matrix.right_project(right)
    return coef if mean is None else coef - mean @ right  # type: ignore[operator]


def reconstruct_layer(basis: LayerBasis, coef: torch.Tensor) -> torch.Tensor:
    """The ``p x q`` weight (or LoRA update) that ``coef`` stands for: ``M + U C V^T`` etc."""
    f = _same(basis, coef)
    if basis.modes == (1,):
        out = torch.einsum("k,kpq->pq", coef, f["components"])
    elif basis.modes == (2, 3):
        out = f["left"] @ coef @ f["right"].T  # type: ignore[union-attr]
    elif basis.modes == (2,):
        out = f["left"] @ coef  # type: ignore[operator]
    else:
        out = coef @ f["right"].T  # type: ignore[union-attr]
    return out if f["mean"] is None else out + f["mean"]


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
    f = _same(basis, _reference(matrix))
    if centred:
        mean = f["mean"]
        sq = matrix.sq_norm()
        total = sq + 2 * matrix.inner(mean) + Dense(mean).sq_norm()  # type: ignore[arg-type]
        coef = _project(basis.modes, f, matrix, None)
    else:
        total = matrix.sq_norm()
        centred_matrix, mean = _centre(matrix, f["mean"])
        coef = _project(basis.modes, f, centred_matrix, mean)
        sq = centred_matrix.sq_norm() if mean is None else total - 2 * matrix.inner(mean) + mean.square().sum()
    if basis.modes == (1,):
        comps = f["components"].reshape(coef.shape[0], -1)
        rebuilt = coef @ (comps @ comps.T) @ coef
    else:
        left_gram = None if f["left"] is None else f["left"].T @ f["left"]
        right_gram = None if f["right"] is None else f["right"].T @ f["right"]
        weighted = coef if left_gram is None else left_gram @ coef
        weighted = weighted if right_gram is None else weighted @ right_gram
        rebuilt = (weighted * coef).sum()
    residual = (sq - 2 * coef.square().sum() + rebuilt).clamp_min(0)
    return LayerFit(coef, residual, total)


def reconstruct_lora(basis: LayerBasis, coef: torch.Tensor, max_rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    """LoRA factors ``B' (p x r')`` and ``A' (r' x q)`` with ``B' A' ~ reconstruct_layer``, ``r' <= max_rank``.

    Without a mean, ``U C V^T`` factors exactly through the SVD of the small ``C``; the
    singular values are split evenly between both factors. With a mean (or in mode 1) the
    dense update is truncated to ``max_rank`` by SVD, which is exact only when its rank allows.
    """
    f = _same(basis, coef)
    if basis.mean is None and basis.modes != (1,):
        small_u, small_s, small_vh = torch.linalg.svd(coef, full_matrices=False)
        keep = min(max_rank, int((small_s > small_s.max() * 1e-12).sum()) if small_s.numel() else 0) or 1
        root = small_s[:keep].sqrt()
        lora_b = small_u[:, :keep] * root
        lora_a = root[:, None] * small_vh[:keep]
        if f["left"] is not None:
            lora_b = f["left"] @ lora_b
        if f["right"] is not None:
            lora_a = lora_a @ f["right"].T
        return lora_b, lora_a
    dense = reconstruct_layer(basis, coef)
    full_u, full_s, full_vh = torch.linalg.svd(dense, full_matrices=False)
    root = full_s[:max_rank].sqrt()
    return full_u[:, :max_rank] * root, root[:, None] * full_vh[:max_rank]

