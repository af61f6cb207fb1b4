"""The mode-set strategies against brute force on small random factors."""

from __future__ import annotations

import pytest
import torch

from unisub_hub.engine import MODE_SETS, Dense, Factors, mode_set, parse_modes
from unisub_hub.errors import EngineError

P, Q, RANKS = 7, 5, {1: 3, 2: 4, 3: 2}


def _factors(strategy, generator: torch.Generator) -> Factors:
    def orthonormal(rows, cols):
        return torch.linalg.qr(torch.randn(rows, cols, generator=generator, dtype=torch.float64))[0]  # noqa: E731

    return Factors(
        left=orthonormal(P, RANKS[2]) if 2 in strategy.modes else None,
        right=orthonormal(Q, RANKS[3]) if 3 in strategy.modes else None,
        components=orthonormal(P * Q, RANKS[1]).T.reshape(RANKS[1], P, Q) if strategy.flat else None,
    )


@pytest.mark.parametrize("name", list(MODE_SETS))
def test_apply_equals_the_product_with_the_dense_reconstruction(name):
    strategy = MODE_SETS[name]
    gen = torch.Generator().manual_seed(1)
    factors = _factors(strategy, gen)
    coef = torch.randn(strategy.coefficient_shape(P, Q, RANKS), generator=gen, dtype=torch.float64)
    x = torch.randn(3, 6, Q, generator=gen, dtype=torch.float64)
    dense = strategy.reconstruct(factors, coef)
    assert dense.shape == (P, Q)
    torch.testing.assert_close(strategy.apply(factors, coef, x), x @ dense.T)
    torch.testing.assert_close(strategy.reconstruction_sq_norm(factors, coef), dense.square().sum())


@pytest.mark.parametrize("name", list(MODE_SETS))
def test_apply_per_example_equals_each_example_alone(name):
    strategy = MODE_SETS[name]
    gen = torch.Generator().manual_seed(2)
    factors = _factors(strategy, gen)
    coefs = torch.randn(4, *strategy.coefficient_shape(P, Q, RANKS), generator=gen, dtype=torch.float64)
    for x in (
        torch.randn(4, Q, generator=gen, dtype=torch.float64),
        torch.randn(4, 3, Q, generator=gen, dtype=torch.float64),
    ):
        mixed = strategy.apply_per_example(factors, coefs, x)
        alone = torch.stack([strategy.apply(factors, coefs[b], x[b]) for b in range(4)])
        torch.testing.assert_close(mixed, alone)


@pytest.mark.parametrize("name", list(MODE_SETS))
def test_projection_of_a_reconstruction_gives_back_the_coefficients(name):
    strategy = MODE_SETS[name]
    gen = torch.Generator().manual_seed(3)
    factors = _factors(strategy, gen)
    coef = torch.randn(strategy.coefficient_shape(P, Q, RANKS), generator=gen, dtype=torch.float64)
    torch.testing.assert_close(strategy.project(factors, Dense(strategy.reconstruct(factors, coef))), coef)


@pytest.mark.parametrize("name", list(MODE_SETS))
def test_factor_shapes_name_exactly_the_stored_roles(name):
    strategy = MODE_SETS[name]
    factors = _factors(strategy, torch.Generator().manual_seed(4))
    stored = {"U": factors.left, "V": factors.right, "components": factors.components}
    shapes = strategy.factor_shapes(P, Q, RANKS)
    assert set(shapes) == {role for role, tensor in stored.items() if tensor is not None}
    assert all(tuple(stored[role].shape) == shape for role, shape in shapes.items())


def test_lookup_by_any_spelling_and_refusal_of_unknown_sets():
    assert (
        mode_set("3,2") is MODE_SETS["2,3"] and mode_set((2, 3)) is MODE_SETS["2,3"] and mode_set([1]) is MODE_SETS["1"]
    )
    assert parse_modes("23") == (2, 3)
    with pytest.raises(EngineError, match="unsupported modes"):
        mode_set("1,2")


@pytest.mark.parametrize("name", list(MODE_SETS))
def test_transposed_mode_set_rebuilds_the_transposed_layer(name):
    strategy = MODE_SETS[name]
    gen = torch.Generator().manual_seed(5)
    factors = _factors(strategy, gen)
    coef = torch.randn(strategy.coefficient_shape(P, Q, RANKS), generator=gen, dtype=torch.float64)
    flipped = strategy.transposed.reconstruct(factors.transposed(), strategy.transpose_coefficients(coef))
    torch.testing.assert_close(flipped, strategy.reconstruct(factors, coef).T)


@pytest.mark.parametrize("name", list(MODE_SETS))
def test_as_matrix_is_the_reconstruction_in_factors(name):
    strategy = MODE_SETS[name]
    gen = torch.Generator().manual_seed(6)
    factors = _factors(strategy, gen)
    coef = torch.randn(strategy.coefficient_shape(P, Q, RANKS), generator=gen, dtype=torch.float64)
    matrix = strategy.as_matrix(factors, coef)
    torch.testing.assert_close(matrix.dense(), strategy.reconstruct(factors, coef))
    assert strategy.flat or not isinstance(matrix, Dense)  # low-rank form wherever the mode set has one
