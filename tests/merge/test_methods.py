"""Merge methods against independent implementations on small random coefficient tensors."""

from __future__ import annotations

import pytest
import torch

from unisub_hub.errors import MergeError
from unisub_hub.merge import METHODS, merge_coefficients, method_named


def tasks(count=3, shapes=((4, 4), (3, 5), (4, 4), (3, 5), (4, 4)), seed=0):
    """Layers of two shapes, repeated: methods merge the layers of one shape in one stacked call."""
    gen = torch.Generator().manual_seed(seed)
    return [
        {f"l{i}": torch.randn(shape, generator=gen, dtype=torch.float64) for i, shape in enumerate(shapes)}
        for _ in range(count)
    ]


def reference_ties(values, weights, density):
    """TIES written out entry by entry: trim per task, elect the sign of the weighted sum, weighted mean of agreeing."""
    trimmed = []
    for value in values:
        flat = value.reshape(-1).tolist()
        keep = max(1, round(density * len(flat)))
        order = sorted(range(len(flat)), key=lambda i: -abs(flat[i]))[:keep]
        trimmed.append([flat[i] if i in order else 0.0 for i in range(len(flat))])
    out = []
    for entry in range(len(trimmed[0])):
        total = sum(w * t[entry] for w, t in zip(weights, trimmed, strict=True))
        sign = (total > 0) - (total < 0)
        agree = [
            (w, t[entry])
            for w, t in zip(weights, trimmed, strict=True)
            if sign != 0 and (t[entry] > 0) - (t[entry] < 0) == sign
        ]
        weight = sum(w for w, _ in agree)
        out.append(sum(w * v for w, v in agree) / weight if weight else 0.0)
    return torch.tensor(out, dtype=torch.float64).reshape(values[0].shape)


def test_the_registry_names_every_method():
    assert set(METHODS) == {"linear", "ties", "dare-linear", "dare-ties", "iso"}
    with pytest.raises(MergeError, match="unknown method 'slerp'"):
        method_named("slerp")
    with pytest.raises(MergeError, match="linear does not take density"):
        method_named("linear", density=0.5)


def test_linear_is_the_weighted_sum():
    given = tasks()
    merged = merge_coefficients(given, [0.2, 0.3, 0.5], method_named("linear"), centered=True)
    for layer in given[0]:
        expected = 0.2 * given[0][layer] + 0.3 * given[1][layer] + 0.5 * given[2][layer]
        assert torch.allclose(merged[layer], expected, atol=1e-12)


@pytest.mark.parametrize("density", [0.2, 0.5, 1.0])
@pytest.mark.parametrize("weights", [[1 / 3] * 3, [0.5, 0.3, 0.2]])
def test_ties_equals_an_entry_by_entry_implementation(density, weights):
    given = tasks(seed=int(density * 10))
    merged = merge_coefficients(given, weights, method_named("ties", density=density), centered=True)
    for layer in given[0]:
        expected = reference_ties([t[layer] for t in given], weights, density)
        assert torch.allclose(merged[layer], expected, atol=1e-12)


def reference_iso(updates, weights):
    """Iso-C in weight space, written out: the SVD of the summed ``p x q`` update, each nonzero
    singular value replaced by their mean."""
    total = sum(w * u for w, u in zip(weights, updates, strict=True))
    left, values, right = torch.linalg.svd(total, full_matrices=False)
    rank = int((values > 1e-9 * values[0]).sum())
    return values[:rank].mean() * left[:, :rank] @ right[:rank]


@pytest.mark.parametrize("weights", [[1.0, 1.0, 1.0], [0.5, 0.3, 0.2]])
def test_iso_equals_weight_space_iso_c_of_the_update_the_basis_holds(weights):
    gen = torch.Generator().manual_seed(5)
    k, p, q = 9, 20, 14
    left = torch.linalg.qr(torch.randn(p, k, generator=gen, dtype=torch.float64)).Q
    right = torch.linalg.qr(torch.randn(q, k, generator=gen, dtype=torch.float64)).Q
    # rank-2 cores: the sum of three has rank 6 < k, so the zero singular values must stay zero
    cores = [
        torch.randn(k, 2, generator=gen, dtype=torch.float64) @ torch.randn(2, k, generator=gen, dtype=torch.float64)
        for _ in weights
    ]
    merged = merge_coefficients([{"l": c} for c in cores], weights, method_named("iso"), centered=False)["l"]
    expected = reference_iso([left @ c @ right.T for c in cores], weights)
    assert torch.allclose(left @ merged @ right.T, expected, atol=1e-10)
    values = torch.linalg.svdvals(merged)
    assert torch.allclose(values[:6], values[:6].mean().expand(6), atol=1e-10) and float(values[6:].max()) < 1e-10


def test_iso_scales_with_the_weights_and_refuses_flat_coefficients():
    given = tasks(count=2)
    once = merge_coefficients(given, [0.5, 0.5], method_named("iso"), centered=True)
    twice = merge_coefficients(given, [1.0, 1.0], method_named("iso"), centered=False)
    assert all(torch.allclose(2 * once[layer], twice[layer], atol=1e-12) for layer in once)
    flat = [{"l": torch.randn(5, dtype=torch.float64)} for _ in range(2)]
    with pytest.raises(MergeError, match=r"iso .* needs a matrix of coefficients per layer; .*shape \(5,\)"):
        merge_coefficients(flat, [0.5, 0.5], method_named("iso"), centered=True)
    with pytest.raises(MergeError, match="iso does not take density"):
        method_named("iso", density=0.5)
    broken = [given[0], {layer: torch.full_like(value, float("nan")) for layer, value in given[1].items()}]
    merged = merge_coefficients(broken, [0.5, 0.5], method_named("iso"), centered=True)  # no SVD error
    assert all(torch.isnan(value).all() for value in merged.values())  # left for the merge's finiteness check


def test_dare_is_seeded_and_at_density_one_is_linear():
    given = tasks()
    weights = [0.25, 0.25, 0.5]

    def dare(method, density, seed):
        return merge_coefficients(given, weights, method_named(method, density=density, seed=seed), centered=True)

    assert all(
        torch.equal(a, b)
        for a, b in zip(dare("dare-linear", 0.5, 3).values(), dare("dare-linear", 0.5, 3).values(), strict=True)
    )
    assert not all(
        torch.equal(a, b)
        for a, b in zip(dare("dare-linear", 0.5, 3).values(), dare("dare-linear", 0.5, 4).values(), strict=True)
    )
    linear = merge_coefficients(given, weights, method_named("linear"), centered=True)
    for layer, value in dare("dare-linear", 1.0, 9).items():
        assert torch.allclose(value, linear[layer], atol=1e-12)
    ties = merge_coefficients(given, weights, method_named("ties", density=1.0), centered=True)
    for layer, value in dare("dare-ties", 1.0, 9).items():
        assert torch.allclose(value, ties[layer], atol=1e-12)


def test_dare_keeps_the_expected_share_and_rescales_it():
    value = {"w": torch.ones(200, 200, dtype=torch.float64)}
    zero = {"w": torch.zeros(200, 200, dtype=torch.float64)}
    merged = merge_coefficients(
        [value, zero], [1.0, 0.0], method_named("dare-linear", density=0.3, seed=0), centered=False
    )["w"]
    kept = merged != 0
    assert abs(float(kept.double().mean()) - 0.3) < 0.01 and torch.allclose(
        merged[kept], torch.full_like(merged[kept], 1 / 0.3)
    )


@pytest.mark.parametrize(
    ("method", "params"), [("linear", {}), ("ties", {"density": 1.0}), ("dare-ties", {"density": 1.0})]
)
def test_a_task_merged_with_itself_is_itself(method, params):
    (task,) = tasks(count=1)
    merged = merge_coefficients([task, task], [0.5, 0.5], method_named(method, **params), centered=True)
    assert all(torch.allclose(merged[layer], task[layer], atol=1e-12) for layer in task)


def test_weights_that_do_not_sum_to_one_are_refused_on_a_centred_basis_only():
    given = tasks(count=2)
    with pytest.raises(MergeError, match="weights sum to 2; the basis is centred"):
        merge_coefficients(given, [1.0, 1.0], method_named("linear"), centered=True)
    merge_coefficients(given, [1.0, 1.0], method_named("linear"), centered=False)  # task arithmetic on updates
    merge_coefficients(given, [1.0, 1.0], method_named("ties", density=0.5), centered=True)  # normalized
    with pytest.raises(MergeError, match="gives 1 weights for 2 tasks"):
        merge_coefficients(given, [1.0], method_named("linear"), centered=False)
    with pytest.raises(MergeError, match="at least 2 tasks"):
        merge_coefficients(given[:1], [1.0], method_named("linear"), centered=False)
    with pytest.raises(MergeError, match="density must be in"):
        method_named("ties", density=1.5)
