"""What a merge method is, and the registry of methods by name."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from ..errors import MergeError, option

__all__ = ["MergeMethod", "merge_coefficients"]


class MergeMethod:
    """Combines the coefficient tensors of several tasks of one basis, layer by layer.

    Subclasses implement :meth:`merge_stacked`; their parameters are constructor arguments
    (variants are arguments, not subclasses) and :data:`~.registry.METHODS` names them.
    """

    name: str
    normalized: bool = False
    """True when the method divides by the weights it uses (TIES's disjoint mean): the mean's
    scale is then 1 whatever the weights sum to."""

    def parameters(self) -> dict[str, Any]:
        """What the method was run with, for the merged set's manifest (method included)."""
        return {"method": self.name}

    def merge_stacked(self, stacked: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """The merged coefficients of layers of one shape, each merged on its own.

        ``stacked`` is ``(layers, tasks, *shape)``, ``weights`` one per task; the result is
        ``(layers, *shape)``. Layers of one shape come in one call because a layer's ``k x k``
        core is a few hundred numbers: a merge costs its tensor calls, not its arithmetic.
        """
        raise NotImplementedError


def merge_coefficients(
    tasks: Sequence[Mapping[str, torch.Tensor]],
    weights: Sequence[float],
    method: MergeMethod,
    *,
    centered: bool,
) -> dict[str, torch.Tensor]:
    """Every layer of the tasks (same layers, same shapes) merged by ``method`` (in float64).

    On a ``centered`` basis the mean is shared: a method that does not normalize its weights
    keeps ``M`` at scale ``sum(weights)``, so the weights must sum to 1 (never a silently
    different update).

    Raises:
        MergeError: fewer than two tasks, a weight count that differs, non-finite weights,
            weights not summing to 1 on a centred basis, or layers that do not match.
    """
    if len(tasks) < 2:
        raise MergeError(f"a merge needs at least 2 tasks, got {len(tasks)}")
    if len(weights) != len(tasks):
        raise MergeError(f"{option('weights')} gives {len(weights)} weights for {len(tasks)} tasks")
    if not all(math.isfinite(w) for w in weights):
        raise MergeError(f"{option('weights')} must be finite numbers, got {list(weights)}")
    total = sum(weights)
    if centered and not method.normalized and abs(total - 1.0) > 1e-6:
        raise MergeError(
            f"{option('weights')} sum to {total:g}; the basis is centred, so every task includes its mean once and "
            f"a {method.name} merge keeps it at scale 1 only if the weights sum to 1 (divide them by {total:g})"
        )
    groups: dict[tuple[int, ...], list[str]] = {}
    for layer, value in tasks[0].items():
        for number, task in enumerate(tasks):
            if layer not in task or tuple(task[layer].shape) != tuple(value.shape):
                raise MergeError(f"task {number + 1} has no coefficients of layer {layer} shaped like the first's")
        groups.setdefault(tuple(value.shape), []).append(layer)
    scale = torch.tensor(list(weights), dtype=torch.float64)
    merged = {}
    for names in groups.values():  # in the order of first appearance: DARE's draws depend on it
        stacked = torch.stack([torch.stack([task[layer] for task in tasks]) for layer in names]).double()
        for layer, value in zip(names, method.merge_stacked(stacked, scale), strict=True):
            merged[layer] = value
    return {layer: merged[layer] for layer in tasks[0]}
