"""Stacked LoRA updates: every batched product against the per-update dense computation."""

from __future__ import annotations

import pytest
import torch

from unisub_hub.engine.matrix import Factored
from unisub_hub.engine.stack import FactoredStack, TuckerBases


def _updates(count: int = 5, p: int = 30, q: int = 20, r: int = 4, seed: int = 0) -> list[Factored]:
    gen = torch.Generator().manual_seed(seed)
    return [
        Factored(
            torch.randn(p, r, generator=gen, dtype=torch.float64),
            torch.randn(r, q, generator=gen, dtype=torch.float64),
            0.5 + m,
        )
        for m in range(count)
    ]


def _stack(updates: list[Factored]) -> FactoredStack:
    return FactoredStack.of([f"m{i}" for i in range(len(updates))], updates, torch.device("cpu"), torch.float64)


def test_applies_add_each_updates_gram_product():
    updates = _updates()
    stack = _stack(updates)
    gen = torch.Generator().manual_seed(1)
    left_tests, right_tests = (
        torch.randn(5, 30, 7, generator=gen, dtype=torch.float64),
        torch.randn(5, 20, 7, generator=gen, dtype=torch.float64),
    )
    start_left, start_right = torch.randn(5, 30, 7, dtype=torch.float64), torch.randn(5, 20, 7, dtype=torch.float64)
    left, right = start_left.clone(), start_right.clone()
    stack.add_left_apply(left, left_tests)
    stack.add_right_apply(right, right_tests)
    for i, update in enumerate(updates):
        dense = update.dense()
        torch.testing.assert_close(left[i], start_left[i] + dense @ dense.T @ left_tests[i])
        torch.testing.assert_close(right[i], start_right[i] + dense.T @ dense @ right_tests[i])


@pytest.mark.parametrize(("dtype", "tolerance"), [(torch.float64, 1e-12), (torch.float32, 1e-5)])
def test_norms_and_tucker_residuals_match_dense_projections(dtype, tolerance):
    updates = _updates()
    stack = FactoredStack.of([f"m{i}" for i in range(len(updates))], updates, torch.device("cpu"), dtype)
    left = torch.linalg.qr(torch.randn(5, 30, 3, dtype=torch.float64))[0]
    right = torch.linalg.qr(torch.randn(5, 20, 2, dtype=torch.float64))[0]
    residual, total = stack.tucker_residuals(TuckerBases.of(left, right, dtype))
    assert residual.dtype == total.dtype == torch.float64
    for i, update in enumerate(updates):
        dense = update.dense()  # the float64 factors; a float32 stack holds them rounded
        u, v = left[i].to(dtype).double(), right[i].to(dtype).double()  # the bases the stack is projected on
        projected = u @ u.T @ dense @ v @ v.T
        torch.testing.assert_close(total[i], dense.square().sum(), rtol=tolerance, atol=0)
        torch.testing.assert_close(residual[i], (dense - projected).square().sum(), rtol=tolerance, atol=0)
    torch.testing.assert_close(stack.sq_norms().double(), total, rtol=tolerance, atol=0)


def test_float32_residuals_of_updates_the_basis_holds_are_near_zero():
    """Summed from parts, not as a difference of squared norms (which keeps ~1e-7 of the total
    as rounding, a relative error of 3e-4): a member inside the float32 basis reports ~1e-7."""
    gen = torch.Generator().manual_seed(3)
    left = torch.linalg.qr(torch.randn(4, 600, 6, generator=gen, dtype=torch.float64))[0].float()
    right = torch.linalg.qr(torch.randn(4, 500, 6, generator=gen, dtype=torch.float64))[0].float()
    inside = [
        Factored(left[i] @ torch.randn(6, 4, generator=gen), torch.randn(4, 6, generator=gen) @ right[i].T, 2.0)
        for i in range(4)
    ]
    stack = FactoredStack.of([f"m{i}" for i in range(4)], inside, torch.device("cpu"), torch.float32)
    residual, total = stack.tucker_residuals(TuckerBases.of(left, right, torch.float32))
    assert float((residual / total).sqrt().max()) < 1e-5
    core = (
        (left.transpose(1, 2) @ stack.lora_b) @ (stack.lora_a @ right) * 2.0
    )  # the old float32 difference, for contrast
    assert float(((stack.sq_norms() - core.square().sum((1, 2))).abs() / stack.sq_norms()).sqrt().max()) > 1e-5


def test_matrix_views_share_storage_and_scale():
    updates = _updates()
    stack = _stack(updates)
    view = stack.matrix(3)
    assert view.lora_b.data_ptr() == stack.lora_b[3].data_ptr()
    torch.testing.assert_close(view.dense(), updates[3].dense())


def test_all_finite_sees_nan_and_inf_and_survives_overflowing_squares():
    assert _stack(_updates()).all_finite()
    for bad in (float("nan"), float("inf")):
        updates = _updates()
        updates[2].lora_a[1, 3] = bad
        assert not _stack(updates).all_finite()
    huge = [Factored(torch.full((4, 2), 1e30), torch.ones(2, 3), 1.0)]  # squares overflow float32, entries are finite
    stack = FactoredStack.of(["m"], huge, torch.device("cpu"), torch.float32)
    assert not bool(torch.isfinite(stack.b_gram).all())
    assert stack.all_finite()
