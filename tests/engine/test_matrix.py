"""Layer matrices: every form's products against the dense matrix they stand for."""

from __future__ import annotations

import torch

from unisub_hub.engine.matrix import Dense, Factored


def test_float32_squared_norm_keeps_float32_accuracy_on_a_large_matrix():
    # A million terms: a naive float32 accumulation (or the fused 2-norm) is off by about 2e-5.
    gen = torch.Generator().manual_seed(0)
    value = torch.randn(1024, 1024, generator=gen) * 0.03 + 1e-3
    exact = value.double().square().sum()
    assert abs(float(Dense(value).sq_norm()) - float(exact)) / float(exact) < 1e-6


def test_every_form_gives_the_dense_squared_norm():
    gen = torch.Generator().manual_seed(1)
    factored = Factored(
        torch.randn(30, 4, generator=gen, dtype=torch.float64),
        torch.randn(4, 20, generator=gen, dtype=torch.float64),
        0.5,
    )
    dense = factored.dense()
    for form in (Dense(dense), factored, factored.canonical(), Dense(dense.T.contiguous().T)):
        torch.testing.assert_close(form.sq_norm(), dense.square().sum())


def test_the_matrix_view_drops_leading_singleton_dimensions_and_rows_read_through_them():
    from unisub_hub.engine.matrix import matrix_shape, matrix_view, row_index

    assert (
        matrix_shape((1, 17, 64)) == (17, 64)
        and matrix_shape((1, 1, 8)) == (1, 8)
        and matrix_shape((8, 4, 3, 3)) == (8, 36)
    )
    assert matrix_shape((1, 5)) == (1, 5)  # two dimensions stay two
    tensor = torch.arange(2 * 17 * 3, dtype=torch.float32)[: 17 * 3].reshape(1, 1, 17, 3)
    assert matrix_view(tensor).shape == (17, 3)
    assert torch.equal(tensor[row_index(tensor.shape, 4, 9)].reshape(5, -1), matrix_view(tensor)[4:9])
