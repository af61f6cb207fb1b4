"""Turning what a user typed (paths, globs, list files, Hub repo ids) into opened sources."""

from __future__ import annotations

import glob
from collections.abc import Iterable, Sequence
from pathlib import Path

from ..errors import IncompatibleSourcesError, SourceError
from ..hf import is_repo_id
from .checkpoint import CheckpointSource
from .peft_adapter import LoraSource, is_lora

__all__ = ["Source", "expand_source_args", "open_source", "open_sources"]

Source = CheckpointSource | LoraSource


def expand_source_args(args: Iterable[str]) -> list[str]:
    """Expand globs and ``@list.txt`` files (one source per line, ``#`` comments) in order.

    A plain ``.txt`` file is also read as a list. Anything else is kept as typed (a path or a
    Hub repo id).
    """
    out: list[str] = []
    for arg in args:
        list_file = Path(arg[1:]) if arg.startswith("@") else Path(arg)
        if (arg.startswith("@") or arg.endswith(".txt")) and list_file.is_file():
            lines = (line.split("#", 1)[0].strip() for line in list_file.read_text().splitlines())
            base = list_file.parent
            out.extend(
                line if is_repo_id(line) and not (base / line).exists() else str(base / line) for line in lines if line
            )
        elif any(ch in arg for ch in "*?[") and (matches := sorted(glob.glob(arg))):
            out.extend(matches)
        else:
            out.append(arg)
    return out


def open_source(spec: str, *, allow_pickle: bool = False, hub_files: Sequence[str] | None = None) -> Source:
    """Open one source: a local folder or file, else a Hub repo id ``org/name[@revision]``."""
    path = Path(spec)
    if path.exists():
        if is_lora(path):
            return LoraSource(path, name=spec, allow_pickle=allow_pickle)
        return CheckpointSource(path, name=spec, allow_pickle=allow_pickle)
    if is_repo_id(spec):
        from .hub_tree import open_hub_tree

        tree, revision = open_hub_tree(spec, allow_patterns=hub_files)
        # The name is the locator as typed, revision included: it identifies the source in
        # caches, reports and --holdout, and org/x@rev1 and org/x@rev2 are two sources.
        if is_lora(tree):
            return LoraSource(tree, name=spec, revision=revision, allow_pickle=allow_pickle)
        return CheckpointSource(tree, name=spec, revision=revision, allow_pickle=allow_pickle)
    raise SourceError("no such file or folder (nor a Hub repo id org/name[@revision])", source=spec)


def open_sources(specs: Sequence[str], *, allow_pickle: bool = False) -> list[Source]:
    """Open every source of a collection; all must be of one kind (checkpoints or LoRA)."""
    specs = expand_source_args(specs)
    repeated = next((spec for number, spec in enumerate(specs) if spec in specs[:number]), None)
    if repeated is not None:
        raise IncompatibleSourcesError("is given twice in the collection", source=repeated)
    sources = [open_source(spec, allow_pickle=allow_pickle) for spec in specs]
    other = next((s for s in sources if s.kind != sources[0].kind), None)
    if other is not None:
        raise IncompatibleSourcesError(
            f"is a {other.kind} source in a collection of {sources[0].kind} sources ({sources[0].name}): "
            "a collection is LoRA adapters or full checkpoints, not both",
            source=other.name,
        )
    return sources
