"""``linear``: the weighted sum of the tasks' coefficients (exact: the update of the sum is the sum of the updates)."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .base import MergeMethod

__all__ = ["Linear"]


class Linear(MergeMethod):
    """``C = sum_t w_t C_t``.

    Since a task's update is linear in its coefficients, ``U C V^T = sum_t w_t U C_t V^T``
    exactly; with weights that sum to 1 the shared mean stays as it is.
    """

    name = "linear"

    def merge_layer(self, layer: str, coefficients: Sequence[torch.Tensor], weights: Sequence[float]) -> torch.Tensor:
        return sum((w * c for w, c in zip(weights, coefficients, strict=True)), torch.zeros_like(coefficients[0]))
