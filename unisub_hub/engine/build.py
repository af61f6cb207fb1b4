"""Building a basis: truncated HOSVD per layer, streamed over sources (docs/engine.md).

A build makes these passes over the collection:

1. per group of layers whose accumulators fit ``max_memory``, one fold over the sources
   summing the mode-2/3 second moments (and the sum for the centre); mode-1 layers instead
   fold over row blocks, each block read from every source, for the ``N x N`` Gram;
2. for mode-1 layers, a second fold over row blocks that forms the component matrices;
3. one quality pass that projects every source (held-out ones too) onto the new basis.

Each source is read through :class:`MatrixSource`, which hands out one group of layers at a
time, so no more than one source's share of one group is in memory at once.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from ..constants import DEFAULT_MAX_MEMORY
from ..errors import EngineError
from .accumulate import LayerAccumulator
from .basis import LayerBasis
from .device import resolve_device
from .executor import Executor, SerialExecutor
from .matrix import Dense, LowRank
from .modes import mode_set
from .project import fit_layer
from .quality import BuildReport, LayerReport, assess_layer
from .randomized import sketch_layers
from .rank import RankRule, numerical_rank
from .reader import SourceReader
from .spec import LayerSpec, MatrixSource, Progress, SilentProgress
from .stack import TuckerBases

__all__ = ["BuildOptions", "BuildResult", "LayerSpec", "MatrixSource", "Progress", "assess_basis", "build_basis"]


@dataclass(frozen=True)
class BuildOptions:
    """How to decompose: modes, rank rule, centring, device, precision and memory budget."""

    modes: tuple[int, ...] = (2, 3)
    rank: RankRule = field(default_factory=lambda: RankRule(k=8))
    center: bool = True
    device: str | torch.device = "cpu"
    accumulate_dtype: torch.dtype = torch.float64
    max_memory: int = DEFAULT_MAX_MEMORY
    null_baseline: bool = True
    seed: int = 0
    check_finite: bool = True
    solver: str = "auto"
    """``exact`` (Gram + ``eigh``), ``randomized`` (subspace iteration, top-k only) or ``auto``:
    randomized for fixed ``k`` on layers whose sides are all >= 1024 and >= 4 (k + oversample)."""
    oversample: int = 16
    power_iterations: int = 1


@dataclass
class BuildResult:
    """The basis of every layer (tensors on the build device, accumulate dtype) and its report."""

    layers: dict[str, LayerBasis]
    report: BuildReport
    constant: list[str] = field(default_factory=list)
    """Layers equal in every training source: no direction to keep, so no basis (callers pass them through)."""


def build_basis(
    layers: Sequence[LayerSpec],
    sources: Sequence[MatrixSource],
    *,
    options: BuildOptions = BuildOptions(),
    holdout: Sequence[MatrixSource] = (),
    executor: Executor = SerialExecutor(),
    progress: Progress | None = None,
) -> BuildResult:
    """Decompose every layer of a collection and measure how well the basis fits.

    Args:
        layers: the layers to decompose (same names and shapes in every source).
        sources: the models the basis is built from (at least two).
        options: see :class:`BuildOptions`.
        holdout: models left out of the basis, only projected for honest error figures.
        executor: runs the folds over sources (:class:`SerialExecutor`: here, one by one).
        progress: receives per-pass progress.

    Returns:
        The per-layer bases and a :class:`BuildReport`.

    Raises:
        EngineError: fewer than two sources, no layers, or a rank the data cannot have.
        NonFiniteError: a source holds NaN or Inf in a selected layer.

    Example:
        >>> result = build_basis(specs, sources, options=BuildOptions(modes=(2, 3), rank=RankRule(k=4)))
        >>> result.layers["fc.weight"].left.shape
        torch.Size([64, 4])
    """
    modes = mode_set(options.modes).modes
    names = [source.name for source in [*sources, *holdout]]
    if len(set(names)) != len(names):
        repeated = next(name for number, name in enumerate(names) if name in names[:number])
        raise EngineError(
            f"two sources are named {repeated!r}: a source's name identifies it (caches, reports, holdout), so names "
            "must differ"
        )
    if len(sources) < 2:
        raise EngineError(f"a basis needs at least 2 sources, got {len(sources)}")
    if not layers:
        raise EngineError("no layers to decompose: the layer selection is empty")
    device = resolve_device(options.device)
    progress = progress or SilentProgress()
    # The cache lives in this process: a distributing executor reads in its workers instead.
    reader = SourceReader(
        device,
        options.accumulate_dtype,
        check_finite=options.check_finite,
        cache_budget=options.max_memory // 2 if executor.in_process else 0,
        source_count=len(sources) + len(holdout),
        reuse_buffers=executor.in_process,
    )
    context = _Context(options, modes, reader, executor, progress)
    bases: dict[str, LayerBasis] = {}
    passes = 0
    groups: list[list[LayerSpec]] = []
    if mode_set(modes).flat:
        groups = [list(layers)]
        for spec in layers:
            bases[spec.name], used = _build_flat(spec, sources, context)
            passes += used
    else:
        if options.solver not in ("auto", "exact", "randomized"):
            raise EngineError(f"unknown solver {options.solver!r}: use auto, exact or randomized")
        dense = _reads_dense(sources[0])
        sketched = [spec for spec in layers if _use_randomized(spec, modes, options)]
        exact = [spec for spec in layers if spec not in sketched]
        groups = _plan_groups(exact, modes, options, dense=dense) if exact else []
        for number, group in enumerate(groups, 1):
            shift = _centre_shift(group, sources[0], context) if dense else {}
            bases.update(
                _shifted_back(_build_sides(group, sources, shift, context, f"pass {number}/{len(groups)}"), shift)
            )
        passes += len(groups)
        sketch_groups = _plan_sketch_groups(sketched, modes, options, dense=dense) if sketched else []
        for number, group in enumerate(sketch_groups, 1):
            shift = _centre_shift(group, sources[0], context) if dense else {}
            bases.update(
                _shifted_back(
                    _build_randomized(group, sources, shift, context, f"sketch group {number}/{len(sketch_groups)}"),
                    shift,
                )
            )
        passes += len(sketch_groups) * (1 + options.power_iterations)
        groups = groups + sketch_groups  # the quality pass reads what the build read, so the cache serves it
    constant = [name for name, basis in bases.items() if 0 in basis.ranks.values()]
    if len(constant) == len(bases):
        raise EngineError("every selected layer is equal in every source: nothing to decompose (all sources equal?)")
    for name in constant:
        del bases[name]
    groups = [[spec for spec in group if spec.name in bases] for group in groups]
    layer_reports, quality_passes = _quality_pass(
        [group for group in groups if group], bases, sources, holdout, context
    )
    report = BuildReport(
        modes=modes,
        centered=options.center,
        device=str(device),
        passes=passes + quality_passes,
        max_memory=options.max_memory,
        sources=[s.name for s in sources],
        holdout=[s.name for s in holdout],
        layers=layer_reports,
    )
    return BuildResult(layers=bases, report=report, constant=constant)


def assess_basis(
    bases: dict[str, LayerBasis],
    layers: Sequence[LayerSpec],
    sources: Sequence[MatrixSource],
    *,
    options: BuildOptions = BuildOptions(),
    holdout: Sequence[MatrixSource] = (),
    progress: Progress | None = None,
    executor: Executor = SerialExecutor(),
) -> BuildReport:
    """The quality report of given bases on ``sources``: each one projected, per-layer errors, the null.

    What a build's last pass does, for bases that did not come from a build over these sources
    (a grown basis, assessed on the members it just took in).
    """
    device = resolve_device(options.device)
    reader = SourceReader(
        device,
        options.accumulate_dtype,
        check_finite=options.check_finite,
        cache_budget=0,
        source_count=len(sources) + len(holdout),
        reuse_buffers=executor.in_process,
    )
    context = _Context(options, mode_set(options.modes).modes, reader, executor, progress or SilentProgress())
    groups = _plan_groups(
        [spec for spec in layers if spec.name in bases], context.modes, options, dense=_reads_dense(sources[0])
    )
    reports, passes = _quality_pass(groups, bases, sources, holdout, context)
    return BuildReport(
        modes=context.modes,
        centered=options.center,
        device=str(device),
        passes=passes,
        max_memory=options.max_memory,
        sources=[s.name for s in sources],
        holdout=[s.name for s in holdout],
        layers=reports,
    )


@dataclass
class _Context:
    options: BuildOptions
    modes: tuple[int, ...]
    reader: SourceReader
    executor: Executor
    progress: Progress

    @property
    def device(self) -> torch.device:
        return self.reader.device

    def executor_for(self, description: str, total: int) -> Executor:
        """The executor with a progress task of ``total`` items (a cluster reports a task's items at once)."""
        return self.executor.with_progress(self.progress.task(description, total))

    def __getstate__(self) -> dict:
        """What a worker receives with a fold's ``step``: the options and the reader, not the
        driver's progress bars or executor (neither can cross a process boundary)."""
        return {**self.__dict__, "executor": SerialExecutor(), "progress": SilentProgress()}


def _plan_groups(
    layers: Sequence[LayerSpec], modes: tuple[int, ...], options: BuildOptions, *, dense: bool
) -> list[list[LayerSpec]]:
    """Greedy groups of layers whose accumulators (and centre shifts) fit the memory budget together."""
    itemsize = torch.empty((), dtype=options.accumulate_dtype).element_size()
    groups: list[list[LayerSpec]] = []
    current: list[LayerSpec] = []
    used = 0
    for spec in layers:
        need = LayerAccumulator.bytes_needed(spec.shape, modes, options.center, itemsize)
        need += itemsize * spec.shape[0] * spec.shape[1] * (options.center and dense)
        if current and used + need > options.max_memory:
            groups.append(current)
            current, used = [], 0
        current.append(spec)
        used += need
    if current:
        groups.append(current)
    return groups


def _build_sides(
    group: list[LayerSpec],
    sources: Sequence[MatrixSource],
    shift: dict[str, torch.Tensor],
    context: _Context,
    description: str,
) -> dict[str, LayerBasis]:
    """One fold over the sources for a group of mode-2/3 layers (dense ones minus ``shift``), then the eigenproblems."""
    opts = context.options
    names = [spec.name for spec in group]

    def zero() -> dict[str, LayerAccumulator]:
        return {
            spec.name: LayerAccumulator.empty(
                spec.shape, context.modes, opts.center, context.device, opts.accumulate_dtype
            )
            for spec in group
        }

    def step(acc: dict[str, LayerAccumulator], source: MatrixSource) -> dict[str, LayerAccumulator]:
        for name, matrix in source.load(names).items():
            acc[name].add(context.reader.cast(matrix, source.name, name, shift=shift))
        return acc

    def merge(a: dict[str, LayerAccumulator], b: dict[str, LayerAccumulator]) -> dict[str, LayerAccumulator]:
        for name in a:
            a[name].merge(b[name])
        return a

    totals = context.executor_for(description, len(sources)).aggregate(sources, zero, step, merge)
    bases = {}
    for spec in group:
        acc = totals.pop(spec.name)
        bases[spec.name] = _finish_sides(spec, acc, context.modes, opts.rank)
    return bases


def _centre_shift(group: Sequence[LayerSpec], source: MatrixSource, context: _Context) -> dict[str, torch.Tensor]:
    """The point a centred build sums a group's dense layers about: one source's own weights.

    Sums about zero would hold ``N M M^T`` at the weights' scale and lose the fine-tunes'
    deltas, often a thousandth of it, to cancellation (in float32 all of it); sums about a
    nearby point hold the deltas themselves. LoRA updates are already small: no shift.

    The source is read by a fold over it alone, so that a distributed build reads it in a
    worker: the driver holds the shift it hands to every task, never the source's files.
    """
    if not context.options.center:
        return {}
    names = [spec.name for spec in group]
    reader = context.reader

    def step(shift: dict[str, torch.Tensor], first: MatrixSource) -> dict[str, torch.Tensor]:
        loaded = reader.read(first, names, check=True)
        return {
            name: matrix.value.clone() for name, matrix in loaded.single.items() if isinstance(matrix, Dense)
        }  # not a reused buffer

    return context.executor.aggregate([source], dict, step, lambda a, b: {**a, **b})


def _shifted_back(bases: dict[str, LayerBasis], shift: dict[str, torch.Tensor]) -> dict[str, LayerBasis]:
    """Bases solved on shifted layers, with the shift added back to their means."""
    for name, point in shift.items():
        bases[name].mean = bases[name].mean + point  # type: ignore[operator]
    return bases


def _finish_sides(spec: LayerSpec, acc: LayerAccumulator, modes: tuple[int, ...], rule: RankRule) -> LayerBasis:
    mean = acc.mean()
    basis = LayerBasis(spec.name, spec.tensor_shape, modes, mean=mean)
    for mode, side, side_mean in ((2, acc.left, mean), (3, acc.right, None if mean is None else mean.T)):
        if side is None:
            continue
        values, vectors = _solve(spec.name, lambda: side.eigen(side_mean, acc.count))  # noqa: B023 (called at once)
        limit = numerical_rank(values)
        k = rule.choose(values, limit)
        if mode == 2:
            basis.left = vectors[:, :k].contiguous()
        else:
            basis.right = vectors[:, :k].contiguous()
        basis.spectra[mode] = values[:limit].sqrt()
        if limit < values.numel():  # the dropped values still count towards the variance
            basis.variance_totals[mode] = float(values.sum())
    return basis


def _solve(layer: str, function: Callable[[], tuple[torch.Tensor, torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Run an eigensolver; its failure (non-finite or degenerate data) becomes an :class:`EngineError`."""
    try:
        return function()
    except torch.linalg.LinAlgError as error:
        raise EngineError(
            f"layer {layer}: the eigendecomposition failed ({str(error).split(':')[-1].strip()}); non-finite values "
            "in a source?"
        ) from None


def _use_randomized(spec: LayerSpec, modes: tuple[int, ...], options: BuildOptions) -> bool:
    if options.solver == "exact" or options.rank.k is None:
        return False  # variance targets need the whole spectrum
    if options.solver == "randomized":
        return True
    p, q = spec.shape
    sides = [p] * (2 in modes) + [q] * (3 in modes)
    width = options.rank.k + options.oversample
    return min(sides) >= 1024 and 4 * width <= min(sides)


def _reads_dense(source: MatrixSource) -> bool:
    """Whether the collection's layers come as full matrices (checkpoints) rather than LoRA factors.

    Told by the source, not by reading a layer: the driver of a distributed build never reads
    a source (a Hub source would be downloaded there).
    """
    return not source.factored


def _plan_sketch_groups(
    layers: Sequence[LayerSpec], modes: tuple[int, ...], options: BuildOptions, *, dense: bool
) -> list[list[LayerSpec]]:
    """Groups whose sketches, centre sums and one source's share (read whole per pass) fit the budget."""
    itemsize = torch.empty((), dtype=options.accumulate_dtype).element_size()
    width = options.rank.k + options.oversample  # type: ignore[operator]
    groups: list[list[LayerSpec]] = []
    used = 0
    for spec in layers:
        p, q = spec.shape
        shift = options.center and dense
        need = itemsize * (
            3 * width * ((p if 2 in modes else 0) + (q if 3 in modes else 0)) + p * q * (options.center + dense + shift)
        )
        if not groups or used + need > options.max_memory:
            groups.append([])
            used = 0
        groups[-1].append(spec)
        used += need
    return groups


def _build_randomized(
    group: list[LayerSpec],
    sources: Sequence[MatrixSource],
    shift: dict[str, torch.Tensor],
    context: _Context,
    description: str,
) -> dict[str, LayerBasis]:
    """Top-k factors of a group by randomized subspace iteration: ``1 + power_iterations`` folds."""
    opts = context.options
    return sketch_layers(
        group,
        sources,
        context.reader,
        shift,
        lambda step: context.executor_for(f"{description}, {step}", len(sources)),
        modes=context.modes,
        rank=opts.rank,
        center=opts.center,
        oversample=opts.oversample,
        power_iterations=opts.power_iterations,
        seed=opts.seed,
    )


def _row_blocks(spec: LayerSpec, count: int, options: BuildOptions) -> list[tuple[int, int]]:
    p, q = spec.shape
    itemsize = torch.empty((), dtype=options.accumulate_dtype).element_size()
    rows = max(1, min(p, options.max_memory // max(1, count * q * itemsize)))
    return [(start, min(p, start + rows)) for start in range(0, p, rows)]


def _load_block(
    sources: Sequence[MatrixSource], spec: LayerSpec, block: tuple[int, int], context: _Context
) -> torch.Tensor:
    """Rows of one layer from every source, as an ``N x (rows * q)`` matrix."""
    rows = []
    for source in sources:
        value = source.load_rows(spec.name, *block).to(context.device, context.options.accumulate_dtype)
        rows.append(context.reader.finite_rows(value, source.name, spec.name).reshape(-1))
    return torch.stack(rows)


def _shift_to_first_row(stacked: torch.Tensor) -> torch.Tensor:
    """Subtract the first source's row from every row, in place, and return it.

    Centred mode-1 sums do not change under a common shift, and taken about a source's own
    weights they keep the fine-tunes' small deltas (see :func:`_centre_shift`).
    """
    first = stacked[0].clone()
    stacked -= first
    return first


def _build_flat(spec: LayerSpec, sources: Sequence[MatrixSource], context: _Context) -> tuple[LayerBasis, int]:
    """Mode 1 (PCA across models) of one layer: ``N x N`` Gram by row blocks, then components."""
    opts = context.options
    count = len(sources)
    blocks = _row_blocks(spec, count, opts)

    def zero() -> torch.Tensor:
        return torch.zeros(count, count, device=context.device, dtype=opts.accumulate_dtype)

    def step(gram: torch.Tensor, block: tuple[int, int]) -> torch.Tensor:
        stacked = _load_block(sources, spec, block, context)
        if opts.center:
            _shift_to_first_row(stacked)
        return gram.addmm_(stacked, stacked.T)

    gram = context.executor_for(f"{spec.name}: Gram", len(blocks)).aggregate(blocks, zero, step, torch.Tensor.add_)
    if opts.center:
        centering = torch.eye(count, device=context.device, dtype=gram.dtype) - 1.0 / count
        gram = centering @ gram @ centering
    values, vectors = _solve(spec.name, lambda: torch.linalg.eigh((gram + gram.T) / 2))
    values, vectors = values.flip(0).clamp_min(0), vectors.flip(1)
    limit = min(numerical_rank(values), count - 1 if opts.center else count)
    k = opts.rank.choose(values, limit)
    weights = vectors[:, :k] / values[:k].sqrt()  # phi_j = sum_m weights[m, j] X_c[m]
    p, q = spec.shape
    components = torch.empty(k, p, q, device=context.device, dtype=opts.accumulate_dtype)
    mean = torch.empty(p, q, device=context.device, dtype=opts.accumulate_dtype) if opts.center else None
    advance = context.progress.task(f"{spec.name}: components", len(blocks))
    for start, stop in blocks:
        stacked = _load_block(sources, spec, (start, stop), context)
        if mean is not None:
            shift = _shift_to_first_row(stacked)
            block_mean = stacked.mean(0)
            mean[start:stop] = (block_mean + shift).reshape(stop - start, q)
            stacked -= block_mean
        components[:, start:stop] = (weights.T @ stacked).reshape(k, stop - start, q)
        advance()
    basis = LayerBasis(spec.name, spec.tensor_shape, (1,), mean=mean, components=components)
    basis.spectra[1] = values[:limit].sqrt()
    return basis, 2 * len(blocks)


def _quality_pass(
    groups: Sequence[Sequence[LayerSpec]],
    bases: dict[str, LayerBasis],
    sources: Sequence[MatrixSource],
    holdout: Sequence[MatrixSource],
    context: _Context,
) -> tuple[list[LayerReport], int]:
    """Project every source onto the basis: per-source errors, then the null baseline.

    The projections are a fold over the sources (in workers, for a distributed build); only
    the per-layer, per-source residuals come back.

    Stacked LoRA updates are projected in the build's precision, their residuals summed from
    parts that float32 keeps accurate (see :meth:`FactoredStack.tucker_residuals`); other
    LoRA updates in float64, where a residual as a difference of squared norms keeps its digits.
    """
    everyone = [(s, False) for s in sources] + [(s, True) for s in holdout]
    means = {name: basis.mean for name, basis in bases.items() if basis.mean is not None}
    reader = context.reader
    stacked_bases: dict[tuple[str, ...], TuckerBases | None] = {}  # per process: the driver, or each worker

    def step(fits: _Fits, item: tuple[MatrixSource, bool]) -> _Fits:
        source, is_holdout = item
        for group in groups:
            # Training sources were checked for NaN/Inf in the first pass; held-out ones are new.
            # Dense layers come back minus their mean, in the reader's reused buffers.
            loaded = reader.read(source, [spec.name for spec in group], check=is_holdout, shift=means)
            singles = dict(loaded.single)
            for stack in loaded.stacks:
                if not is_holdout:
                    fits.ranks.update(((name, source.name), stack.rank) for name in stack.names)
                if stack.names not in stacked_bases:
                    stacked_bases[stack.names] = _stacked_tucker_bases(
                        [bases[n] for n in stack.names], stack.lora_b.dtype
                    )
                tucker = stacked_bases[stack.names]
                if tucker is None:  # centred or single-sided: project one by one
                    singles.update((name, stack.matrix(i)) for i, name in enumerate(stack.names))
                    continue
                residual, total = stack.tucker_residuals(tucker)
                for name, r, t in zip(stack.names, residual.tolist(), total.tolist(), strict=True):
                    fits.residuals[(name, source.name)] = (r, t, t, is_holdout)
            for name, matrix in singles.items():
                if not is_holdout and isinstance(matrix, LowRank):
                    fits.ranks[(name, source.name)] = matrix.rank
                low_rank = not isinstance(matrix, Dense)
                fit = fit_layer(
                    bases[name],
                    matrix.to(matrix.parts[0].device, torch.float64) if low_rank else matrix,
                    centred=not low_rank and name in means,
                )
                fits.residuals[(name, source.name)] = (
                    float(fit.residual),
                    float(fit.total),
                    float(fit.centered_total),
                    is_holdout,
                )
        return fits

    fits = context.executor_for("quality pass", len(everyone)).aggregate(everyone, _Fits, step, _Fits.merge)
    names = [spec.name for group in groups for spec in group]
    residuals = {
        name: {s.name: fits.residuals[(name, s.name)] for s, _ in everyone} for name in names
    }  # in collection order, wherever they were computed
    ranks = {name: [fits.ranks[(name, s.name)] for s in sources if (name, s.name) in fits.ranks] for name in names}
    generator = torch.Generator().manual_seed(context.options.seed)
    reports = [
        assess_layer(
            bases[name],
            residuals[name],
            null=context.options.null_baseline,
            generator=generator,
            source_ranks=ranks[name] if len(ranks[name]) == len(sources) else None,
        )
        for name in residuals
    ]
    return reports, 1


@dataclass
class _Fits:
    """What the quality pass folds: each (layer, source)'s residual and totals, and each training LoRA's rank."""

    residuals: dict[tuple[str, str], tuple[float, float, float, bool]] = field(default_factory=dict)
    ranks: dict[tuple[str, str], int] = field(default_factory=dict)

    def merge(self, other: _Fits) -> _Fits:
        self.residuals.update(other.residuals)
        self.ranks.update(other.ranks)
        return self


def _stacked_tucker_bases(bases: list[LayerBasis], dtype: torch.dtype) -> TuckerBases | None:
    """The ``U`` and ``V`` of uncentred two-sided bases of one shape, stacked in the stacks'
    ``dtype`` (cast once per build, not per source); ``None`` otherwise."""
    if any(b.modes != (2, 3) or b.mean is not None or b.left is None or b.right is None for b in bases):
        return None
    if len({(b.left.shape, b.right.shape) for b in bases}) != 1:  # type: ignore[union-attr]
        return None
    return TuckerBases.of(torch.stack([b.left for b in bases]), torch.stack([b.right for b in bases]), dtype)  # type: ignore[misc]
