"""The null baseline: spectra of Gaussian matrices with the shapes and norms of the data.

A family is "really low-rank" only if its top-``k`` explained variance beats what ``N``
random matrices of the same shapes and norms give. Small layers are sampled exactly; for
large ones the sampled cost would rival the build, so the Marchenko-Pastur law (equal norms,
the large-matrix limit) stands in, and the report says which was used.
"""

from __future__ import annotations

import itertools
import math

import torch

from .accumulate import SideAccumulator

__all__ = ["SAMPLE_LIMIT", "flat_null_eigenvalues", "low_rank_null_eigenvalues", "marchenko_pastur_curve", "side_null_eigenvalues"]

SAMPLE_LIMIT = 2e9
"""Largest multiply-add count for which the null of a side is sampled rather than approximated."""


def _bartlett(size: int, dof: int, generator: torch.Generator) -> torch.Tensor:
    """A lower-triangular ``T`` with ``T T^T`` distributed as ``Z^T Z`` for a ``dof x size`` Gaussian ``Z``.

    Bartlett's decomposition of the Wishart matrix: ``chi(dof - i)`` on the diagonal, standard
    normals below it. The cost is ``O(size^2)`` however large ``dof`` is.
    """
    chi2 = torch.distributions.Chi2(torch.tensor([float(dof - i) for i in range(size)], dtype=torch.float64).clamp_min(1))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=generator)))
        diagonal = chi2.sample().sqrt()
    return torch.randn(size, size, generator=generator, dtype=torch.float64).tril(-1) + torch.diag(diagonal)


def flat_null_eigenvalues(norms: torch.Tensor, dim: int, *, center: bool, generator: torch.Generator) -> torch.Tensor:
    """Eigenvalues of the ``N x N`` Gram of ``N`` Gaussian vectors in ``dim`` dimensions with given norms.

    Uses Bartlett's decomposition of the Wishart matrix, so the cost is ``O(N^3)`` however
    large ``dim`` is, and the sample is exact.
    """
    count = norms.shape[0]
    lower = _bartlett(count, dim, generator)
    gram = lower @ lower.T / dim
    scale = norms.double() / gram.diagonal().sqrt()
    gram = gram * scale[:, None] * scale[None, :]
    if center:
        centering = torch.eye(count, dtype=torch.float64) - 1.0 / count
        gram = centering @ gram @ centering
    return torch.linalg.eigvalsh(gram).flip(0).clamp_min(0)


def low_rank_null_eigenvalues(dim: int, other: int, norms: torch.Tensor, ranks: list[int], *, generator: torch.Generator) -> torch.Tensor:
    """Nonzero eigenvalues of ``sum_m G_m G_m^T`` for random rank-``r_m`` ``G_m = B_m A_m`` scaled to ``norms``.

    ``G_m G_m^T = (B_m T_m)(B_m T_m)^T`` where ``T_m T_m^T = A_m A_m^T``; stacking ``F = [B_m
    T_m]`` (``dim x R``, ``R = sum r_m``), the nonzero eigenvalues are those of ``F^T F = C^T
    (B^T B) C`` with ``C`` block-diagonal of the ``T_m``. Both ``B^T B`` (``R x R``, ``dim``
    degrees of freedom) and each ``T_m`` (``other`` degrees) are Wishart factors drawn by
    Bartlett's decomposition, so the sample has exactly the law of sampling the ``dim x
    other`` updates, at ``O(R^3)`` cost whatever ``dim`` and ``other`` are (the sampled
    ``dim x dim`` problem cost more than the build itself at d=1024).
    """
    total = sum(ranks)
    # A random sample needs no float64: float32 products and eigenvalues are about 2x faster,
    # and the shares they give are exact to 1e-6, far below the sample's own spread (~1e-2).
    lower = _bartlett(total, dim, generator).float()
    wishart = lower @ lower.T  # B^T B for the stacked Gaussian B
    blocks = torch.block_diag(*(_bartlett(rank, other, generator) for rank in ranks)).float()
    gram = (blocks.T @ wishart @ blocks).double()  # F^T F before the norms
    starts = [0, *itertools.accumulate(ranks)]
    scale = torch.cat([
        torch.full((rank,), float(norm) / math.sqrt(float(gram[a:b, a:b].diagonal().sum())), dtype=torch.float64)
        for norm, rank, a, b in zip(norms.tolist(), ranks, starts[:-1], starts[1:], strict=True)
    ])
    gram = (gram * scale[:, None] * scale[None, :]).float()
    return torch.linalg.eigvalsh((gram + gram.T) / 2).double().flip(0).clamp_min(0)


def side_null_eigenvalues(
    shape: tuple[int, int], side: int, norms: torch.Tensor, *, generator: torch.Generator, ranks: list[int] | None = None
) -> tuple[torch.Tensor, str]:
    """Eigenvalues of ``sum_m G_m G_m^T`` (side 2) or ``G_m^T G_m`` (side 3) for Gaussian ``G_m``.

    With ``ranks`` (LoRA collections) each ``G_m`` is a random rank-``r_m`` product ``B A`` of
    Gaussian factors: a collection of rank-8 updates is low-rank whatever it learned, so the
    honest null has the same ranks. Returns the descending eigenvalues and the method:
    ``"sampled"``, ``"sampled-low-rank"`` or ``"marchenko-pastur"`` (then as a smooth curve of
    ``min(dim, N*other)`` values with the same total).
    """
    p, q = shape
    dim, other = (p, q) if side == 2 else (q, p)
    count = norms.shape[0]
    if ranks is not None and sum(ranks) <= dim:
        return low_rank_null_eigenvalues(dim, other, norms, ranks, generator=generator), "sampled-low-rank"
    if ranks is not None and count * max(ranks) * dim * dim <= SAMPLE_LIMIT:  # more update directions than the side has
        acc = SideAccumulator(dim)
        for norm, rank in zip(norms.tolist(), ranks, strict=True):
            left = torch.randn(dim, rank, generator=generator, dtype=torch.float64)
            factor = left @ _bartlett(rank, other, generator)  # (B A)(B A)^T = (B T)(B T)^T
            acc.add(factor * (norm / factor.norm()))
        values, _ = acc.eigen(None, count)
        return values, "sampled-low-rank"
    if ranks is None and count * p * q * min(dim, count * other) <= SAMPLE_LIMIT:
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
    width = (x[:-1] - x[1:])
    density = ((hi - mid) * (mid - lo)).clamp_min(0).sqrt() / (2 * math.pi * ratio * mid)
    mass = torch.cat([x.new_zeros(1), (density * width).cumsum(0)])
    moment = torch.cat([x.new_zeros(1), (mid * density * width).cumsum(0)])
    mass, moment = mass / mass[-1], moment / moment[-1]
    targets = torch.arange(1, small + 1, dtype=torch.float64) / small
    index = torch.searchsorted(mass, targets).clamp(1, grid)
    left_mass, right_mass = mass[index - 1], mass[index]
    weight = ((targets - left_mass) / (right_mass - left_mass).clamp_min(1e-300)).clamp(0, 1)
    return moment[index - 1] + weight * (moment[index] - moment[index - 1])
