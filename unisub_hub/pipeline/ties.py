"""Tied tensors: an output head stored beside the embedding it equals, decomposed once.

Checkpoints saved by older tools (or with ``safe_serialization`` off and back) keep
``lm_head.weight`` next to ``wte.weight`` (T5: ``shared.weight`` next to both
``embed_tokens``) although the model ties them. Decomposing both doubles that part of the
basis for nothing, so a tensor equal to another in every source is recorded as tied to it and
written back as a copy on materialize.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import torch

from ..engine.executor import Executor, SerialExecutor

__all__ = ["TIE_CANDIDATES", "find_ties", "is_tied"]

TIE_CANDIDATES = (
    "lm_head.weight",
    "embed_out.weight",
    "wte.weight",
    "embed_tokens.weight",
    "word_embeddings.weight",
    "shared.weight",
    "embed_in.weight",
)
"""Name endings of the tensors models tie (input embeddings and output heads); only these are compared."""

_HEADS = ("lm_head.weight", "embed_out.weight")


class _Readable(Protocol):
    @property
    def tensors(self) -> Mapping[str, Any]: ...

    def tensor(self, name: str) -> torch.Tensor: ...


def is_tied(source: _Readable, alias: str, target: str) -> bool:
    """Whether ``alias`` and ``target`` hold the same values in ``source``."""
    if alias not in source.tensors or target not in source.tensors:
        return False
    return torch.equal(source.tensor(alias), source.tensor(target))


def find_ties(
    sources: Sequence[_Readable], names: Sequence[str], executor: Executor = SerialExecutor()
) -> dict[str, str]:
    """``{alias: target}`` for candidate tensors equal to another in every source.

    The target is the input embedding where there is one (the tensor a tied model owns), and
    every alias of a group points at it directly. The comparison reads tensors, so it runs
    as a fold on ``executor`` (where the sources are read in a distributed build); a fold
    stops reading once no candidate pair is left.
    """
    candidates = [name for name in names if name.endswith(TIE_CANDIDATES)]
    ordered = sorted(
        candidates, key=lambda name: (name.endswith(_HEADS), len(name), name)
    )  # embeddings first, shortest name first
    shapes = sources[0].tensors
    pairs = frozenset(
        (alias, target)
        for i, target in enumerate(ordered)
        for alias in ordered[i + 1 :]
        if shapes[alias].shape == shapes[target].shape
    )
    if not pairs:
        return {}
    equal = executor.aggregate(sources, lambda: pairs, _still_tied, frozenset.intersection)
    ties: dict[str, str] = {}
    for i, target in enumerate(ordered):
        if target in ties:
            continue
        for alias in ordered[i + 1 :]:
            if alias not in ties and (alias, target) in equal:
                ties[alias] = target
    return ties


def _still_tied(pairs: frozenset[tuple[str, str]], source: _Readable) -> frozenset[tuple[str, str]]:
    return frozenset(pair for pair in pairs if is_tied(source, *pair))
