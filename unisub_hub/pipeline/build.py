"""``build``: a collection of sources in, a basis artifact and its quality report out."""

from __future__ import annotations

import shutil
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..constants import BASIS_FORMAT, DEFAULT_MAX_MEMORY, DEFAULT_SHARD_SIZE
from ..engine import (
    BuildOptions,
    BuildReport,
    Executor,
    LayerSpec,
    Progress,
    RankRule,
    SerialExecutor,
    build_basis,
    parse_modes,
    resolve_device,
)
from ..engine.grow import layer_states
from ..engine.modes import MODE_SETS
from ..engine.reader import SourceReader
from ..errors import EngineError, IncompatibleSourcesError, option
from ..format import BasisArtifact, check_artifact_output, save_basis
from ..format.common import safe_name
from ..format.dtypes import DTYPES, TORCH_DTYPES, dtype_name
from ..format.kinds import source_kind
from ..format.state import save_state
from ..io.collection import Source, open_sources
from .selection import Selection, select_layers
from .settings import parse_size, setting
from .ties import find_ties

__all__ = ["BuildSettings", "BuildOutcome", "architecture_of", "build", "check_duplicates", "split_holdout"]


@dataclass
class BuildOutcome:
    basis: BasisArtifact
    report: BuildReport
    selection: Selection
    sizes: dict[str, int]


def split_holdout(sources: list[Source], holdout: int | Sequence[str] | None) -> tuple[list[Source], list[Source]]:
    """Held-out sources: the last ``N``, or those named (by the path or id as given)."""
    if holdout is None or holdout == 0 or holdout == []:
        return sources, []
    if isinstance(holdout, int):
        if holdout < 0 or holdout >= len(sources) - 1:
            raise EngineError(
                f"{option('holdout')} {holdout} leaves fewer than 2 of {len(sources)} sources to build from"
            )
        return sources[:-holdout], sources[-holdout:]
    wanted = set(holdout)
    unknown = wanted - {s.name for s in sources}
    if unknown:
        raise EngineError(f"{option('holdout')} names unknown sources: {', '.join(sorted(unknown))}")
    return [s for s in sources if s.name not in wanted], [s for s in sources if s.name in wanted]


def architecture_of(sources: Sequence[Source]) -> tuple[str, dict[str, Any] | None]:
    """Architecture name and base model of a collection, from its first member's adapter or model config."""
    return sources[0].architecture()


HOLDOUT_FLOOR = 0.10
"""Below this share of a held-out member's update recovered by the directions, projecting it
does about what the basis mean alone does (the pattern critics of the universal-subspace
claim found on held-out LoRAs), and a build says so."""


def holdout_warning(report: BuildReport) -> str | None:
    """A warning when projecting the held-out members recovers no more than the mean alone does.

    The quality pass gives each held-out member's error relative to its distance from the
    mean (its whole update for an uncentred basis): the share recovered is ``1 - error**2``.
    """
    errors = [e for layer in report.layers if (e := layer.mean_error(holdout=True, centered=True)) is not None]
    if not errors:
        return None
    recovered = 1 - sum(e**2 for e in errors) / len(errors)
    if recovered >= HOLDOUT_FLOOR:
        return None
    return (
        f"the directions recover {max(recovered, 0.0):.1%} of what separates the {len(report.holdout)} held-out "
        f"member(s) from the basis mean (centred error {sum(errors) / len(errors):.3f}): projected, they do about "
        "what the mean alone does. New tasks may still be learned on the basis (`train`); compare them with the "
        "basis mean and the base (`eval TASK BASIS base`)"
    )


def accumulate_precision(precision: str, kind: str) -> torch.dtype:
    """The dtype of a build's sums: ``auto`` is float32 for LoRA adapters, float64 for checkpoints.

    A LoRA build sums thin products of small factors, uncentred: float32 finds the same
    subspaces (the paper-scale float32 and float64 bases are within 2.3e-6 rad over all 192
    sides) in about 0.8 of the time, and its quality numbers are computed in float64 anyway.
    Checkpoints are centred sums of large weights whose fine-tuning deltas are small: they
    keep float64.
    """
    if precision == "auto":
        precision = source_kind(kind).precision
    if precision not in ("float32", "float64"):
        raise EngineError(f"unknown {option('precision')} {precision!r}: use auto, float32 or float64")
    return DTYPES[precision]


def _check_same_architecture(sources: Sequence[Source]) -> None:
    """Refuse a source whose tensor names barely overlap the first source's (another architecture)."""
    reference = set(sources[0].tensors)
    for source in sources[1:]:
        names = set(source.tensors)
        shared = len(reference & names)
        if shared < 0.5 * len(reference | names):
            raise IncompatibleSourcesError(
                f"shares only {shared} of {len(reference | names)} tensor names with {sources[0].name}: a different "
                "architecture?",
                source=source.name,
            )


def _largest_rank(layers: Sequence[LayerSpec], modes: tuple[int, ...], count: int, center: bool) -> int:
    """The most directions any layer's data can have in any mode (before looking at the data)."""
    best = 0
    for spec in layers:
        p, q = spec.shape
        for mode in modes:
            best = max(best, {1: count - 1 if center else count, 2: min(p, count * q), 3: min(q, count * p)}[mode])
    return best


def check_duplicates(sources: Sequence[Source]) -> None:
    """Refuse two sources with the same bytes (a member counted twice skews the basis).

    Identities are per-file sha256s (see :mod:`unisub_hub.io.files`): a Hub source's come
    from the Hub's listing, a local file's are taken on two threads (``hashlib`` lets go of the
    GIL while it hashes: 512 adapters, 1.5 GB, in 0.55 s instead of 1.1 s) and kept by the
    file. The threads hash files, not sources: a source's ``sha256`` is a ``cached_property``,
    whose lock (Python 3.10 and 3.11) is one per class and would let one thread in at a time.
    """
    files = [file for source in sources for file in source.files]
    with ThreadPoolExecutor(max_workers=2) as pool:
        list(pool.map(lambda file: file.sha256(), files))
    seen: dict[str, str] = {}
    for source in sources:
        if source.sha256 in seen:
            raise IncompatibleSourcesError(
                f"has the same bytes (sha256) as {seen[source.sha256]}: duplicate source", source=source.name
            )
        seen[source.sha256] = source.name


DEVICES = ("auto", "cpu", "cuda")
STORAGE_DTYPES = ("float32", "float16", "bfloat16")
MODE_NAMES = tuple(MODE_SETS)


def parse_holdout(text: str) -> int | list[str] | None:
    """``--holdout`` as typed: a count (the last N sources) or comma-separated source names."""
    text = text.strip()
    if not text:
        return None
    return int(text) if text.isdigit() else [name for name in text.split(",") if name]


@dataclass(frozen=True)
class BuildSettings:
    """What a build decides, one field per flag of ``unisub-hub build`` (see its ``--help``).

    ``center`` defaults to on for full checkpoints and off for LoRA adapters, ``precision``
    (of the sketch sums) to float32 for LoRA adapters and float64 for checkpoints (see
    :func:`accumulate_precision`); the rank is
    ``k`` per mode, or the smallest reaching ``variance``, or 8 when neither is given.
    ``solver`` and ``power_iterations`` are :class:`~unisub_hub.engine.BuildOptions`'s: each
    extra power iteration is one more pass over the sources and brings the randomized
    subspaces closer to the exact ones where the spectrum decays slowly. ``keep_state`` adds
    one pass that stores what :func:`~unisub_hub.pipeline.grow.grow` needs to add members
    later without reading these (``<out>/state/``).
    """

    modes: str = setting(
        "2,3", "1: PCA across models; 2/3: one shared side; 2,3: Tucker.", choices=MODE_NAMES, from_parent=True
    )
    k: int | None = setting(None, "Rank per mode (default 8 unless --variance is given).", number=int, minimum=1)
    variance: float | None = setting(
        None,
        "Smallest rank reaching this explained variance, per mode.",
        number=float,
        minimum=0,
        maximum=1,
        minimum_open=True,
        from_parent=True,
    )
    center: bool | None = setting(
        None,
        "Subtract the mean (default: on for checkpoints, off for LoRA).",
        flag="--center/--no-center",
        switch=True,
        from_parent=True,
    )
    holdout: int | Sequence[str] | None = setting(
        None,
        "Leave sources out of the basis and report their error: a count (the last N) or comma-separated names.",
        parse=lambda text: parse_holdout(text),
        from_parent=True,
    )
    include: Sequence[str] = setting(
        (), "Glob of tensor names to decompose (repeatable).", multiple=True, from_parent=True
    )
    exclude: Sequence[str] = setting(
        (), "Glob of tensor names to pass through instead (repeatable).", multiple=True, from_parent=True
    )
    max_memory: int = setting(
        DEFAULT_MAX_MEMORY, "Accumulator bytes per pass; layers are grouped to fit.", parse=parse_size
    )
    device: str = setting("auto", "Where the linear algebra runs (auto: CUDA when present).", choices=DEVICES)
    dtype: str = setting("float32", "Storage dtype of the basis.", choices=STORAGE_DTYPES, from_parent=True)
    name: str | None = setting(None, "Basis name (default: the --out folder name).")
    arch: str | None = setting(None, "Architecture name (default: from the adapter or model config).", from_parent=True)
    shard_size: int = setting(
        DEFAULT_SHARD_SIZE,
        "Bytes per tensor file above which output is sharded HF-style (units: KB, MB, GB, KiB, MiB, GiB).",
        parse=parse_size,
    )
    allow_pickle: bool = setting(False, "Accept .bin/.pt weights (loaded with weights_only=True).", switch=True)
    allow_nonfinite: bool = setting(
        False, "Replace NaN/Inf in dense sources by 0 instead of refusing them.", switch=True, from_parent=True
    )
    precision: str = setting(
        "auto",
        "Precision of the sketch sums (auto: float32 for LoRA adapters, float64 for checkpoints); float32 is about "
        "2x faster.",
        choices=("auto", "float64", "float32"),
        from_parent=True,
    )
    solver: str = setting(
        "auto",
        "exact: Gram + eigh, whole spectrum; randomized: subspace iteration, top-k only; auto: randomized for a "
        "fixed --k on wide layers.",
        choices=("auto", "exact", "randomized"),
        from_parent=True,
    )
    power_iterations: int = setting(
        1,
        "Randomized solver: extra passes that sharpen the subspace where the spectrum decays slowly (see bench/).",
        minimum=0,
        maximum=20,
        from_parent=True,
    )
    keep_state: bool = setting(
        False,
        "Also store what --update needs to add members later without reading these (BASIS/state/).",
        switch=True,
        from_parent=True,
    )


def build(
    source_specs: Sequence[str],
    out: str | Path,
    settings: BuildSettings = BuildSettings(),
    *,
    progress: Progress | None = None,
    executor: Executor = SerialExecutor(),
    command: str | None = None,
) -> BuildOutcome:
    """Build a basis from sources (paths, globs, list files or Hub ids) and write it to ``out``.

    ``executor`` runs the folds over sources (:func:`unisub_hub.pipeline.executors.open_executor`
    opens one from ``serial``, ``dask`` or ``dask://HOST:PORT``); ``command`` is recorded in the manifest.

    Example:
        >>> outcome = build(["ft/*"], "my-basis", BuildSettings(modes="2,3", k=16, holdout=2))
        >>> outcome.report.layers[0].fit
    """
    check_artifact_output(out, BASIS_FORMAT)
    try:
        storage = DTYPES[settings.dtype]
    except KeyError:
        raise EngineError(f"unknown {option('dtype')} {settings.dtype!r}: use float32, float16 or bfloat16") from None
    if settings.keep_state:
        check_can_keep_state(parse_modes(settings.modes), settings.dtype, settings.variance)
    sources = open_sources(source_specs, allow_pickle=settings.allow_pickle)
    train, held = split_holdout(sources, settings.holdout)
    if len(train) < 2:
        raise EngineError(f"a basis needs at least 2 sources, got {len(train)}")
    kind = source_kind(train[0].kind)
    center = kind.centered_by_default if settings.center is None else settings.center
    rule = (
        RankRule(k=settings.k, variance=settings.variance)
        if (settings.k is not None or settings.variance is not None)
        else RankRule(k=8)
    )
    _check_same_architecture(sources)
    selection = select_layers([s.tensors for s in sources], include=settings.include, exclude=settings.exclude)
    check_duplicates(sources)
    # Tied tensors matter where a task keeps the whole model (checkpoints): written back as copies.
    layer_names = [spec.name for spec in selection.layers]
    ties = find_ties(train, layer_names, executor) if kind.keeps_whole_model else {}  # type: ignore[arg-type]
    for alias, target in ties.items():
        selection.passthrough[alias] = (
            f"tied to {target} (equal in every source): decomposed once, written back as a copy"
        )
    selection.layers = [spec for spec in selection.layers if spec.name not in ties]
    mode_set = parse_modes(settings.modes)
    if settings.k is not None and settings.k > (
        largest := _largest_rank(selection.layers, mode_set, len(train), center)
    ):
        raise EngineError(
            f"{option('k')} {settings.k} is more than the data can have: with {len(train)} sources no layer has more "
            f"than {largest} directions"
        )
    options = BuildOptions(
        modes=mode_set,
        rank=rule,
        center=center,
        device=settings.device,
        max_memory=settings.max_memory,
        check_finite=not settings.allow_nonfinite,
        accumulate_dtype=accumulate_precision(settings.precision, kind.name),
        solver=settings.solver,
        power_iterations=settings.power_iterations,
    )
    result = build_basis(selection.layers, train, holdout=held, options=options, progress=progress, executor=executor)
    for name in result.constant:  # frozen during fine-tuning: stored whole, like any other passthrough
        selection.passthrough[name] = "equal in every source (frozen?): nothing to decompose"
    selection.layers = [spec for spec in selection.layers if spec.name not in result.constant]
    arch_name, base_model = architecture_of(train)
    provenance = [{**s.provenance(), "role": "train"} for s in train] + [
        {**s.provenance(), "role": "holdout"} for s in held
    ]
    sizes = {"sources_bytes": sum(s.size_bytes() for s in train)}
    basis = save_basis(
        out,
        result.layers,
        name=settings.name or safe_name(Path(out).name),
        architecture_name=settings.arch or arch_name,
        source_kind=kind.name,
        sources=provenance,
        base_model=base_model,
        dtype=storage,
        quality=result.report.summary(),
        quality_report=result.report.to_dict(),
        sizes=sizes,
        command=command,
        shard_size=settings.shard_size,
        source_dtypes=_source_dtypes(train, result.layers) if kind.keeps_whole_model else None,
        tied={alias: target for alias, target in ties.items() if target in result.layers},
    )
    sizes["basis_bytes"] = basis.artifact.size_bytes()
    if settings.keep_state:
        specs = [spec for spec in selection.layers if spec.name in result.layers]
        stored = {
            spec.name: basis.layer(spec.name, dtype=torch.float64) for spec in specs
        }  # the state is about the stored means
        reader = SourceReader(resolve_device(settings.device), torch.float64, check_finite=not settings.allow_nonfinite)
        try:
            states = layer_states(
                stored, specs, train, k=rule.k or 8, reader=reader, executor=executor, progress=progress
            )
            sizes["state_bytes"] = save_state(basis.path, basis.content_id, states)["bytes"]
        except BaseException:
            shutil.rmtree(basis.path, ignore_errors=True)  # a failed command leaves no output
            raise
    return BuildOutcome(basis=basis, report=result.report, selection=selection, sizes=sizes)


def check_can_keep_state(modes: tuple[int, ...], dtype: str, variance: float | None) -> None:
    """What a growth state needs: one-sided or Tucker modes, a float32 basis (the state is about its
    stored means) and a fixed rank (a wide side keeps a sketch of the top of its spectrum only)."""
    if 1 in modes:
        raise EngineError(
            f"{option('keep_state')} needs {option('modes')} 2, 3 or 2,3: a {option('modes')} 1 basis spans the "
            "members themselves, and grows by rebuilding"
        )
    if dtype != "float32":
        raise EngineError(
            f"{option('keep_state')} needs {option('dtype')} float32: the state is centred on the stored means, which "
            f"{option('dtype')} {dtype} rounds too coarsely"
        )
    if variance is not None:
        raise EngineError(
            f"{option('keep_state')} needs a fixed {option('k')}: a wide side keeps only the top of its spectrum, "
            f"which a {option('variance')} target cannot use"
        )


def _source_dtypes(sources: Sequence[Source], layers: Mapping[str, Any]) -> dict[str, str]:
    """Per layer, the dtype every training source stored it in (a mixed layer records none)."""
    found = {}
    for name in layers:
        names = {
            dtype_name(TORCH_DTYPES[d]) if d in TORCH_DTYPES else d for d in (s.tensors[name].dtype for s in sources)
        }
        if len(names) == 1 and (only := names.pop()) in DTYPES:
            found[name] = only
    return found
