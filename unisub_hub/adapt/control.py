"""The control a trained task is compared with: random orthonormal directions of the same shape.

Training the same coefficients on random directions (as VeRA and NOLA do on purpose) tells
how much of a task's accuracy comes from the shared subspace itself and how much from
having ``k x k`` free numbers per layer and a trained head at all.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..engine import LayerBasis
from ..format import BasisArtifact, save_basis
from ..format.dtypes import DTYPES

__all__ = ["random_basis_like"]


def random_basis_like(basis: BasisArtifact, out: str | Path, *, seed: int = 0) -> BasisArtifact:
    """Write a basis with ``basis``'s layers, modes, ranks and mean, and random orthonormal directions.

    Its sources are ``basis``'s (the mean, when there is one, is theirs); its name ends in
    ``-random`` and its ``command`` says what it is.
    """
    generator = torch.Generator().manual_seed(seed)

    def orthonormal(rows: int, cols: int) -> torch.Tensor:
        return torch.linalg.qr(torch.randn(rows, cols, generator=generator, dtype=torch.float64))[0]

    layers = {}
    for name in basis.layer_names:
        layer = basis.layer(name, dtype=torch.float64)
        p, q = layer.shape
        ranks = layer.ranks
        layers[name] = LayerBasis(
            name,
            layer.tensor_shape,
            layer.modes,
            mean=layer.mean,
            left=orthonormal(p, ranks[2]) if 2 in ranks else None,
            right=orthonormal(q, ranks[3]) if 3 in ranks else None,
            components=orthonormal(p * q, ranks[1]).T.reshape(ranks[1], p, q) if 1 in ranks else None,
        )
    manifest = basis.manifest
    return save_basis(
        out,
        layers,
        name=f"{manifest['name'][:120]}-random",
        architecture_name=manifest["architecture"]["name"],
        source_kind=manifest["source_kind"],
        sources=manifest["sources"],
        base_model=manifest["architecture"].get("base_model"),
        dtype=DTYPES[manifest["dtype"]],
        command=f"random orthonormal control of {basis.content_id} (seed {seed})",
    )
