"""Projection and reconstruction, including LoRA factors of bounded rank."""

from __future__ import annotations

import pytest
import torch
from conftest import random_loras

from unisub_hub.engine import (
    BuildOptions,
    LayerSpec,
    RankRule,
    build_basis,
    project_layer,
    reconstruct_layer,
    reconstruct_lora,
)


@pytest.mark.parametrize("modes", [(2, 3), (2,), (3,), (1,)])
def test_lora_reconstruction_is_exact_when_the_basis_spans_the_update(modes):
    shapes = {"q.weight": (20, 12)}
    loras = random_loras(4, shapes, ranks=[3])
    # Keep every direction the data has: the basis spans each update exactly.
    result = build_basis(
        [LayerSpec("q.weight", (20, 12))], loras, options=BuildOptions(modes=modes, rank=RankRule(k=50), center=False)
    )
    basis = result.layers["q.weight"]
    for lora in loras:
        matrix = lora.load(["q.weight"])["q.weight"]
        coef = project_layer(basis, matrix)
        torch.testing.assert_close(reconstruct_layer(basis, coef), matrix.dense(), rtol=1e-8, atol=1e-9)
        lora_b, lora_a = reconstruct_lora(basis, coef, max_rank=3)
        assert lora_b.shape[1] <= 3 and lora_a.shape[0] <= 3
        torch.testing.assert_close(lora_b @ lora_a, matrix.dense(), rtol=1e-7, atol=1e-8)


def test_lora_reconstruction_from_truncated_basis_is_the_projection():
    shapes = {"q.weight": (20, 12)}
    loras = random_loras(6, shapes, ranks=[4])
    result = build_basis(
        [LayerSpec("q.weight", (20, 12))], loras, options=BuildOptions(rank=RankRule(k=3), center=False)
    )
    basis = result.layers["q.weight"]
    matrix = loras[0].load(["q.weight"])["q.weight"]
    coef = project_layer(basis, matrix)
    lora_b, lora_a = reconstruct_lora(basis, coef, max_rank=4)
    u, v = basis.left, basis.right
    torch.testing.assert_close(lora_b @ lora_a, u @ u.T @ matrix.dense() @ v @ v.T, rtol=1e-8, atol=1e-9)


def test_lora_gauge_does_not_change_the_canonical_form():
    from unisub_hub.engine import lora_canonical

    gen = torch.Generator().manual_seed(3)
    lora_b, lora_a = (
        torch.randn(10, 3, generator=gen, dtype=torch.float64),
        torch.randn(3, 7, generator=gen, dtype=torch.float64),
    )
    gauge = torch.randn(3, 3, generator=gen, dtype=torch.float64) + 3 * torch.eye(3, dtype=torch.float64)
    one = lora_canonical(lora_b, lora_a, 0.5)
    two = lora_canonical(lora_b @ gauge, torch.linalg.solve(gauge, lora_a), 0.5)
    torch.testing.assert_close(one.singular_values, two.singular_values)
    torch.testing.assert_close(one.dense(), two.dense())
    torch.testing.assert_close(one.dense(), 0.5 * lora_b @ lora_a)


def _orthonormal_rounded(rows: int, cols: int, generator: torch.Generator) -> torch.Tensor:
    """Orthonormal columns stored through float16, as a low-precision basis file holds them."""
    q = torch.linalg.qr(torch.randn(rows, cols, generator=generator, dtype=torch.float64))[0]
    return q.half().double()


@pytest.mark.parametrize("modes", [(2, 3), (2,), (3,), (1,)])
@pytest.mark.parametrize("centred", [False, True])
@pytest.mark.parametrize("form", ["dense", "lora"])
def test_fit_measures_the_residual_of_the_dense_reconstruction(modes, centred, form):
    from unisub_hub.engine import Dense, LayerBasis, fit_layer
    from unisub_hub.engine.matrix import Factored

    gen = torch.Generator().manual_seed(3)
    p, q = 14, 9
    basis = LayerBasis(
        "w", (p, q), modes, mean=torch.randn(p, q, generator=gen, dtype=torch.float64) if centred else None
    )
    if modes == (1,):
        flat = _orthonormal_rounded(p * q, 3, gen)
        basis.components = flat.T.reshape(3, p, q)
    else:
        basis.left = _orthonormal_rounded(p, 4, gen) if 2 in modes else None
        basis.right = _orthonormal_rounded(q, 3, gen) if 3 in modes else None
    lora_b, lora_a = (
        torch.randn(p, 5, generator=gen, dtype=torch.float64),
        torch.randn(5, q, generator=gen, dtype=torch.float64),
    )
    matrix = Dense(lora_b @ lora_a * 0.5) if form == "dense" else Factored(lora_b, lora_a, 0.5)

    fit = fit_layer(basis, matrix)

    dense = matrix.dense()
    torch.testing.assert_close(fit.coef, project_layer(basis, matrix))
    torch.testing.assert_close(
        fit.residual, (dense - reconstruct_layer(basis, fit.coef)).square().sum(), rtol=1e-10, atol=1e-10
    )
    torch.testing.assert_close(fit.total, dense.square().sum())
    assert float(fit.centered_total) == pytest.approx(float(fit.residual + fit.coef.square().sum()))
    if centred and form == "dense":  # the same fit from the layer read already minus the mean
        shifted = fit_layer(basis, Dense(dense - basis.mean), centred=True)
        torch.testing.assert_close(shifted.coef, fit.coef)
        torch.testing.assert_close(shifted.residual, fit.residual, rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(shifted.total, fit.total)


def _random_basis(
    name: str, modes: tuple[int, ...], centred: bool, generator: torch.Generator, *, p: int = 14, q: int = 9, k: int = 4
):
    from unisub_hub.engine import LayerBasis

    def orthonormal(rows, cols):
        return torch.linalg.qr(torch.randn(rows, cols, generator=generator, dtype=torch.float64))[0]  # noqa: E731

    return LayerBasis(
        name,
        (p, q),
        modes,
        mean=torch.randn(p, q, generator=generator, dtype=torch.float64) if centred else None,
        left=orthonormal(p, k) if 2 in modes else None,
        right=orthonormal(q, k - 1) if 3 in modes else None,
        components=orthonormal(p * q, k).T.reshape(k, p, q) if modes == (1,) else None,
    )


@pytest.mark.parametrize("old_modes", [(2, 3), (2,), (3,), (1,)])
@pytest.mark.parametrize("new_modes", [(2, 3), (1,)])
@pytest.mark.parametrize("means", [(False, False), (True, True), (True, False)])
def test_rebase_equals_projecting_the_rebuilt_layer(old_modes, new_modes, means):
    from unisub_hub.engine import Dense, rebase_layer

    gen = torch.Generator().manual_seed(7)
    old = _random_basis("w", old_modes, means[0], gen)
    new = _random_basis("w", new_modes, means[1], gen)
    coef = torch.randn(old.coefficient_shape(), generator=gen, dtype=torch.float64)
    rebuilt = reconstruct_layer(old, coef)  # brute force: the old task's p x q layer

    fit = rebase_layer(old, coef, new)

    centred = rebuilt - (new.mean if new.mean is not None else 0)
    torch.testing.assert_close(fit.coef, new.strategy.project(new.factors, Dense(centred)))
    torch.testing.assert_close(
        fit.residual, (rebuilt - reconstruct_layer(new, fit.coef)).square().sum(), rtol=1e-9, atol=1e-9
    )
    torch.testing.assert_close(fit.total, rebuilt.square().sum())


def test_rebase_is_exact_when_the_new_basis_contains_the_old():
    from unisub_hub.engine import LayerBasis, rebase_layer

    gen = torch.Generator().manual_seed(8)
    old = _random_basis("w", (2, 3), True, gen, k=3)
    extra_left = torch.linalg.qr(torch.cat([old.left, torch.randn(14, 3, generator=gen, dtype=torch.float64)], 1))[0]
    extra_right = torch.linalg.qr(torch.cat([old.right, torch.randn(9, 2, generator=gen, dtype=torch.float64)], 1))[0]
    shifted_mean = (
        old.mean + extra_left[:, :3] @ torch.randn(3, 2, generator=gen, dtype=torch.float64) @ extra_right[:, :2].T
    )
    new = LayerBasis("w", (14, 9), (2, 3), mean=shifted_mean, left=extra_left, right=extra_right)
    coef = torch.randn(old.coefficient_shape(), generator=gen, dtype=torch.float64)
    fit = rebase_layer(old, coef, new)
    assert float(fit.residual) < 1e-20 * float(fit.total)
    torch.testing.assert_close(reconstruct_layer(new, fit.coef), reconstruct_layer(old, coef))
