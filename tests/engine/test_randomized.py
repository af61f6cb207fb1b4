"""The randomized top-k solver against the exact one."""

from __future__ import annotations

import pytest
import torch
from conftest import max_principal_angle, planted_collection, random_loras

from unisub_hub.engine import BuildOptions, LayerSpec, RankRule, build_basis


@pytest.mark.parametrize("center", [False, True])
def test_randomized_matches_exact_on_planted_checkpoints(center):
    shapes = {"w": (120, 90)}
    sources = planted_collection(12, shapes, rank=3, noise=0.01)
    spec = [LayerSpec("w", (120, 90))]
    exact = build_basis(spec, sources, options=BuildOptions(rank=RankRule(k=3), center=center, solver="exact"))
    default = build_basis(spec, sources, options=BuildOptions(rank=RankRule(k=3), center=center, solver="randomized"))
    assert default.report.passes == 2 + 1  # 1 + power_iterations sketch folds, then the quality pass
    assert max_principal_angle(default.layers["w"].left, exact.layers["w"].left) < 1e-3
    fast = build_basis(
        spec, sources, options=BuildOptions(rank=RankRule(k=3), center=center, solver="randomized", power_iterations=3)
    )
    for side in ("left", "right"):
        assert max_principal_angle(getattr(fast.layers["w"], side), getattr(exact.layers["w"], side)) < 1e-5
    a, b = exact.report.layers[0], fast.report.layers[0]
    for mode in ("2", "3"):
        assert b.mode_reports[mode].explained_variance == pytest.approx(
            a.mode_reports[mode].explained_variance, rel=1e-6
        )
    assert b.fit == pytest.approx(a.fit, rel=1e-6)


def test_randomized_on_lora_factors():
    shapes = {"q": (200, 160)}
    loras = random_loras(20, shapes, ranks=[4, 6])
    spec = [LayerSpec("q", (200, 160))]
    exact = build_basis(spec, loras, options=BuildOptions(rank=RankRule(k=4), center=False, solver="exact"))
    fast = build_basis(
        spec, loras, options=BuildOptions(rank=RankRule(k=4), center=False, solver="randomized", power_iterations=3)
    )
    assert max_principal_angle(fast.layers["q"].left, exact.layers["q"].left) < 1e-4
    torch.testing.assert_close(fast.layers["q"].spectra[2][:4], exact.layers["q"].spectra[2][:4], rtol=1e-6, atol=1e-8)


def test_auto_picks_exact_for_small_layers_and_variance_targets():
    sources = planted_collection(4, {"w": (20, 20)})
    result = build_basis([LayerSpec("w", (20, 20))], sources, options=BuildOptions(rank=RankRule(variance=0.9)))
    assert result.layers["w"].variance_totals == {}


def test_mixed_ranks_within_a_source_give_the_exact_answer():
    """Layers of one shape but different ranks per source: stacks that are not contiguous slices."""
    from unisub_hub.io.memory import InMemoryLora

    gen = torch.Generator().manual_seed(3)
    shared = torch.randn(64, 3, generator=gen, dtype=torch.float64)
    sources = []
    for m in range(8):
        ranks = {"a": 4, "b": 4 + 2 * (m % 2), "c": 4}  # odd sources: b has its own rank, a and c stack apart from it
        factors = {
            name: (
                shared @ torch.randn(3, r, generator=gen, dtype=torch.float64)
                + 0.05 * torch.randn(64, r, generator=gen, dtype=torch.float64),
                torch.randn(r, 48, generator=gen, dtype=torch.float64),
                1.5,
            )
            for name, r in ranks.items()
        }
        sources.append(InMemoryLora(f"lora-{m}", factors))
    specs = [LayerSpec(name, (64, 48)) for name in "abc"]
    exact = build_basis(specs, sources, options=BuildOptions(rank=RankRule(k=3), center=False, solver="exact"))
    fast = build_basis(
        specs, sources, options=BuildOptions(rank=RankRule(k=3), center=False, solver="randomized", power_iterations=3)
    )
    for name in "abc":  # B shares a column space (a wide gap on the left); A is random (a narrow one on the right)
        assert max_principal_angle(fast.layers[name].left, exact.layers[name].left) < 1e-8
        assert max_principal_angle(fast.layers[name].right, exact.layers[name].right) < 1e-3
    for a, b in zip(exact.report.layers, fast.report.layers, strict=True):
        assert b.fit == pytest.approx(a.fit, rel=1e-6)
        assert b.mode_reports["2"].explained_variance == pytest.approx(a.mode_reports["2"].explained_variance, rel=1e-9)


@pytest.mark.parametrize("power_iterations", [0, 1])
def test_ritz_values_never_exceed_the_exact_spectrum(power_iterations):
    # Rayleigh-Ritz values on an orthonormal basis interlace the true ones; with no power
    # iteration the first pass is the last, so its test matrices must already be orthonormal.
    sources = planted_collection(10, {"w": (120, 90)}, rank=3, noise=0.3)
    spec = [LayerSpec("w", (120, 90))]
    exact = build_basis(spec, sources, options=BuildOptions(rank=RankRule(k=3), center=False, solver="exact"))
    fast = build_basis(
        spec,
        sources,
        options=BuildOptions(rank=RankRule(k=3), center=False, solver="randomized", power_iterations=power_iterations),
    )
    for mode in (2, 3):
        found, true = (
            fast.layers["w"].spectra[mode],
            exact.layers["w"].spectra[mode][: fast.layers["w"].spectra[mode].numel()],
        )
        assert bool((found <= true * (1 + 1e-9)).all())
        assert 0 < fast.report.layers[0].mode_reports[str(mode)].explained_variance <= 1


def test_float32_sums_find_the_planted_subspace_as_float64_does():
    """The default for LoRA adapters (float32 sums) lands within a few 1e-6 rad of the exact
    subspace of a planted collection with noise, as float64 does (measured through the sine:
    an arccos of float32 singular values would report the bases' rounding, ~1e-3, as an angle)."""
    from unisub_hub.io.memory import InMemoryLora

    gen = torch.Generator().manual_seed(21)
    p = q = 1024
    shared_left, shared_right = (
        torch.linalg.qr(torch.randn(n, 16, generator=gen, dtype=torch.float64))[0] for n in (p, q)
    )
    members = []
    for m in range(48):
        lora_b = shared_left @ torch.randn(16, 16, generator=gen, dtype=torch.float64) + 0.3 / p**0.5 * torch.randn(
            p, 16, generator=gen, dtype=torch.float64
        )
        lora_a = torch.randn(16, 16, generator=gen, dtype=torch.float64) @ shared_right.T + 0.3 / q**0.5 * torch.randn(
            16, q, generator=gen, dtype=torch.float64
        )
        members.append(InMemoryLora(f"m{m}", {"w": (lora_b.float(), lora_a.float(), 2.0)}))
    gram = sum((f := m.factors["w"])[0].double() @ (f[1].double() @ f[1].double().T) @ f[0].double().T for m in members)
    exact = torch.linalg.eigh(gram)[1][:, -16:]
    options = BuildOptions(
        rank=RankRule(k=16), center=False, accumulate_dtype=torch.float32, null_baseline=False, solver="randomized"
    )
    found = build_basis([LayerSpec("w", (p, q))], members, options=options).layers["w"].left.double()
    assert max_principal_angle(found, exact) < 1e-5
