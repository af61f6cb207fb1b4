"""The null baseline: spectra of Gaussian matrices with the shapes and norms of the data.

A family is "really low-rank" only if its top-``k`` explained variance beats what ``N``
random matrices of the same shapes and norms give. Small layers are sampled exactly; for
large ones the sampled cost would rival the build, so a smaller problem with the same ratios
is sampled (low-rank updates) or the Marchenko-Pastur law (dense; equal norms, the
large-matrix limit) stands in, and the report says which was used.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from .accumulate import SideAccumulator
from .rank import explained_variance

__all__ = [
    "SAMPLE_LIMIT",
    "SIMULATED_SIZE",
    "flat_null_eigenvalues",
    "low_rank_null_eigenvalues",
    "marchenko_pastur_curve",
    "side_null_eigenvalues",
    "simulated_low_rank_null_eigenvalues",
]

SAMPLE_LIMIT = 2e9
"""Largest multiply-add count for which the null of a dense side is sampled rather than approximated."""

SIMULATED_SIZE = 256
"""Above this many nonzero eigenvalues a low-rank null is simulated at this size and stretched
back: 256 keeps a layer's null under about 10 ms and within 0.01 explained variance of a full sample."""


def _bartlett(size: int, dof: int, generator: torch.Generator, count: int = 1) -> torch.Tensor:
    """``count`` lower-triangular ``T`` (``count x size x size``) with ``T T^T`` distributed as ``Z^T Z``
    for a ``dof x size`` Gaussian ``Z``.

    Bartlett's decomposition of the Wishart matrix: ``chi(dof - i)`` on the diagonal, standard
    normals below it. The cost is ``O(size^2)`` however large ``dof`` is; drawing many at once
    costs one call (a collection's null needs one per member and layer).
    """
    degrees = torch.tensor([float(dof - i) for i in range(size)], dtype=torch.float64).clamp_min(1)
    chi2 = torch.distributions.Chi2(degrees.expand(count, size))
    # torch's gamma sampler takes no generator: seed the CPU stream from ours, inside a fork so
    # the caller's stream is untouched. torch.manual_seed would also queue a CUDA seeding that
    # records a stack trace per call (1.8 s of a 7.5 s build with 1,560 draws).
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=generator)))
        diagonal = chi2.sample().sqrt()
    return torch.randn(count, size, size, generator=generator, dtype=torch.float64).tril(-1) + torch.diag_embed(
        diagonal
    )


def flat_null_eigenvalues(norms: torch.Tensor, dim: int, *, center: bool, generator: torch.Generator) -> torch.Tensor:
    """Eigenvalues of the ``N x N`` Gram of ``N`` Gaussian vectors in ``dim`` dimensions with given norms.

    Uses Bartlett's decomposition of the Wishart matrix, so the cost is ``O(N^3)`` however
    large ``dim`` is, and the sample is exact.
    """
    count = norms.shape[0]
    lower = _bartlett(count, dim, generator)[0]
    gram = lower @ lower.T / dim
    scale = norms.double() / gram.diagonal().sqrt()
    gram = gram * scale[:, None] * scale[None, :]
    if center:
        centering = torch.eye(count, dtype=torch.float64) - 1.0 / count
        gram = centering @ gram @ centering
    return torch.linalg.eigvalsh(gram).flip(0).clamp_min(0)


def low_rank_null_eigenvalues(
    dim: int, other: int, norms: torch.Tensor, ranks: Sequence[int], *, generator: torch.Generator
) -> torch.Tensor:
    """Nonzero eigenvalues of ``sum_m G_m G_m^T`` for random rank-``r_m`` ``G_m = B_m A_m`` scaled to ``norms``.

    ``G_m G_m^T = (B_m T_m)(B_m T_m)^T`` where ``T_m T_m^T = A_m A_m^T`` is a Wishart factor
    drawn by Bartlett's decomposition (``other`` degrees of freedom), so only the ``dim x R``
    factors ``F = [B_m T_m]`` (``R = sum r_m``) are sampled, never a ``dim x other`` update; the
    eigenvalues come from the smaller of ``F^T F`` and ``F F^T``. The sample has exactly the law
    of sampling the updates.
    """
    # A random sample needs no float64: float32 products and eigenvalues are about 2x faster,
    # and the shares they give are exact to 1e-6, far below the sample's own spread (~1e-2).
    # The columns' order does not change the eigenvalues: members are drawn by rank, in batches.
    by_rank: dict[int, list[int]] = {}
    for member, rank in enumerate(ranks):
        by_rank.setdefault(rank, []).append(member)
    blocks = []
    for rank, members in by_rank.items():
        factors = (
            torch.randn(len(members), dim, rank, generator=generator)
            @ _bartlett(rank, other, generator, len(members)).float()
        )
        scale = norms[members].float() / factors.flatten(1).norm(dim=1)
        blocks.append((factors * scale[:, None, None]).transpose(0, 1).reshape(dim, -1))
    stacked = torch.cat(blocks, dim=1)
    gram = stacked.T @ stacked if stacked.shape[1] <= dim else stacked @ stacked.T
    return torch.linalg.eigvalsh(gram).double().flip(0).clamp_min(0)[: min(dim, stacked.shape[1])]


def simulated_low_rank_null_eigenvalues(
    dim: int, other: int, norms: torch.Tensor, ranks: Sequence[int], *, generator: torch.Generator, size: int
) -> torch.Tensor:
    """:func:`low_rank_null_eigenvalues` from a smaller problem with the same ratios, stretched back.

    The spectrum's shape depends on the ratios ``R / dim`` and ``r / other`` (the limit law of
    free probability), not on the sizes themselves. So a fraction ``f`` of the members (chosen
    at evenly spaced quantiles of their norms, with their ranks) on a side of ``f * dim`` is
    sampled, with ``f`` making the smaller of ``R`` and ``dim`` about ``size``; its
    explained-variance curve, read at ``k * f``, stands for the full one at ``k``. Against full
    samples the shares agree within 0.007 up to k=128 at ``size`` 256 (``tests/engine/test_null.py``).
    """
    full = min(sum(ranks), dim)
    fraction = size / full
    count = max(2, round(len(ranks) * fraction))
    order = torch.argsort(norms)
    chosen = order[torch.linspace(0, len(ranks) - 1, count).round().long()]
    sample = low_rank_null_eigenvalues(
        max(1, round(dim * fraction)), other, norms[chosen], [ranks[i] for i in chosen.tolist()], generator=generator
    )
    curve = torch.cat([sample.new_zeros(1), explained_variance(sample)])
    # Entry k of the stretched curve is the sample's curve at k * (its length / full), linearly interpolated.
    position = torch.arange(1, full + 1, dtype=torch.float64) * ((len(curve) - 1) / full)
    below = position.floor().long().clamp(max=len(curve) - 2)
    stretched = curve[below] + (position - below) * (curve[below + 1] - curve[below])
    return torch.diff(stretched, prepend=stretched.new_zeros(1)).clamp_min(0) * float(norms.double().square().sum())


def side_null_eigenvalues(
    shape: tuple[int, int],
    side: int,
    norms: torch.Tensor,
    *,
    generator: torch.Generator,
    ranks: list[int] | None = None,
) -> tuple[torch.Tensor, str]:
    """Eigenvalues of ``sum_m G_m G_m^T`` (side 2) or ``G_m^T G_m`` (side 3) for Gaussian ``G_m``.

    With ``ranks`` (LoRA collections) each ``G_m`` is a random rank-``r_m`` product ``B A`` of
    Gaussian factors: a collection of rank-8 updates is low-rank whatever it learned, so the
    honest null has the same ranks. It is sampled exactly while the smaller of ``R = sum r_m``
    and the side's dimension is at most ``SIMULATED_SIZE``, and from a smaller problem with
    the same ratios above that (:func:`simulated_low_rank_null_eigenvalues`), so its cost does
    not grow with the collection. Returns the descending eigenvalues and the method:
    ``"sampled"``, ``"sampled-low-rank"``, ``"simulated-low-rank"`` or ``"marchenko-pastur"``
    (then as a smooth curve of ``min(dim, N*other)`` values with the same total).
    """
    p, q = shape
    dim, other = (p, q) if side == 2 else (q, p)
    count = norms.shape[0]
    if ranks is not None and min(sum(ranks), dim) <= SIMULATED_SIZE:
        return low_rank_null_eigenvalues(dim, other, norms, ranks, generator=generator), "sampled-low-rank"
    if ranks is not None:
        return simulated_low_rank_null_eigenvalues(
            dim, other, norms, ranks, generator=generator, size=SIMULATED_SIZE
        ), "simulated-low-rank"
    if count * p * q * min(dim, count * other) <= SAMPLE_LIMIT:
        acc = SideAccumulator(dim)
        for norm in norms.tolist():
            sample = torch.randn(dim, other, generator=generator, dtype=torch.float64)
            acc.add(sample * (norm / sample.norm()))
        values, _ = acc.eigen(None, count)
        return values, "sampled"
    total = float(norms.double().square().sum())
    curve = marchenko_pastur_curve(dim, count * other)
    values = torch.diff(curve, prepend=curve.new_zeros(1)) * total
    return values, "marchenko-pastur"


def marchenko_pastur_curve(dim: int, samples: int, grid: int = 20000) -> torch.Tensor:
    """Limiting explained-variance curve of ``Z Z^T`` for a ``dim x samples`` Gaussian ``Z``.

    Entry ``k - 1`` is the expected share of the top ``k`` eigenvalues, for ``k`` up to
    ``min(dim, samples)`` (the nonzero eigenvalues).
    """
    small, large = min(dim, samples), max(dim, samples)
    ratio = small / large
    lo, hi = (1 - math.sqrt(ratio)) ** 2, (1 + math.sqrt(ratio)) ** 2
    # Grid from the top edge down; the density is sqrt((hi - x)(x - lo)) / (2 pi ratio x).
    x = torch.linspace(hi, lo, grid + 1, dtype=torch.float64)
    mid = (x[1:] + x[:-1]) / 2
    width = x[:-1] - x[1:]
    density = ((hi - mid) * (mid - lo)).clamp_min(0).sqrt() / (2 * math.pi * ratio * mid)
    mass = torch.cat([x.new_zeros(1), (density * width).cumsum(0)])
    moment = torch.cat([x.new_zeros(1), (mid * density * width).cumsum(0)])
    mass, moment = mass / mass[-1], moment / moment[-1]
    targets = torch.arange(1, small + 1, dtype=torch.float64) / small
    index = torch.searchsorted(mass, targets).clamp(1, grid)
    left_mass, right_mass = mass[index - 1], mass[index]
    weight = ((targets - left_mass) / (right_mass - left_mass).clamp_min(1e-300)).clamp(0, 1)
    return moment[index - 1] + weight * (moment[index] - moment[index - 1])
