"""The numerical rank: round-off is cut, real directions are kept, in either precision."""

from __future__ import annotations

import pytest
import torch

from unisub_hub.engine import BuildOptions, LayerSpec, RankRule, build_basis
from unisub_hub.engine.rank import numerical_rank
from unisub_hub.io.memory import InMemoryCheckpoint


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_rank_deficient_gram_cuts_round_off_only(dtype):
    gen = torch.Generator().manual_seed(0)
    # Five directions spanning three decades of eigenvalues, in a 300-dimensional Gram.
    basis = torch.linalg.qr(torch.randn(300, 5, generator=gen, dtype=torch.float64))[0]
    factor = (basis * torch.tensor([1.0, 0.3, 0.1, 0.05, 0.03], dtype=torch.float64)).to(dtype)
    values = torch.linalg.eigvalsh(factor @ factor.T).flip(0)
    assert numerical_rank(values) == 5


def test_float32_builds_keep_the_k_asked_for_on_a_decaying_spectrum():
    gen = torch.Generator().manual_seed(1)
    p, q, n = 200, 150, 10
    scales = torch.logspace(0, -1.5, 8, dtype=torch.float64)  # eigenvalues down to 1e-3 of the top
    left = torch.linalg.qr(torch.randn(p, 8, generator=gen, dtype=torch.float64))[0] * scales
    sources = [
        InMemoryCheckpoint(f"m{m}", {"w": left @ torch.randn(8, q, generator=gen, dtype=torch.float64)})
        for m in range(n)
    ]
    spec = [LayerSpec("w", (p, q))]
    planted = torch.linalg.qr(left)[0]
    for solver in ("exact", "randomized"):
        result = build_basis(
            spec,
            sources,
            options=BuildOptions(rank=RankRule(k=8), center=False, solver=solver, accumulate_dtype=torch.float32),
        )
        found = result.layers["w"].left.double()
        assert found.shape[1] == 8
        # the 8 kept directions are the planted ones: the largest principal angle, from its sine
        sine = torch.linalg.matrix_norm(found - planted @ (planted.T @ found), ord=2)
        assert float(torch.arcsin(sine.clamp(max=1))) < 1e-3, solver
