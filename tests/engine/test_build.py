"""The streamed HOSVD against a brute-force reference: stack everything, full SVD."""

from __future__ import annotations

import pytest
import torch
from conftest import max_principal_angle, planted_collection, random_loras

from unisub_hub.engine import (
    BuildOptions,
    LayerSpec,
    RankRule,
    build_basis,
    k_for_variance,
    project_layer,
    reconstruct_layer,
)
from unisub_hub.engine.matrix import matrix_view
from unisub_hub.errors import EngineError, NonFiniteError
from unisub_hub.io.memory import InMemoryCheckpoint

SHAPES = {"a.weight": (12, 9), "conv.weight": (6, 2, 2, 2), "b.weight": (5, 20)}


def stacked(sources, name):
    return torch.stack([matrix_view(s.load_rows(name, 0, 10**9)).double() for s in sources])


def reference_factors(x: torch.Tensor, k2: int, k3: int):
    n, p, q = x.shape
    u = torch.linalg.svd(x.permute(1, 0, 2).reshape(p, n * q), full_matrices=False)
    v = torch.linalg.svd(x.permute(2, 0, 1).reshape(q, n * p), full_matrices=False)
    flat = torch.linalg.svd(x.reshape(n, p * q), full_matrices=False)
    return u, v, flat


@pytest.mark.parametrize("center", [True, False])
@pytest.mark.parametrize("modes", [(2, 3), (2,), (3,), (1,)])
def test_every_mode_matches_brute_force_svd(modes, center):
    sources = planted_collection(7, SHAPES)
    specs = [LayerSpec(n, s) for n, s in SHAPES.items()]
    k = 3
    result = build_basis(specs, sources, options=BuildOptions(modes=modes, rank=RankRule(k=k), center=center))
    for spec in specs:
        x = stacked(sources, spec.name)
        mean = x.mean(0) if center else torch.zeros_like(x[0])
        xc = x - mean
        u_ref, v_ref, flat_ref = reference_factors(xc, k, k)
        basis = result.layers[spec.name]
        if 2 in modes:
            assert max_principal_angle(basis.left, u_ref.U[:, :k]) < 1e-6
            torch.testing.assert_close(basis.spectra[2][:k], u_ref.S[:k], rtol=1e-8, atol=1e-10)
        if 3 in modes:
            assert max_principal_angle(basis.right, v_ref.U[:, :k]) < 1e-6
            torch.testing.assert_close(basis.spectra[3][:k], v_ref.S[:k], rtol=1e-8, atol=1e-10)
        if modes == (1,):
            comps = basis.components.reshape(k, -1).T
            assert max_principal_angle(comps, flat_ref.Vh[:k].T) < 1e-6
            torch.testing.assert_close(basis.spectra[1][:k], flat_ref.S[:k], rtol=1e-8, atol=1e-10)
        # Reconstructions equal the brute-force orthogonal projection of each source.
        for m, source in enumerate(sources):
            coef = project_layer(basis, source.load([spec.name])[spec.name].to(torch.device("cpu"), torch.float64))
            if modes == (2, 3):
                u, v = u_ref.U[:, :k], v_ref.U[:, :k]
                expected = u @ u.T @ xc[m] @ v @ v.T
            elif modes == (2,):
                u = u_ref.U[:, :k]
                expected = u @ u.T @ xc[m]
            elif modes == (3,):
                v = v_ref.U[:, :k]
                expected = xc[m] @ v @ v.T
            else:
                w = flat_ref.Vh[:k]
                expected = (w.T @ (w @ xc[m].reshape(-1))).reshape(xc[m].shape)
            torch.testing.assert_close(reconstruct_layer(basis, coef), expected + mean, rtol=1e-7, atol=1e-9)
        # Explained variance of the kept directions matches the reference spectrum.
        report = next(r for r in result.report.layers if r.name == spec.name)
        for mode in modes:
            ref_s = {1: flat_ref.S, 2: u_ref.S, 3: v_ref.S}[mode]
            expected_ev = float(ref_s[:k].square().sum() / ref_s.square().sum())
            assert report.mode_reports[str(mode)].explained_variance == pytest.approx(expected_ev, rel=1e-8)


def test_tucker_core_is_u_transpose_x_v():
    sources = planted_collection(5, {"w": (10, 8)})
    result = build_basis([LayerSpec("w", (10, 8))], sources, options=BuildOptions(rank=RankRule(k=4)))
    basis = result.layers["w"]
    x = sources[2].tensors["w"]
    core = project_layer(basis, sources[2].load(["w"])["w"])
    torch.testing.assert_close(core, basis.left.T @ (x - basis.mean) @ basis.right)


def test_variance_target_selects_smallest_k_reaching_it():
    sources = planted_collection(8, {"w": (16, 12)}, rank=4, noise=0.3)
    for target in (0.5, 0.8, 0.9, 0.99):
        result = build_basis(
            [LayerSpec("w", (16, 12))], sources, options=BuildOptions(modes=(2,), rank=RankRule(variance=target))
        )
        x = stacked(sources, "w")
        s = torch.linalg.svdvals((x - x.mean(0)).permute(1, 0, 2).reshape(16, -1))
        curve = s.square().cumsum(0) / s.square().sum()
        expected = int(torch.nonzero(curve >= target)[0]) + 1
        assert result.layers["w"].ranks[2] == expected
        assert k_for_variance(s.square(), target) == expected


def test_rank_is_capped_by_what_the_data_has():
    sources = planted_collection(3, {"w": (10, 10)})
    flat = build_basis([LayerSpec("w", (10, 10))], sources, options=BuildOptions(modes=(1,), rank=RankRule(k=50)))
    assert flat.layers["w"].ranks[1] == 2  # centred mode 1: at most N - 1
    sides = build_basis([LayerSpec("w", (10, 10))], sources, options=BuildOptions(modes=(2, 3), rank=RankRule(k=50)))
    assert sides.layers["w"].ranks == {2: 10, 3: 10}


def test_memory_budget_splits_layers_into_passes_with_same_answer():
    sources = planted_collection(4, SHAPES)
    specs = [LayerSpec(n, s) for n, s in SHAPES.items()]
    one = build_basis(specs, sources, options=BuildOptions(rank=RankRule(k=2)))
    many = build_basis(specs, sources, options=BuildOptions(rank=RankRule(k=2), max_memory=1))
    assert many.report.passes > one.report.passes
    for name in SHAPES:
        assert max_principal_angle(one.layers[name].left, many.layers[name].left) < 1e-9


def test_flat_mode_row_blocks_give_same_components():
    sources = planted_collection(5, {"w": (9, 7)})
    whole = build_basis([LayerSpec("w", (9, 7))], sources, options=BuildOptions(modes=(1,), rank=RankRule(k=3)))
    blocks = build_basis(
        [LayerSpec("w", (9, 7))],
        sources,
        options=BuildOptions(modes=(1,), rank=RankRule(k=3), max_memory=5 * 7 * 8 * 2),
    )
    assert blocks.report.passes > whole.report.passes
    a, b = whole.layers["w"].components.reshape(3, -1).T, blocks.layers["w"].components.reshape(3, -1).T
    assert max_principal_angle(a, b) < 1e-9


@pytest.mark.parametrize("center", [False, True])
@pytest.mark.parametrize("rslora", [False, True])
def test_lora_canonical_path_equals_hosvd_of_formed_updates(center, rslora):
    shapes = {"q.weight": (24, 16), "v.weight": (24, 16)}
    loras = random_loras(6, shapes, ranks=[2, 4, 3], rslora=rslora)
    specs = [LayerSpec(n, s) for n, s in shapes.items()]
    options = BuildOptions(modes=(2, 3), rank=RankRule(k=3), center=center)
    low_rank = build_basis(specs, loras, options=options)
    dense_sources = [InMemoryCheckpoint(lora.name, {n: lora.load_rows(n, 0, 10**9) for n in shapes}) for lora in loras]
    dense = build_basis(specs, dense_sources, options=options)
    for name in shapes:
        assert max_principal_angle(low_rank.layers[name].left, dense.layers[name].left) < 1e-6
        assert max_principal_angle(low_rank.layers[name].right, dense.layers[name].right) < 1e-6
        torch.testing.assert_close(
            low_rank.layers[name].spectra[2],
            dense.layers[name].spectra[2][: len(low_rank.layers[name].spectra[2])],
            rtol=1e-8,
            atol=1e-9,
        )
        for lora, d in zip(loras, dense_sources, strict=True):
            c_low = project_layer(low_rank.layers[name], lora.load([name])[name])
            c_dense = project_layer(low_rank.layers[name], d.load([name])[name])
            torch.testing.assert_close(c_low, c_dense, rtol=1e-8, atol=1e-9)


def test_lora_flat_mode_reads_dense_rows():
    shapes = {"q.weight": (10, 6)}
    loras = random_loras(5, shapes)
    dense_sources = [InMemoryCheckpoint(lora.name, {n: lora.load_rows(n, 0, 10**9) for n in shapes}) for lora in loras]
    a = build_basis(
        [LayerSpec("q.weight", (10, 6))], loras, options=BuildOptions(modes=(1,), rank=RankRule(k=2), center=False)
    )
    b = build_basis(
        [LayerSpec("q.weight", (10, 6))],
        dense_sources,
        options=BuildOptions(modes=(1,), rank=RankRule(k=2), center=False),
    )
    torch.testing.assert_close(a.layers["q.weight"].components, b.layers["q.weight"].components)


def test_holdout_sources_are_reported_apart_and_not_used():
    sources = planted_collection(8, {"w": (12, 10)})
    train, held = sources[:6], sources[6:]
    with_holdout = build_basis(
        [LayerSpec("w", (12, 10))], train, holdout=held, options=BuildOptions(rank=RankRule(k=3))
    )
    without = build_basis([LayerSpec("w", (12, 10))], train, options=BuildOptions(rank=RankRule(k=3)))
    assert max_principal_angle(with_holdout.layers["w"].left, without.layers["w"].left) < 1e-12
    fits = with_holdout.report.layers[0].fits
    assert {n for n, f in fits.items() if f.holdout} == {"model-6", "model-7"}
    # Error of a held-out source equals the brute-force residual of its projection.
    basis = with_holdout.layers["w"]
    x = held[0].tensors["w"]
    xc = x - basis.mean
    residual = xc - basis.left @ basis.left.T @ xc @ basis.right @ basis.right.T
    assert fits["model-6"].rel_error == pytest.approx(float(residual.norm() / x.norm()), rel=1e-6)
    assert fits["model-6"].rel_error_centered == pytest.approx(float(residual.norm() / xc.norm()), rel=1e-6)


def test_planted_structure_beats_the_null_baseline():
    sources = planted_collection(10, {"w": (30, 20)}, rank=2, noise=0.01)
    result = build_basis([LayerSpec("w", (30, 20))], sources, options=BuildOptions(rank=RankRule(k=2)))
    mode = result.report.layers[0].mode_reports["2"]
    assert mode.explained_variance > 0.95
    assert mode.null_explained_variance < 0.3
    assert mode.null_method == "sampled"


def test_too_few_sources_and_empty_selection_are_refused():
    sources = planted_collection(2, {"w": (4, 4)})
    with pytest.raises(EngineError, match="at least 2 sources"):
        build_basis([LayerSpec("w", (4, 4))], sources[:1])
    with pytest.raises(EngineError, match="layer selection is empty"):
        build_basis([], sources)


def test_non_finite_values_name_the_source_and_tensor():
    sources = planted_collection(3, {"w": (4, 4)})
    sources[1].tensors["w"][0, 0] = float("nan")
    with pytest.raises(NonFiniteError, match="model-1: tensor w holds NaN or Inf"):
        build_basis([LayerSpec("w", (4, 4))], sources)


@pytest.mark.parametrize("solver", ["exact", "randomized"])
def test_float32_keeps_small_fine_tune_deltas_when_centring(solver):
    # Fine-tunes that differ from their base by 1e-4 of its size: centred sums about zero
    # would cancel the deltas away in float32; the build sums about one source instead.
    from unisub_hub.io.memory import InMemoryCheckpoint

    gen = torch.Generator().manual_seed(0)
    p, q = 256, 192
    base = torch.randn(p, q, generator=gen, dtype=torch.float64)
    shared_left, shared_right = (
        torch.randn(p, 3, generator=gen, dtype=torch.float64),
        torch.randn(3, q, generator=gen, dtype=torch.float64),
    )
    sources = [
        InMemoryCheckpoint(
            f"m{m}",
            {
                "w": base
                + 1e-4
                * (
                    shared_left @ torch.randn(3, 3, generator=gen, dtype=torch.float64) @ shared_right / 10
                    + 0.05 * torch.randn(p, q, generator=gen, dtype=torch.float64)
                )
            },
        )
        for m in range(8)
    ]
    spec = [LayerSpec("w", (p, q))]
    reference = build_basis(spec, sources, options=BuildOptions(rank=RankRule(k=3), center=True, solver="exact"))
    single = build_basis(
        spec,
        sources,
        options=BuildOptions(
            rank=RankRule(k=3), center=True, solver=solver, power_iterations=3, accumulate_dtype=torch.float32
        ),
    )
    for side in ("left", "right"):
        assert (
            max_principal_angle(getattr(single.layers["w"], side).double(), getattr(reference.layers["w"], side)) < 1e-4
        )
    torch.testing.assert_close(single.layers["w"].mean.double(), reference.layers["w"].mean, rtol=0, atol=1e-5)
    assert single.report.layers[0].fit == pytest.approx(reference.report.layers[0].fit, rel=1e-4)
    assert single.report.layers[0].mode_reports["2"].explained_variance == pytest.approx(
        reference.report.layers[0].mode_reports["2"].explained_variance, rel=1e-4
    )


def test_float32_flat_pca_keeps_small_fine_tune_deltas_when_centring():
    # Mode 1's N x N Gram of whole layers: about zero it holds ||W||^2 in every entry and the
    # 1e-4 deltas vanish in float32; the centred Gram does not depend on a common shift.
    from unisub_hub.io.memory import InMemoryCheckpoint

    gen = torch.Generator().manual_seed(0)
    base = torch.randn(64, 48, generator=gen, dtype=torch.float64)
    directions = torch.randn(3, 64, 48, generator=gen, dtype=torch.float64)
    sources = [
        InMemoryCheckpoint(
            f"m{m}",
            {
                "w": base
                + 1e-4
                * (
                    torch.einsum(
                        "k,kpq->pq",
                        torch.randn(3, generator=gen, dtype=torch.float64)
                        * torch.tensor([4.0, 2.0, 1.0], dtype=torch.float64),
                        directions,
                    )
                    + 0.01 * torch.randn(64, 48, generator=gen, dtype=torch.float64)
                )
            },
        )
        for m in range(8)
    ]
    spec = [LayerSpec("w", (64, 48))]
    options = BuildOptions(modes=(1,), rank=RankRule(k=3), center=True)
    reference = build_basis(spec, sources, options=options).layers["w"]
    single = build_basis(
        spec, sources, options=BuildOptions(modes=(1,), rank=RankRule(k=3), center=True, accumulate_dtype=torch.float32)
    ).layers["w"]
    torch.testing.assert_close(single.spectra[1][:3].double(), reference.spectra[1][:3], rtol=1e-3, atol=0)
    found, expected = single.components.reshape(3, -1).double(), reference.components.reshape(3, -1)
    assert max_principal_angle(found.T / found.norm(dim=1), expected.T / expected.norm(dim=1)) < 1e-3


def test_sources_with_the_same_name_are_refused_not_mixed_up():
    from unisub_hub.io.memory import InMemoryLora

    one, two, three = random_loras(3, {"q.weight": (12, 10)})
    twin = InMemoryLora(one.name, two.factors)  # another adapter under the same display name
    with pytest.raises(EngineError, match="two sources are named 'lora-0'"):
        build_basis(
            [LayerSpec("q.weight", (12, 10))],
            [one, twin, three],
            options=BuildOptions(rank=RankRule(k=2), center=False),
        )
    with pytest.raises(EngineError, match="two sources are named 'lora-0'"):
        build_basis(
            [LayerSpec("q.weight", (12, 10))],
            [one, three],
            holdout=[twin],
            options=BuildOptions(rank=RankRule(k=2), center=False),
        )


def test_float32_sums_keep_float64_quality_numbers():
    """A LoRA build in float32 (the default for adapters) finds the float64 subspace, and its
    residuals come from float64 products: a member inside the basis reports an error near
    zero, where a float32 difference of squared norms would report rounding noise (~3e-4)."""
    from unisub_hub.io.memory import InMemoryLora
    from unisub_hub.pipeline.build import accumulate_precision

    gen = torch.Generator().manual_seed(11)
    p, q, k = 1100, 1050, 4  # sides >= 1024: the randomized solver, the one float32 speeds up
    left, right = (
        torch.linalg.qr(torch.randn(p, k, generator=gen, dtype=torch.float64))[0],
        torch.linalg.qr(torch.randn(q, k, generator=gen, dtype=torch.float64))[0],
    )
    members = [
        InMemoryLora(
            f"m{i}",
            {
                "w": (
                    left @ torch.randn(k, 4, generator=gen, dtype=torch.float64),
                    torch.randn(4, k, generator=gen, dtype=torch.float64) @ right.T,
                    2.0,
                )
            },
        )
        for i in range(6)
    ]
    built = {}
    for dtype in (torch.float32, torch.float64):
        options = BuildOptions(rank=RankRule(k=k), center=False, accumulate_dtype=dtype, null_baseline=False)
        built[dtype] = build_basis([LayerSpec("w", (p, q))], members, options=options)
    low, high = built[torch.float32].layers["w"], built[torch.float64].layers["w"]
    assert low.left.dtype == torch.float32
    assert (
        max_principal_angle(low.left.double(), high.left) < 1e-3
        and max_principal_angle(low.right.double(), high.right) < 1e-3
    )
    errors = [fit.rel_error for fit in built[torch.float32].report.layers[0].fits.values()]
    assert max(errors) < 1e-5, errors
    assert (
        accumulate_precision("auto", "lora") is torch.float32
        and accumulate_precision("auto", "checkpoint") is torch.float64
    )
    with pytest.raises(EngineError, match="precision 'float16'"):
        accumulate_precision("float16", "lora")
