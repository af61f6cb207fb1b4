"""``linear``: the weighted sum of the tasks' coefficients (exact: the update of the sum is the sum of the updates)."""

from __future__ import annotations

import torch

from .base import MergeMethod

__all__ = ["Linear", "weighted_sum"]


class Linear(MergeMethod):
    """``C = sum_t w_t C_t``.

    Since a task's update is linear in its coefficients, ``U C V^T = sum_t w_t U C_t V^T``
    exactly; with weights that sum to 1 the shared mean stays as it is.
    """

    name = "linear"

    def merge_stacked(self, stacked: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        return weighted_sum(stacked, weights)


def weighted_sum(stacked: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """``sum_t w_t C_t`` over dimension 1 of ``(layers, tasks, *shape)``."""
    return torch.tensordot(weights.to(stacked.dtype), stacked, dims=([0], [1]))
