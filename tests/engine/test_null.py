"""The null baseline: sampled spectra agree with the Marchenko-Pastur law used for big layers."""

from __future__ import annotations

import pytest
import torch
from conftest import random_loras

from unisub_hub.engine import null
from unisub_hub.engine.rank import explained_variance


def test_marchenko_pastur_matches_sampled_gaussian_spectra(monkeypatch):
    gen = torch.Generator().manual_seed(0)
    norms = torch.full((6,), 3.0, dtype=torch.float64)
    sampled, method = null.side_null_eigenvalues((200, 50), 2, norms, generator=gen)
    assert method == "sampled"
    monkeypatch.setattr(null, "SAMPLE_LIMIT", 0)
    law, method = null.side_null_eigenvalues((200, 50), 2, norms, generator=gen)
    assert method == "marchenko-pastur"
    assert float(law.sum()) == pytest.approx(float(sampled.sum()), rel=1e-6)
    for k in (1, 10, 50, 100):
        assert float(explained_variance(law)[k - 1]) == pytest.approx(
            float(explained_variance(sampled)[k - 1]), abs=0.02
        )


def test_flat_null_has_the_given_norms():
    gen = torch.Generator().manual_seed(1)
    norms = torch.tensor([1.0, 2.0, 3.0, 4.0], dtype=torch.float64)
    values = null.flat_null_eigenvalues(norms, 10_000, center=False, generator=gen)
    assert float(values.sum()) == pytest.approx(float(norms.square().sum()), rel=1e-9)
    # In high dimension Gaussian vectors are nearly orthogonal: eigenvalues ~ squared norms.
    torch.testing.assert_close(values, norms.square().flip(0), rtol=0.05, atol=0.05)


def test_lora_null_has_the_ranks_of_the_updates():
    """Random rank-r updates are low-rank too: the null for LoRA collections has their ranks."""
    from unisub_hub.engine import BuildOptions, LayerSpec, RankRule, build_basis
    from unisub_hub.io.memory import InMemoryLora

    gen = torch.Generator().manual_seed(4)
    structureless = [
        InMemoryLora(
            f"r{m}",
            {
                "w": (
                    torch.randn(40, 4, generator=gen, dtype=torch.float64),
                    torch.randn(4, 30, generator=gen, dtype=torch.float64),
                    1.0,
                )
            },
        )
        for m in range(6)
    ]
    result = build_basis(
        [LayerSpec("w", (40, 30))], structureless, options=BuildOptions(rank=RankRule(k=4), center=False)
    )
    mode = result.report.layers[0].mode_reports["2"]
    assert mode.null_method == "sampled-low-rank"
    assert mode.explained_variance == pytest.approx(mode.null_explained_variance, abs=0.08)
    planted = random_loras(6, {"w": (40, 30)})
    result = build_basis([LayerSpec("w", (40, 30))], planted, options=BuildOptions(rank=RankRule(k=4), center=False))
    mode = result.report.layers[0].mode_reports["2"]
    assert mode.explained_variance > mode.null_explained_variance + 0.3


def _sampled_updates(
    dim: int, other: int, norms: torch.Tensor, ranks: list[int], generator: torch.Generator
) -> torch.Tensor:
    """Brute force: draw each ``B A``, scale it to its norm, and take the side Gram's eigenvalues."""
    gram = torch.zeros(dim, dim, dtype=torch.float64)
    for norm, rank in zip(norms.tolist(), ranks, strict=True):
        update = torch.randn(dim, rank, generator=generator, dtype=torch.float64) @ torch.randn(
            rank, other, generator=generator, dtype=torch.float64
        )
        update *= norm / update.norm()
        gram += update @ update.T
    return torch.linalg.eigvalsh(gram).flip(0).clamp_min(0)


@pytest.mark.parametrize(("dim", "other", "ranks"), [(96, 64, [4] * 6), (120, 40, [2, 4, 8, 4, 2]), (64, 200, [8] * 4)])
def test_low_rank_null_has_the_law_of_sampled_updates(dim, other, ranks):
    gen = torch.Generator().manual_seed(5)
    norms = torch.rand(len(ranks), generator=gen, dtype=torch.float64) + 0.5
    fast = torch.stack(
        [
            explained_variance(null.low_rank_null_eigenvalues(dim, other, norms, ranks, generator=gen))[:8]
            for _ in range(40)
        ]
    )
    slow = torch.stack([explained_variance(_sampled_updates(dim, other, norms, ranks, gen))[:8] for _ in range(40)])
    assert float((fast.mean(0) - slow.mean(0)).abs().max()) < 0.01  # the same law: means agree within sampling error
    assert float(fast.std(0).max()) < 2 * float(slow.std(0).max()) + 1e-3
    values = null.low_rank_null_eigenvalues(dim, other, norms, ranks, generator=gen)
    assert values.shape[0] == sum(ranks)  # the rank the updates have
    assert float(values.sum()) == pytest.approx(float(norms.square().sum()), rel=1e-5)


def test_wide_lora_layers_get_a_low_rank_null_not_the_full_rank_law():
    gen = torch.Generator().manual_seed(6)
    values, method = null.side_null_eigenvalues(
        (4096, 4096), 2, torch.ones(64, dtype=torch.float64), generator=gen, ranks=[16] * 64
    )
    assert method == "simulated-low-rank" and values.shape[0] == 1024
    assert float(values.sum()) == pytest.approx(64.0, rel=1e-9)
    full_rank = null.marchenko_pastur_curve(4096, 64 * 4096)
    assert (
        float(explained_variance(values)[15]) > float(full_rank[15]) + 0.02
    )  # rank-16 updates concentrate more than full-rank noise


@pytest.mark.parametrize(
    ("dim", "other", "ranks"),
    [
        (1024, 1024, [16] * 64),  # R = dim
        (4096, 1024, [16] * 64),  # R < dim, other narrower
        (1024, 4096, [8, 16, 32] * 12),  # mixed ranks (rank_pattern)
        (512, 512, [16] * 96),  # R > dim: more update directions than the side has
    ],
)
def test_simulated_low_rank_null_agrees_with_full_samples(dim, other, ranks):
    """The cheap null (a smaller problem with the same ratios, stretched back) is within 0.01
    explained variance of full samples at every k a basis uses, and keeps the total and length."""
    gen = torch.Generator().manual_seed(7)
    norms = torch.rand(len(ranks), generator=gen, dtype=torch.float64) + 0.5
    full = torch.stack(
        [explained_variance(null.low_rank_null_eigenvalues(dim, other, norms, ranks, generator=gen)) for _ in range(3)]
    ).mean(0)
    values, method = null.side_null_eigenvalues((dim, other), 2, norms, generator=gen, ranks=ranks)
    assert method == "simulated-low-rank"
    assert values.shape == full.shape
    assert float(values.sum()) == pytest.approx(float(norms.square().sum()), rel=1e-9)
    assert bool((values[:-1] >= values[1:] - 1e-9).all())  # still descending
    cheap = explained_variance(values)
    for k in (1, 4, 8, 16, 24, 32, 64, 128):
        assert float(cheap[k - 1]) == pytest.approx(float(full[k - 1]), abs=0.01), k
