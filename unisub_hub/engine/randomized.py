"""Top-``k`` factors by randomized subspace iteration on streamed Gram products.

For wide layers (``d`` in the thousands) a dense ``d x d`` Gram and its ``eigh`` cost
``O(d^3)`` per layer side, about 10 s at ``d = 4096`` on two cores. When only the top ``k``
directions are wanted, ``G Omega`` for a thin ``d x l`` matrix ``Omega`` (``l = k + oversample``)
is a sum over sources of ``X_m X_m^T Omega``: cheap for LoRA factors and never needing
``G`` itself. Each pass over the sources multiplies by ``G`` once; after ``1 + power_iterations``
passes the leading left singular vectors of the last product span the top-``k`` eigenspace
to high accuracy whenever the spectrum has a gap (Halko, Martinsson and Tropp 2011).
Centring is exact: ``G_c Omega = G Omega - N M (M^T Omega)`` with the mean from the first pass.

Layers of one shape are sketched together: their test matrices and sums are stacked
``(n, d, l)`` tensors, so a source's stack of same-shaped LoRA updates adds into them with
one batched GEMM per side, and the QR and SVD between passes are batched too.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING

import torch

from .basis import LayerBasis
from .executor import Executor
from .rank import RankRule, numerical_rank
from .reader import Loaded, SourceReader
from .stack import FactoredStack

if TYPE_CHECKING:
    from .spec import LayerSpec, MatrixSource

__all__ = ["sketch_layers"]


@dataclass(eq=False)
class _ShapeClass:
    """The layers of one ``p x q`` shape in a group, with their stacked test matrices per side."""

    names: list[str]
    shape: tuple[int, int]
    tests: dict[int, torch.Tensor]
    """Per mode (2: ``(n, p, l)``, 3: ``(n, q, l)``), the current test matrices."""

    def __post_init__(self) -> None:
        self.index = {name: i for i, name in enumerate(self.names)}

    @property
    def key(self) -> tuple[str, ...]:
        """What the folds key their sums by: the layer names, which survive the trip to a worker
        and back (the object itself does not: a fold sent back holds copies)."""
        return tuple(self.names)

    def rows(self, names: Sequence[str]) -> slice | torch.Tensor:
        """Where ``names`` sit in the stacks: a slice when contiguous (the usual case), else indices."""
        positions = [self.index[n] for n in names]
        if positions == list(range(positions[0], positions[0] + len(positions))):
            return slice(positions[0], positions[0] + len(positions))
        return torch.tensor(positions, device=next(iter(self.tests.values())).device)


class _SketchFold:
    """One pass's sums for a group: ``sum_m G_m Omega`` per side, and the first pass's sums.

    The first pass also sums the squared norms (for the variance total) and, when centring,
    the dense matrices (for the mean).
    """

    def __init__(self, classes: list[_ShapeClass], *, first_pass: bool, center: bool) -> None:
        self.first_pass = first_pass
        self.class_of = {name: c for c in classes for name in c.names}
        self.sums = {c.key: {mode: torch.zeros_like(t) for mode, t in c.tests.items()} for c in classes}
        some = classes[0].tests[next(iter(classes[0].tests))]
        self.sq_norms = (
            {c.key: torch.zeros(len(c.names), dtype=some.dtype, device=some.device) for c in classes}
            if first_pass
            else {}
        )
        self.totals = (
            {n: torch.zeros(c.shape, dtype=some.dtype, device=some.device) for c in classes for n in c.names}
            if (first_pass and center)
            else {}
        )
        self.count = 0

    def add(self, loaded: Loaded) -> None:
        for stack in loaded.stacks:
            self._add_stack(stack)
        for name, matrix in loaded.single.items():
            shape_class = self.class_of[name]
            i = shape_class.index[name]
            sums = self.sums[shape_class.key]
            for mode, tests in shape_class.tests.items():
                sums[mode][i] += matrix.left_apply(tests[i]) if mode == 2 else matrix.right_apply(tests[i])
            if self.first_pass:
                self.sq_norms[shape_class.key][i] += matrix.sq_norm()
                if name in self.totals:
                    self.totals[name] += matrix.dense()
        self.count += 1

    def _add_stack(self, stack: FactoredStack) -> None:
        shape_class = self.class_of[stack.names[0]]
        rows = shape_class.rows(stack.names)
        sums = self.sums[shape_class.key]
        for mode, tests in shape_class.tests.items():
            apply = stack.add_left_apply if mode == 2 else stack.add_right_apply
            if isinstance(rows, slice):
                apply(sums[mode][rows], tests[rows])
            else:
                product = torch.zeros_like(tests[rows])
                apply(product, tests[rows])
                sums[mode].index_add_(0, rows, product)
        if self.first_pass:
            norms = self.sq_norms[shape_class.key]
            if isinstance(rows, slice):
                norms[rows] += stack.sq_norms()
            else:
                norms.index_add_(0, rows, stack.sq_norms())
            for index, name in enumerate(stack.names):
                if name in self.totals:
                    self.totals[name] += stack.matrix(index).dense()

    def merge(self, other: _SketchFold) -> _SketchFold:
        self.count += other.count
        for key, sums in self.sums.items():
            for mode, value in sums.items():
                value += other.sums[key][mode]
        for key, value in self.sq_norms.items():
            value += other.sq_norms[key]
        for name, value in self.totals.items():
            value += other.totals[name]
        return self


def sketch_layers(
    layers: Sequence[LayerSpec],
    sources: Sequence[MatrixSource],
    reader: SourceReader,
    shift: dict[str, torch.Tensor],
    run: Callable[[str], Executor],
    *,
    modes: tuple[int, ...],
    rank: RankRule,
    center: bool,
    oversample: int,
    power_iterations: int,
    seed: int,
) -> dict[str, LayerBasis]:
    """Top-``k`` factors of a group of layers: ``1 + power_iterations`` folds over the sources.

    Args:
        layers: the group's layers.
        sources: the :class:`~unisub_hub.engine.spec.MatrixSource` collection.
        reader: reads (and caches) the sources' layers.
        shift: per dense layer of a centred build, the point the sums are taken about (see
            :meth:`SourceReader.cast`); the means returned are relative to it.
        run: gives the executor for one pass, from the pass's description.
    """
    names = [spec.name for spec in layers]
    generator = torch.Generator().manual_seed(seed)
    draws: dict[str, dict[int, torch.Tensor]] = {}
    for spec in layers:  # per layer, left then right: the draws do not depend on the grouping
        p, q = spec.shape
        draws[spec.name] = {
            mode: torch.randn(dim, min(dim, rank.k + oversample), generator=generator, dtype=torch.float64)  # type: ignore[operator]
            for mode, dim in ((2, p), (3, q))
            if mode in modes
        }
    by_shape: dict[tuple[int, int], list[str]] = {}
    for spec in layers:
        by_shape.setdefault(spec.shape, []).append(spec.name)
    # Orthonormal test matrices (same span as the Gaussian draws): the last pass's Rayleigh-Ritz
    # values need an orthonormal basis, and with no power iteration the first pass is the last.
    classes = [
        _ShapeClass(
            members,
            shape,
            {
                mode: torch.linalg.qr(torch.stack([draws[n][mode] for n in members]))[0].to(reader.device, reader.dtype)
                for mode in draws[members[0]]
            },
        )
        for shape, members in by_shape.items()
    ]
    rounds = 1 + power_iterations
    first: _SketchFold | None = None
    means: dict[str, torch.Tensor] = {}
    for round_number in range(rounds):
        starting = round_number == 0

        def step(fold: _SketchFold, source: MatrixSource, starting: bool = starting) -> _SketchFold:
            fold.add(reader.read(source, names, check=starting, keep=starting, shift=shift))
            return fold

        fold = run(f"pass {round_number + 1}/{rounds}").aggregate(
            sources, partial(_SketchFold, classes, first_pass=starting, center=center), step, _SketchFold.merge
        )
        if first is None:
            first = fold
            means = {name: total / fold.count for name, total in fold.totals.items()}
        products = {
            c: {mode: _centred(fold.sums[c.key][mode], c, mode, means, fold.count) for mode in c.tests} for c in classes
        }
        if round_number < rounds - 1:
            for shape_class in classes:
                shape_class.tests = {mode: torch.linalg.qr(y)[0] for mode, y in products[shape_class].items()}
    specs = {spec.name: spec for spec in layers}
    assert first is not None  # the first pass ran
    bases: dict[str, LayerBasis] = {}
    for shape_class in classes:
        norms = first.sq_norms[shape_class.key]
        bases.update(_finish(shape_class, products[shape_class], norms, means, first.count, modes, rank, specs))
    return bases


def _centred(
    product: torch.Tensor, shape_class: _ShapeClass, mode: int, means: dict[str, torch.Tensor], count: int
) -> torch.Tensor:
    """``G_c Omega`` from ``G Omega``: subtract ``N M (M^T Omega)`` per layer (``M`` seen from this side)."""
    if not means:
        return product
    product = product.clone()
    tests = shape_class.tests[mode]
    for i, name in enumerate(shape_class.names):
        side_mean = means[name] if mode == 2 else means[name].T
        product[i] -= count * (side_mean @ (side_mean.T @ tests[i]))
    return product


def _finish(
    shape_class: _ShapeClass,
    products: dict[int, torch.Tensor],
    norms: torch.Tensor,
    means: dict[str, torch.Tensor],
    count: int,
    modes: tuple[int, ...],
    rank: RankRule,
    specs: dict[str, LayerSpec],
) -> dict[str, LayerBasis]:
    """Rayleigh-Ritz values and the leading left singular vectors of the last products, batched."""
    solved = {}
    for mode, product in products.items():
        ritz = shape_class.tests[mode].transpose(1, 2) @ product  # values on the previous orthonormal basis
        values = torch.linalg.eigvalsh((ritz + ritz.transpose(1, 2)) / 2).flip(1).clamp_min(0)
        vectors = torch.linalg.svd(product, full_matrices=False)[0]
        solved[mode] = (values, vectors)
    bases = {}
    for i, name in enumerate(shape_class.names):
        mean = means.get(name)
        total = float(norms[i] - (0 if mean is None else count * mean.square().sum()))
        basis = LayerBasis(name, specs[name].tensor_shape, modes, mean=mean)
        for mode, (values, vectors) in solved.items():
            k = rank.choose(values[i], numerical_rank(values[i]))
            if mode == 2:
                basis.left = vectors[i, :, :k].contiguous()
            else:
                basis.right = vectors[i, :, :k].contiguous()
            basis.spectra[mode] = values[i].sqrt()
            basis.variance_totals[mode] = total
        bases[name] = basis
    return bases
