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
    factored = Factored(torch.randn(30, 4, generator=gen, dtype=torch.float64), torch.randn(4, 20, generator=gen, dtype=torch.float64), 0.5)
    dense = factored.dense()
    for form in (Dense(dense), factored, factored.canonical(), Dense(dense.T.contiguous().T)):
        torch.testing.assert_close(form.sq_norm(), dense.square().sum())
