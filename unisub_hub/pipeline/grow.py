"""``build --update``: a basis grown by new members, without reading the members it has.

The parent basis must carry a growth state (``build --keep-state``). The new sources are
folded into it (:mod:`unisub_hub.engine.grow`), the grown layers are solved, and the new
basis is assessed on the members it took in. It records its parent and the sources it added
(``grown_from``), lists every member in ``sources``, and carries the grown state, so it can
grow again. Its default name is the parent's: it registers as the name's next version, and
``registry list tasks --stale`` then shows the tasks that ``rebase`` can move onto it.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from packaging.version import InvalidVersion, Version

from ..constants import BASIS_FORMAT, DEFAULT_MAX_MEMORY, DEFAULT_SHARD_SIZE
from ..engine import (
    BuildOptions,
    Executor,
    LayerSpec,
    Progress,
    RankRule,
    SerialExecutor,
    assess_basis,
    resolve_device,
)
from ..engine.grow import grow_layers
from ..engine.reader import SourceReader
from ..errors import EngineError, FormatError, IncompatibleSourcesError, option
from ..format import check_artifact_output, load_basis, save_basis
from ..format.state import load_state, save_state
from ..io.collection import Source, open_sources
from .build import BuildOutcome, check_duplicates
from .selection import Selection

__all__ = ["grow"]

_PER_FILE_IDENTITY = Version("0.2.0")
"""The first version that records a multi-file source's identity from its per-file sha256s."""


def grow(
    parent_path: str | Path,
    source_specs: Sequence[str],
    out: str | Path,
    *,
    k: int | None = None,
    name: str | None = None,
    device: str = "auto",
    max_memory: int = DEFAULT_MAX_MEMORY,
    shard_size: int = DEFAULT_SHARD_SIZE,
    allow_pickle: bool = False,
    progress: Progress | None = None,
    executor: Executor = SerialExecutor(),
    command: str | None = None,
) -> BuildOutcome:
    """Grow the basis at ``parent_path`` by ``source_specs`` into a new basis at ``out``.

    ``k`` defaults to the parent's largest rank. Sources already in the parent (same bytes)
    are refused: a member counted twice would weigh double.

    Raises:
        FormatError: the parent has no growth state, or its state does not match it.
        IncompatibleSourcesError: a new source lacks a layer, has another shape or kind, or is
            already a member.
    """
    check_artifact_output(out, BASIS_FORMAT)
    parent = load_basis(parent_path)
    states = load_state(parent.path, parent.content_id)
    manifest = parent.manifest
    _check_state_layers(states, manifest, parent.path)
    sources = open_sources(source_specs, allow_pickle=allow_pickle)
    check_duplicates(sources)
    # Held-out sources are not in the state: one may join as a member, and then is no longer held out.
    members = {
        entry.get("sha256"): entry["id"]
        for entry in manifest["sources"]
        if entry.get("sha256") and entry.get("role", "train") == "train"
    }
    # Before 0.2 a multi-file source was recorded by the sha256 of its concatenated files.
    legacy = _recorded_before_per_file_identity(manifest["producer"]["version"])
    identities = {source.name: _identities(source, legacy=legacy) for source in sources}
    joining = set().union(*identities.values())
    kept = [
        entry
        for entry in manifest["sources"]
        if not (entry.get("role") == "holdout" and entry.get("sha256") in joining)
    ]
    specs = [LayerSpec(entry["name"], tuple(entry["shape"])) for entry in manifest["layers"]]
    for source in sources:
        if source.kind != manifest["source_kind"]:
            raise IncompatibleSourcesError(
                f"is a {source.kind} source but the basis was built from {manifest['source_kind']} sources",
                source=source.name,
            )
        if found := next((members[i] for i in identities[source.name] if i in members), None):
            raise IncompatibleSourcesError(
                f"is already a member of {manifest['name']} (same bytes as {found}): it would count twice",
                source=source.name,
            )
        for spec in specs:
            info = source.tensors.get(spec.name)
            if info is None or tuple(info.shape) != spec.tensor_shape:
                found = "missing" if info is None else "x".join(map(str, info.shape))
                raise IncompatibleSourcesError(
                    f"layer {spec.name} is {found}, the basis has {'x'.join(map(str, spec.tensor_shape))}",
                    source=source.name,
                )
    ranks = [rank for entry in manifest["layers"] for rank in entry["ranks"].values()]
    rule = RankRule(k=k or max(ranks))
    if rule.k and any(
        rule.k > side.sums.shape[1]
        for state in states.values()
        for side in state.sides.values()
        if side.test is not None
    ):
        raise EngineError(
            f"{option('k')} {rule.k} is more than the parent's state sketched; grow with a k up to "
            f"{min(s.sums.shape[1] for st in states.values() for s in st.sides.values() if s.test is not None)}"
        )
    target = resolve_device(device)
    bases = {spec.name: parent.layer(spec.name, device=target, dtype=torch.float64) for spec in specs}
    reader = SourceReader(target, torch.float64, check_finite=True)
    grown = grow_layers(bases, states, specs, sources, rank=rule, reader=reader, executor=executor, progress=progress)
    modes = tuple(sorted({mode for entry in manifest["layers"] for mode in entry["modes"]}))
    options = BuildOptions(
        modes=modes, rank=rule, center=manifest["centered"], device=str(target), max_memory=max_memory
    )
    report = assess_basis(grown, specs, sources, options=options, progress=progress, executor=executor)
    added = [source.provenance()["id"] for source in sources]
    basis = save_basis(
        out,
        grown,
        name=name or manifest["name"],
        architecture_name=manifest["architecture"]["name"],
        source_kind=manifest["source_kind"],
        sources=[*kept, *({**s.provenance(), "role": "train"} for s in sources)],
        base_model=manifest["architecture"].get("base_model"),
        dtype=torch.float32,
        quality=report.summary(),
        quality_report=report.to_dict(),
        sizes={"sources_bytes": sum(s.size_bytes() for s in sources)},
        command=command,
        shard_size=shard_size,
        source_dtypes={entry["name"]: entry["source_dtype"] for entry in manifest["layers"] if "source_dtype" in entry}
        or None,
        tied=manifest.get("tied"),
        grown_from={"content_id": parent.content_id, "name": manifest.get("name"), "added": added},
    )
    try:
        state_bytes = save_state(basis.path, basis.content_id, states)["bytes"]
    except BaseException:
        shutil.rmtree(basis.path, ignore_errors=True)
        raise
    sizes = {
        "sources_bytes": sum(s.size_bytes() for s in sources),
        "basis_bytes": basis.artifact.size_bytes(),
        "state_bytes": state_bytes,
    }
    return BuildOutcome(basis=basis, report=report, selection=Selection(specs, {}), sizes=sizes)


def _identities(source: Source, *, legacy: bool) -> set[str]:
    """The sha256s that say a source is already a member: with ``legacy``, also the pre-0.2 one."""
    found = {source.sha256}
    if legacy and source.legacy_sha256 is not None:
        found.add(source.legacy_sha256)
    return found


def _recorded_before_per_file_identity(version: str) -> bool:
    """Whether a basis written by ``version`` may record a sharded source the old way (an
    unreadable version string may: checking the old identity too costs a hash, missing it a
    member counted twice)."""
    try:
        return Version(version) < _PER_FILE_IDENTITY
    except InvalidVersion:
        return True


def _check_state_layers(states: dict[str, Any], manifest: dict[str, Any], path: Path) -> None:
    """The state holds every layer of the basis, each with the basis's sides, and nothing else."""
    expected = {entry["name"]: {int(m) for m in entry["modes"]} for entry in manifest["layers"]}
    if set(states) != set(expected):
        missing, extra = sorted(set(expected) - set(states)), sorted(set(states) - set(expected))
        raise FormatError(
            f"the growth state's layers do not match the basis (missing: {', '.join(missing) or 'none'}; "
            f"not in the basis: {', '.join(extra) or 'none'})",
            path=path / "state",
        )
    for name, modes in expected.items():
        if set(states[name].sides) != modes:
            raise FormatError(f"the growth state of layer {name} has other sides than the basis", path=path / "state")
