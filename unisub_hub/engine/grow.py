"""Growing a basis: new members folded into stored sums, without reading the old ones.

A basis built with ``keep_state`` keeps, per layer and side, what the side's eigenproblem
needs, centred about the layer's stored mean ``M`` (LoRA layers: about zero):

- where the side is at most ``max_gram_side`` wide, the centred Gram
  ``G = sum_m D_m D_m^T`` with ``D_m = X_m - M`` (``X_m^T - M^T`` for mode 3);
- where it is wider, a streaming sketch ``Y = G Omega`` with a stored orthonormal test
  matrix ``Omega`` (``d x l``), from which the top eigenpairs come back by the Nystrom
  approximation of Tropp, Yurtsever, Udell and Cevher, *Fixed-rank approximation of a
  positive-semidefinite matrix from streaming data* (NeurIPS 2017), Algorithm 3;

plus the member count and the total variance ``sum_m ||D_m||^2``.

New members are summed about the *old* mean, ``S = sum_j D_j`` and ``sum_j D_j D_j^T``; with
``T`` members in all, the new mean is ``M' = M + S / T`` and the parallel-axis theorem gives
the Gram about it: ``G' = G + sum_j D_j D_j^T - S S^T / T`` (old members sum to zero about
``M``). The sketch follows the same algebra, times ``Omega``. A Gram side gives exactly the
basis a rebuild would; a sketch side gives the top of the spectrum the sketch captured.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from ..errors import EngineError
from .basis import LayerBasis
from .executor import Executor, SerialExecutor
from .rank import RankRule, numerical_rank
from .reader import SourceReader
from .spec import LayerSpec, MatrixSource, Progress, SilentProgress

__all__ = ["DEFAULT_MAX_GRAM_SIDE", "LayerState", "SideState", "grow_layers", "layer_states", "sketch_width"]

DEFAULT_MAX_GRAM_SIDE = 4096
"""Sides up to this width keep their Gram (4096^2 float64 is 128 MiB); wider ones a sketch."""


@dataclass
class SideState:
    """One side's sums about the layer's mean: a Gram (``test`` is None) or a sketch ``G Omega``."""

    sums: torch.Tensor
    test: torch.Tensor | None = None

    @property
    def kind(self) -> str:
        return "gram" if self.test is None else "sketch"


@dataclass
class LayerState:
    """What a layer's basis needs to take new members: their count, total variance and side sums."""

    count: int
    total: float
    """``sum_m ||X_m - M||_F^2``: the variance every side's spectrum is a share of."""
    sides: dict[int, SideState] = field(default_factory=dict)


def _test_matrix(dim: int, width: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.linalg.qr(torch.randn(dim, width, generator=generator, dtype=torch.float64))[0]


def sketch_width(k: int, dim: int) -> int:
    """Columns of a sketch: generous, since it must hold the top ``k`` of every later update too."""
    return min(dim, 4 * k + 32)


@dataclass
class _Sums:
    count: int = 0
    total: float = 0.0
    offset: torch.Tensor | None = None
    """``S = sum_j D_j`` (centred layers)."""
    sides: dict[int, torch.Tensor] = field(default_factory=dict)

    def merge(self, other: _Sums) -> _Sums:
        self.count += other.count
        self.total += other.total
        if self.offset is not None and other.offset is not None:
            self.offset += other.offset
        for mode, value in other.sides.items():
            self.sides[mode] += value
        return self


def _fold(
    specs: Sequence[LayerSpec],
    sources: Sequence[MatrixSource],
    means: dict[str, torch.Tensor | None],
    tests: dict[str, dict[int, torch.Tensor | None]],
    reader: SourceReader,
    executor: Executor,
) -> dict[str, _Sums]:
    """One pass: per layer, the sums of ``D_j = X_j - M`` over ``sources`` that a state needs."""
    names = [spec.name for spec in specs]
    shift = {name: mean for name, mean in means.items() if mean is not None}

    def zero() -> dict[str, _Sums]:
        out = {}
        for spec in specs:
            p, q = spec.shape
            sums = _Sums(offset=torch.zeros(p, q, dtype=torch.float64) if means.get(spec.name) is not None else None)
            for mode, test in tests[spec.name].items():
                dim = p if mode == 2 else q
                sums.sides[mode] = (
                    torch.zeros(dim, dim, dtype=torch.float64) if test is None else torch.zeros_like(test)
                )
            out[spec.name] = sums
        return out

    def step(acc: dict[str, _Sums], source: MatrixSource) -> dict[str, _Sums]:
        loaded = reader.read(source, names, check=True, shift=shift)
        matrices = dict(loaded.single)
        for stack in loaded.stacks:
            matrices.update((name, stack.matrix(i)) for i, name in enumerate(stack.names))
        for name, matrix in matrices.items():
            sums = acc[name]
            sums.count += 1
            sums.total += float(matrix.sq_norm())
            if sums.offset is not None:
                sums.offset += matrix.dense().double()
            for mode, test in tests[name].items():
                if test is None:
                    factor = (matrix.left_factor() if mode == 2 else matrix.right_factor()).double()
                    sums.sides[mode].addmm_(factor, factor.T)
                else:
                    sums.sides[mode] += (
                        matrix.left_apply(test.to(reader.dtype))
                        if mode == 2
                        else matrix.right_apply(test.to(reader.dtype))
                    ).double()
        return acc

    def merge(a: dict[str, _Sums], b: dict[str, _Sums]) -> dict[str, _Sums]:
        for name in a:
            a[name].merge(b[name])
        return a

    return executor.aggregate(sources, zero, step, merge)


def layer_states(
    bases: dict[str, LayerBasis],
    specs: Sequence[LayerSpec],
    sources: Sequence[MatrixSource],
    *,
    k: int,
    reader: SourceReader,
    max_gram_side: int = DEFAULT_MAX_GRAM_SIDE,
    seed: int = 0,
    executor: Executor = SerialExecutor(),
    progress: Progress | None = None,
) -> dict[str, LayerState]:
    """The states of a built basis: one more pass over its training sources, about its stored means."""
    tests = {
        spec.name: {
            mode: (
                None
                if (spec.shape[0] if mode == 2 else spec.shape[1]) <= max_gram_side
                else _test_matrix(
                    spec.shape[0] if mode == 2 else spec.shape[1],
                    sketch_width(k, spec.shape[0] if mode == 2 else spec.shape[1]),
                    seed + number,
                )
            )
            for mode in bases[spec.name].modes
        }
        for number, spec in enumerate(specs)
    }
    means = {spec.name: _double(bases[spec.name].mean) for spec in specs}
    progress = progress or SilentProgress()
    sums = _fold(
        specs, sources, means, tests, reader, executor.with_progress(progress.task("state pass", len(sources)))
    )
    # The members sum to zero about their mean; the stored (float32) mean differs from it by
    # round-off, whose N d d^T the state leaves out (relative size ~1e-8 for fine-tune deltas
    # a thousandth of the weights: why a state needs a float32 basis, not bf16).
    return {
        spec.name: LayerState(
            count=sums[spec.name].count,
            total=sums[spec.name].total,
            sides={mode: SideState(value, tests[spec.name][mode]) for mode, value in sums[spec.name].sides.items()},
        )
        for spec in specs
    }


def _absorb(state: LayerState, new: _Sums, mean: torch.Tensor | None) -> torch.Tensor | None:
    """Fold ``new`` (sums about the old mean) into ``state``; returns the new mean (or None)."""
    total_count = state.count + new.count
    shift = None if new.offset is None else new.offset / total_count  # M' - M
    state.total += new.total - (0.0 if shift is None else total_count * float(shift.square().sum()))
    for mode, side in state.sides.items():
        correction = None
        if new.offset is not None:
            offset = new.offset if mode == 2 else new.offset.T
            correction = (
                offset @ (offset.T if side.test is None else offset.T @ side.test) / total_count
            )  # S S^T / T (times Omega)
        side.sums = side.sums + new.sides[mode] - (0 if correction is None else correction)
    state.count = total_count
    return None if mean is None or shift is None else mean + shift


def grow_layers(
    bases: dict[str, LayerBasis],
    states: dict[str, LayerState],
    specs: Sequence[LayerSpec],
    sources: Sequence[MatrixSource],
    *,
    rank: RankRule,
    reader: SourceReader,
    executor: Executor = SerialExecutor(),
    progress: Progress | None = None,
) -> dict[str, LayerBasis]:
    """Fold ``sources`` into each layer's state (in place) and solve the grown bases; old members are not read."""
    means = {spec.name: _double(bases[spec.name].mean) for spec in specs}
    tests = {spec.name: {mode: side.test for mode, side in states[spec.name].sides.items()} for spec in specs}
    progress = progress or SilentProgress()
    sums = _fold(
        specs, sources, means, tests, reader, executor.with_progress(progress.task("new members", len(sources)))
    )
    grown = {}
    for spec in specs:
        state = states[spec.name]
        mean = _absorb(state, sums[spec.name], means[spec.name])
        basis = LayerBasis(spec.name, spec.tensor_shape, bases[spec.name].modes, mean=mean)
        for mode, side in state.sides.items():
            values, vectors = _eigen(side, spec.name)
            limit = numerical_rank(values)
            k = rank.choose(values, limit) if side.test is None else min(rank.k or limit, limit)
            if mode == 2:
                basis.left = vectors[:, :k].contiguous()
            else:
                basis.right = vectors[:, :k].contiguous()
            basis.spectra[mode] = values[:limit].sqrt()
            basis.variance_totals[mode] = state.total
        grown[spec.name] = basis
    return grown


def _double(tensor: torch.Tensor | None) -> torch.Tensor | None:
    return None if tensor is None else tensor.double()


def _eigen(side: SideState, layer: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Descending eigenpairs of a Gram, or the Nystrom approximation's from a sketch."""
    try:
        if side.test is None:
            values, vectors = torch.linalg.eigh((side.sums + side.sums.T) / 2)
            return values.flip(0).clamp_min(0), vectors.flip(1)
        sketch, test = side.sums, side.test
        nu = sketch.shape[0] ** 0.5 * torch.finfo(torch.float64).eps * float(torch.linalg.matrix_norm(sketch, ord=2))
        shifted = sketch + nu * test
        core = test.T @ shifted
        lower = torch.linalg.cholesky((core + core.T) / 2)
        factor = torch.linalg.solve_triangular(lower, shifted.T, upper=False).T  # shifted @ lower^-T
        vectors, singular, _ = torch.linalg.svd(factor, full_matrices=False)
        return (singular.square() - nu).clamp_min(0), vectors
    except torch.linalg.LinAlgError as error:
        raise EngineError(
            f"layer {layer}: the grown eigenproblem failed ({str(error).split(':')[-1].strip()})"
        ) from None
