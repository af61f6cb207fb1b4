"""A held-out member rebuilt from a slice of a basis's directions (the demo's and benchmarks' sweeps)."""

from __future__ import annotations

from collections.abc import Mapping

import torch

from ..engine import LayerBasis, LayerMatrix, project_layer, reconstruct_layer

__all__ = ["rebuilt_updates", "truncate_layer"]


def truncate_layer(layer: LayerBasis, start: int, stop: int) -> LayerBasis:
    """Directions ``start:stop`` of every mode (``0:k`` universal, ``k:2k`` secondary), the mean kept."""
    return LayerBasis(
        layer.name,
        layer.tensor_shape,
        layer.modes,
        mean=layer.mean,
        left=None if layer.left is None else layer.left[:, start:stop],
        right=None if layer.right is None else layer.right[:, start:stop],
        components=None if layer.components is None else layer.components[start:stop],
    )


def rebuilt_updates(
    layers: Mapping[str, LayerBasis], matrices: Mapping[str, LayerMatrix], start: int, stop: int
) -> dict[str, torch.Tensor]:
    """Each layer's update projected onto directions ``start:stop`` and rebuilt (mean included)."""
    out = {}
    for name, layer in layers.items():
        part = truncate_layer(layer, start, stop)
        out[name] = reconstruct_layer(part, project_layer(part, matrices[name])).reshape(layer.tensor_shape)
    return out
