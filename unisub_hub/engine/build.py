"""Building a basis: truncated HOSVD per layer, streamed over sources (DESIGN.md section 2).

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

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import torch

from ..constants import DEFAULT_MAX_MEMORY
from ..errors import EngineError, NonFiniteError
from .accumulate import LayerAccumulator
from .basis import LayerBasis, parse_modes
from .device import resolve_device
from .executor import Executor, SerialExecutor
from .matrix import Dense, Factored, LayerMatrix, LowRank
from .quality import BuildReport, LayerReport, assess_layer
from .rank import RankRule, numerical_rank

__all__ = ["BuildOptions", "BuildResult", "LayerSpec", "MatrixSource", "Progress", "build_basis"]


class MatrixSource(Protocol):
    """One model of the collection, as the engine sees it: named layers as matrices."""

    @property
    def name(self) -> str: ...

    def load(self, names: Sequence[str]) -> Mapping[str, LayerMatrix]:
        """The listed layers, each as a :class:`Dense` or :class:`LowRank` matrix view."""

    def load_rows(self, name: str, start: int, stop: int) -> torch.Tensor:
        """Rows ``start:stop`` of one layer's dense matrix view (mode 1 streams these)."""


class Progress(Protocol):
    """Receives the build's progress; ``task`` returns the function that advances one step."""

    def task(self, description: str, total: int) -> Callable[[], None]: ...


class _NoProgress:
    def task(self, description: str, total: int) -> Callable[[], None]:
        return lambda: None


@dataclass(frozen=True)
class LayerSpec:
    """A layer to decompose: its tensor name and the tensor's own shape."""

    name: str
    tensor_shape: tuple[int, ...]

    @property
    def shape(self) -> tuple[int, int]:
        cols = 1
        for size in self.tensor_shape[1:]:
            cols *= size
        return self.tensor_shape[0], cols


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


def build_basis(
    layers: Sequence[LayerSpec],
    sources: Sequence[MatrixSource],
    *,
    options: BuildOptions = BuildOptions(),
    holdout: Sequence[MatrixSource] = (),
    executor: Executor | None = None,
    progress: Progress | None = None,
) -> BuildResult:
    """Decompose every layer of a collection and measure how well the basis fits.

    Args:
        layers: the layers to decompose (same names and shapes in every source).
        sources: the models the basis is built from (at least two).
        options: see :class:`BuildOptions`.
        holdout: models left out of the basis, only projected for honest error figures.
        executor: runs the folds over sources; :class:`SerialExecutor` by default.
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
    modes = parse_modes(options.modes)
    if len(sources) < 2:
        raise EngineError(f"a basis needs at least 2 sources, got {len(sources)}")
    if not layers:
        raise EngineError("no layers to decompose: the layer selection is empty")
    device = resolve_device(options.device)
    progress = progress or _NoProgress()
    context = _Context(options, modes, device, executor, progress, _SourceCache(options.max_memory // 2 if executor is None else 0))
    bases: dict[str, LayerBasis] = {}
    passes = 0
    if modes == (1,):
        for spec in layers:
            bases[spec.name], used = _build_flat(spec, sources, context)
            passes += used
    else:
        if options.solver not in ("auto", "exact", "randomized"):
            raise EngineError(f"unknown solver {options.solver!r}: use auto, exact or randomized")
        sketched = [spec for spec in layers if _use_randomized(spec, modes, options)]
        exact = [spec for spec in layers if spec not in sketched]
        groups = _plan_groups(exact, modes, options) if exact else []
        for number, group in enumerate(groups, 1):
            bases.update(_build_sides(group, sources, context, f"pass {number}/{len(groups)}"))
        passes += len(groups)
        sketch_groups = _plan_sketch_groups(sketched, modes, options) if sketched else []
        for number, group in enumerate(sketch_groups, 1):
            bases.update(_build_randomized(group, sources, context, f"sketch group {number}/{len(sketch_groups)}"))
        passes += len(sketch_groups) * (1 + options.power_iterations)
    layer_reports, quality_passes = _quality_pass(layers, bases, sources, holdout, context)
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
    return BuildResult(layers=bases, report=report)


class _SourceCache:
    """Sources' layers, as read, kept in memory between passes while they fit in a byte budget.

    The randomized solver reads every source ``2 + power_iterations`` times. When the whole
    collection's selected layers fit in half of ``max_memory`` (LoRA factors usually do),
    the first pass keeps them and later passes read nothing; past the budget the cache is
    dropped and every pass streams from disk as usual.
    """

    def __init__(self, budget: int) -> None:
        self.budget = budget
        self.entries: dict[str, dict[str, LayerMatrix]] = {}
        self.size = 0
        self.enabled = budget > 0

    def get(self, source: str, names: Sequence[str]) -> dict[str, LayerMatrix] | None:
        entry = self.entries.get(source)
        return None if entry is None or any(n not in entry for n in names) else {n: entry[n] for n in names}

    def offer(self, source: str, loaded: dict[str, LayerMatrix]) -> None:
        if not self.enabled:
            return
        self.size += sum(t.numel() * t.element_size() for m in loaded.values() for t in _tensors_of(m))
        if self.size > self.budget:
            self.entries.clear()
            self.enabled = False
            return
        self.entries.setdefault(source, {}).update(loaded)


def _tensors_of(matrix: LayerMatrix) -> tuple[torch.Tensor, ...]:
    if isinstance(matrix, Dense):
        return (matrix.value,)
    if isinstance(matrix, Factored):
        return matrix.parts
    return (matrix.left, matrix.singular_values, matrix.right)


@dataclass
class _Context:
    options: BuildOptions
    modes: tuple[int, ...]
    device: torch.device
    executor: Executor | None
    progress: Progress
    cache: _SourceCache = field(default_factory=lambda: _SourceCache(0))

    def fetch(self, source: MatrixSource, names: Sequence[str], *, check: bool, keep: bool = False) -> dict[str, LayerMatrix]:
        """Layers of one source, cast; from the cache when it has them (``keep`` offers them to it)."""
        raw = self.cache.get(source.name, names)
        if raw is None:
            raw = dict(source.load(names))
            if keep:
                self.cache.offer(source.name, raw)
        return {name: self.cast(matrix, source.name, name, check=check) for name, matrix in raw.items()}

    def executor_for(self, description: str, total: int) -> Executor:
        return self.executor or SerialExecutor(self.progress.task(description, total))

    def cast(self, matrix: LayerMatrix, source: str, layer: str, *, check: bool = True) -> LayerMatrix:
        """The matrix on the build's device and precision, with non-finite values refused (or zeroed)."""
        moved = matrix.to(self.device, self.options.accumulate_dtype)
        if not check and self.options.check_finite:
            return moved  # this source's layer was checked in an earlier pass
        parts = (moved.value,) if isinstance(moved, Dense) else moved.parts if isinstance(moved, Factored) else (moved.left, moved.singular_values, moved.right)
        if all(bool(torch.isfinite(part).all()) for part in parts):
            return moved
        if self.options.check_finite:
            raise NonFiniteError(f"tensor {layer} holds NaN or Inf", source=source)
        if isinstance(moved, Dense):
            return Dense(torch.nan_to_num(moved.value, nan=0.0, posinf=0.0, neginf=0.0))
        return moved  # a LoRA update with NaN factors has no finite canonical form; eigh reports it

    def finite_rows(self, value: torch.Tensor, source: str, layer: str) -> torch.Tensor:
        if bool(torch.isfinite(value).all()):
            return value
        if self.options.check_finite:
            raise NonFiniteError(f"tensor {layer} holds NaN or Inf", source=source)
        return torch.nan_to_num(value, nan=0.0, posinf=0.0, neginf=0.0)


def _plan_groups(layers: Sequence[LayerSpec], modes: tuple[int, ...], options: BuildOptions) -> list[list[LayerSpec]]:
    """Greedy groups of layers whose accumulators fit the memory budget together."""
    itemsize = torch.empty((), dtype=options.accumulate_dtype).element_size()
    groups: list[list[LayerSpec]] = []
    current: list[LayerSpec] = []
    used = 0
    for spec in layers:
        need = LayerAccumulator.bytes_needed(spec.shape, modes, options.center, itemsize)
        if current and used + need > options.max_memory:
            groups.append(current)
            current, used = [], 0
        current.append(spec)
        used += need
    if current:
        groups.append(current)
    return groups


def _build_sides(
    group: list[LayerSpec], sources: Sequence[MatrixSource], context: _Context, description: str
) -> dict[str, LayerBasis]:
    """One fold over the sources for a group of mode-2/3 layers, then the eigenproblems."""
    opts = context.options
    names = [spec.name for spec in group]

    def zero() -> dict[str, LayerAccumulator]:
        return {
            spec.name: LayerAccumulator.empty(spec.shape, context.modes, opts.center, context.device, opts.accumulate_dtype)
            for spec in group
        }

    def step(acc: dict[str, LayerAccumulator], source: MatrixSource) -> dict[str, LayerAccumulator]:
        for name, matrix in source.load(names).items():
            acc[name].add(context.cast(matrix, source.name, name))
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


def _finish_sides(spec: LayerSpec, acc: LayerAccumulator, modes: tuple[int, ...], rule: RankRule) -> LayerBasis:
    mean = acc.mean()
    basis = LayerBasis(spec.name, spec.tensor_shape, modes, mean=mean)
    for mode, side, side_mean in ((2, acc.left, mean), (3, acc.right, None if mean is None else mean.T)):
        if side is None:
            continue
        values, vectors = _solve(spec.name, lambda: side.eigen(side_mean, acc.count))
        limit = numerical_rank(values)
        k = rule.choose(values, limit)
        if mode == 2:
            basis.left = vectors[:, :k].contiguous()
        else:
            basis.right = vectors[:, :k].contiguous()
        basis.spectra[mode] = values[:limit].sqrt()
    return basis


def _solve(layer: str, function: Callable[[], tuple[torch.Tensor, torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Run an eigensolver; its failure (non-finite or degenerate data) becomes an :class:`EngineError`."""
    try:
        return function()
    except torch.linalg.LinAlgError as error:
        raise EngineError(f"layer {layer}: the eigendecomposition failed ({str(error).split(':')[-1].strip()}); non-finite values in a source?") from None


def _use_randomized(spec: LayerSpec, modes: tuple[int, ...], options: BuildOptions) -> bool:
    if options.solver == "exact" or options.rank.k is None:
        return False  # variance targets need the whole spectrum
    if options.solver == "randomized":
        return True
    p, q = spec.shape
    sides = [p] * (2 in modes) + [q] * (3 in modes)
    width = options.rank.k + options.oversample
    return min(sides) >= 1024 and 4 * width <= min(sides)


def _plan_sketch_groups(layers: Sequence[LayerSpec], modes: tuple[int, ...], options: BuildOptions) -> list[list[LayerSpec]]:
    itemsize = torch.empty((), dtype=options.accumulate_dtype).element_size()
    width = options.rank.k + options.oversample  # type: ignore[operator]
    groups: list[list[LayerSpec]] = []
    used = 0
    for spec in layers:
        p, q = spec.shape
        need = itemsize * (3 * width * ((p if 2 in modes else 0) + (q if 3 in modes else 0)) + (p * q if options.center else 0))
        if not groups or used + need > options.max_memory:
            groups.append([])
            used = 0
        groups[-1].append(spec)
        used += need
    return groups


def _build_randomized(group: list[LayerSpec], sources: Sequence[MatrixSource], context: _Context, description: str) -> dict[str, LayerBasis]:
    """Top-k factors of a group by randomized subspace iteration: ``1 + power_iterations`` folds."""
    from .randomized import SketchAccumulator, add_batched

    opts = context.options
    names = [spec.name for spec in group]
    generator = torch.Generator().manual_seed(opts.seed)
    tests: dict[str, list[torch.Tensor | None]] = {}
    for spec in group:
        p, q = spec.shape
        tests[spec.name] = [
            torch.randn(dim, min(dim, opts.rank.k + opts.oversample), generator=generator, dtype=torch.float64).to(context.device, opts.accumulate_dtype)  # type: ignore[operator]
            if mode in context.modes else None
            for mode, dim in ((2, p), (3, q))
        ]
    first: dict[str, SketchAccumulator] = {}
    rounds = 1 + opts.power_iterations
    for round_number in range(rounds):
        starting = round_number == 0

        def zero() -> dict[str, SketchAccumulator]:
            return {
                spec.name: SketchAccumulator(
                    *tests[spec.name],
                    total=torch.zeros(spec.shape, device=context.device, dtype=opts.accumulate_dtype) if (opts.center and starting) else None,
                )
                for spec in group
            }

        stacked_tests: dict[tuple[str, ...], tuple[torch.Tensor | None, torch.Tensor | None]] = {}

        def batch_tests(batch: tuple[str, ...]) -> tuple[torch.Tensor | None, torch.Tensor | None]:
            if batch not in stacked_tests:
                stacked_tests[batch] = tuple(  # type: ignore[assignment]
                    None if tests[batch[0]][side] is None else torch.stack([tests[n][side] for n in batch]) for side in (0, 1)
                )
            return stacked_tests[batch]

        def step(acc: dict[str, SketchAccumulator], source: MatrixSource) -> dict[str, SketchAccumulator]:
            batches: dict[tuple, list[str]] = {}
            loaded = context.fetch(source, names, check=starting, keep=starting)
            for name in names:
                if isinstance(loaded[name], Factored):
                    key = (tuple(loaded[name].lora_b.shape), tuple(loaded[name].lora_a.shape))
                    batches.setdefault(key, []).append(name)
                else:
                    acc[name].add(loaded[name], first_pass=starting)
            for batch in batches.values():
                add_batched([acc[n] for n in batch], [loaded[n] for n in batch], first_pass=starting, tests=batch_tests(tuple(batch)))  # type: ignore[misc]
            return acc

        def merge(a: dict[str, SketchAccumulator], b: dict[str, SketchAccumulator]) -> dict[str, SketchAccumulator]:
            for name in a:
                a[name].merge(b[name])
            return a

        sums = context.executor_for(f"{description}, pass {round_number + 1}/{rounds}", len(sources)).aggregate(sources, zero, step, merge)
        if starting:
            first = sums
        for spec in group:
            acc, head = sums[spec.name], first[spec.name]
            mean = None if head.total is None else head.total / head.count
            products = [
                None if test is None else SketchAccumulator.centred(product, test, side_mean, head.count)
                for test, product, side_mean in zip(tests[spec.name], (acc.left, acc.right), (mean, None if mean is None else mean.T))
            ]
            if round_number < rounds - 1:
                tests[spec.name] = [None if y is None else torch.linalg.qr(y)[0] for y in products]
            else:
                total = float(head.sq_norm - (0 if mean is None else head.count * mean.square().sum()))
                first[spec.name] = _finish_randomized(spec, mean, tests[spec.name], products, total, context.modes, opts.rank)  # type: ignore[assignment]
    return {spec.name: first[spec.name] for spec in group}  # type: ignore[misc]


def _finish_randomized(spec, mean, tests, products, total, modes, rule) -> LayerBasis:  # noqa: ANN001
    basis = LayerBasis(spec.name, spec.tensor_shape, modes, mean=mean)
    for mode, test, product in zip((2, 3), tests, products):
        if product is None:
            continue
        ritz = test.T @ product  # Rayleigh-Ritz values on the previous orthonormal basis
        values = torch.linalg.eigvalsh((ritz + ritz.T) / 2).flip(0).clamp_min(0)
        vectors, _, _ = torch.linalg.svd(product, full_matrices=False)
        k = rule.choose(values, numerical_rank(values))
        if mode == 2:
            basis.left = vectors[:, :k].contiguous()
        else:
            basis.right = vectors[:, :k].contiguous()
        basis.spectra[mode] = values.sqrt()
        basis.variance_totals[mode] = total
    return basis


def _row_blocks(spec: LayerSpec, count: int, options: BuildOptions) -> list[tuple[int, int]]:
    p, q = spec.shape
    itemsize = torch.empty((), dtype=options.accumulate_dtype).element_size()
    rows = max(1, min(p, options.max_memory // max(1, count * q * itemsize)))
    return [(start, min(p, start + rows)) for start in range(0, p, rows)]


def _load_block(sources: Sequence[MatrixSource], spec: LayerSpec, block: tuple[int, int], context: _Context) -> torch.Tensor:
    """Rows of one layer from every source, as an ``N x (rows * q)`` matrix."""
    rows = []
    for source in sources:
        value = source.load_rows(spec.name, *block).to(context.device, context.options.accumulate_dtype)
        rows.append(context.finite_rows(value, source.name, spec.name).reshape(-1))
    return torch.stack(rows)


def _build_flat(spec: LayerSpec, sources: Sequence[MatrixSource], context: _Context) -> tuple[LayerBasis, int]:
    """Mode 1 (PCA across models) of one layer: ``N x N`` Gram by row blocks, then components."""
    opts = context.options
    count = len(sources)
    blocks = _row_blocks(spec, count, opts)

    def zero() -> torch.Tensor:
        return torch.zeros(count, count, device=context.device, dtype=opts.accumulate_dtype)

    def step(gram: torch.Tensor, block: tuple[int, int]) -> torch.Tensor:
        stacked = _load_block(sources, spec, block, context)
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
            block_mean = stacked.mean(0)
            mean[start:stop] = block_mean.reshape(stop - start, q)
            stacked = stacked - block_mean
        components[:, start:stop] = (weights.T @ stacked).reshape(k, stop - start, q)
        advance()
    basis = LayerBasis(spec.name, spec.tensor_shape, (1,), mean=mean, components=components)
    basis.spectra[1] = values[:limit].sqrt()
    return basis, 2 * len(blocks)


def _update_rank(matrix: LayerMatrix) -> int | None:
    """The rank of a low-rank update (LoRA), or ``None`` for a dense weight."""
    if isinstance(matrix, Factored):
        return matrix.lora_b.shape[1]
    return matrix.rank if isinstance(matrix, LowRank) else None


def _tucker_residuals(matrices: list[Factored], left: torch.Tensor, right: torch.Tensor) -> list[tuple[float, float]]:
    """``(||X - U U^T X V V^T||^2, ||X||^2)`` of same-shaped LoRA updates, in batched GEMMs.

    The in-build factors are orthonormal to working precision, so the residual is
    ``||X||^2 - ||U^T X V||^2`` with ``U^T X V = s (U^T B)(A V)``.
    """
    lora_b = torch.stack([m.lora_b for m in matrices])
    lora_a = torch.stack([m.lora_a for m in matrices])
    scale = torch.tensor([m.scale for m in matrices], dtype=lora_b.dtype, device=lora_b.device)
    core = (left.transpose(1, 2) @ lora_b) @ (lora_a @ right) * scale[:, None, None]
    total = ((lora_b.transpose(1, 2) @ lora_b) * (lora_a @ lora_a.transpose(1, 2))).sum((1, 2)) * scale.square()
    residual = (total - core.square().sum((1, 2))).clamp_min(0)
    return list(zip(residual.tolist(), total.tolist()))


def _quality_pass(
    layers: Sequence[LayerSpec],
    bases: dict[str, LayerBasis],
    sources: Sequence[MatrixSource],
    holdout: Sequence[MatrixSource],
    context: _Context,
) -> tuple[list[LayerReport], int]:
    """Project every source onto the basis: per-source errors, then the null baseline."""
    from .project import project_layer, residual_sq_norm

    everyone = [(s, False) for s in sources] + [(s, True) for s in holdout]
    groups = _plan_groups(layers, (2, 3), context.options) if context.modes != (1,) else [list(layers)]
    residuals: dict[str, dict[str, tuple[float, float, float, bool]]] = {spec.name: {} for spec in layers}
    ranks: dict[str, list[int]] = {spec.name: [] for spec in layers}
    stacked: dict[tuple[str, ...], tuple[torch.Tensor, torch.Tensor]] = {}
    advance = context.progress.task("quality pass", len(everyone))
    for source, is_holdout in everyone:
        for group in groups:
            # Training sources were checked for NaN/Inf in the first pass; held-out ones are new.
            loaded = context.fetch(source, [spec.name for spec in group], check=is_holdout)
            batches: dict[tuple, list[str]] = {}
            for name, matrix in loaded.items():
                if not is_holdout and (rank := _update_rank(matrix)) is not None:
                    ranks[name].append(rank)
                basis = bases[name]
                if isinstance(matrix, Factored) and basis.modes == (2, 3) and basis.mean is None:
                    key = (tuple(matrix.lora_b.shape), tuple(matrix.lora_a.shape), tuple(basis.left.shape), tuple(basis.right.shape))
                    batches.setdefault(key, []).append(name)
                    continue
                coef = project_layer(basis, matrix)
                residual = float(residual_sq_norm(basis, matrix, coef))
                residuals[name][source.name] = (residual, float(matrix.sq_norm()), residual + float(coef.square().sum()), is_holdout)
            for batch in batches.values():
                names = tuple(batch)
                if names not in stacked:
                    stacked[names] = tuple(torch.stack([getattr(bases[n], side) for n in names]).to(context.options.accumulate_dtype) for side in ("left", "right"))  # type: ignore[assignment]
                for name, (residual, total) in zip(names, _tucker_residuals([loaded[n] for n in names], *stacked[names])):  # type: ignore[misc]
                    residuals[name][source.name] = (residual, total, total, is_holdout)
        advance()
    generator = torch.Generator().manual_seed(context.options.seed)
    reports = [
        assess_layer(bases[spec.name], residuals[spec.name], null=context.options.null_baseline, generator=generator,
                     source_ranks=ranks[spec.name] if len(ranks[spec.name]) == len(sources) else None)
        for spec in layers
    ]
    return reports, 1
