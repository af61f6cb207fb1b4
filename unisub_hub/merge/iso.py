"""``iso`` (Iso-C, Marczak et al., 2025): the weighted sum with its spectrum made flat, per layer.

A sum of task updates is dominated by the few directions the tasks share; the directions one
task alone needs get small singular values and are drowned out. Iso-C keeps the sum's singular
directions and gives each of them the mean of its singular values, so every direction the
tasks span counts the same (where that helps, and where it does not: the README's merge tables).

On a basis with orthonormal ``U`` and ``V``, the singular directions of the core ``S`` are
those of the update ``U S V^T``, rotated: flattening the ``k x k`` core's spectrum is Iso-C
of the update the basis represents, at the cost of a ``k x k`` SVD per layer.
"""

from __future__ import annotations

import torch

from ..errors import MergeError
from .base import MergeMethod
from .linear import weighted_sum

__all__ = ["Iso", "flatten_spectrum"]


def flatten_spectrum(matrices: torch.Tensor) -> torch.Tensor:
    """Each matrix of ``(..., m, n)`` with its nonzero singular values replaced by their mean.

    A singular value counts as nonzero above ``max(m, n)`` float32 roundings of the largest
    (coefficients are stored in float32: below that, a singular value is their rounding).
    """
    left, values, right = torch.linalg.svd(matrices, full_matrices=False)
    cutoff = values[..., :1] * max(matrices.shape[-2:]) * torch.finfo(torch.float32).eps
    kept = values > cutoff
    mean = (values * kept).sum(-1, keepdim=True) / kept.sum(-1, keepdim=True).clamp(min=1)
    return (left * (mean * kept).unsqueeze(-2)) @ right


class Iso(MergeMethod):
    """``C = sigma_bar(S) P Q^T`` for ``S = sum_t w_t C_t = P diag(sigma) Q^T``, each layer on its own.

    ``sigma_bar`` is the mean of ``S``'s nonzero singular values, so the weights set the scale
    (equal weights ``1`` are Iso-C's task-arithmetic sum, ``1/T`` the average). A task merged
    with itself is not itself: its spectrum is flattened too. Needs a matrix per layer
    (the Tucker, left and right modes); mode-1 (flat) coefficients are refused.
    """

    name = "iso"

    def merge_stacked(self, stacked: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        if stacked.ndim != 4:
            raise MergeError(
                f"iso flattens each layer's singular values and needs a matrix of coefficients per layer; "
                f"this basis has layers of shape {tuple(stacked.shape[2:])} (use linear, ties or dare-*)"
            )
        total = weighted_sum(stacked, weights)
        if not bool(torch.isfinite(total).all()):
            return total  # an SVD cannot take it; the merge refuses non-finite results, naming the layer
        return flatten_spectrum(total)
