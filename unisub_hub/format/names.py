"""How layer names of one side (an adapter, a basis) map to another's (a model, a checkpoint).

PEFT names modules inside the task model (``bert.encoder...``) while a base checkpoint or a
loaded model may be the backbone alone (``encoder...``), or the other way round: the two
sides then differ by one leading prefix, the same for every name. This is the one place
that finds it; materialize, validate and attaching a basis to a model all use it.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass

__all__ = ["PrefixMap", "prefix_map"]


@dataclass(frozen=True)
class PrefixMap:
    """Names of ours -> names of theirs: drop ``drop`` (a prefix they lack), add ``add`` (one they have)."""

    drop: str = ""
    add: str = ""

    def forward(self, name: str) -> str:
        """Our name as they spell it."""
        return self.add + name.removeprefix(self.drop)

    def back(self, name: str) -> str:
        """Their name as we spell it."""
        return self.drop + name.removeprefix(self.add)


def prefix_map(ours: Sequence[str], theirs: Collection[str]) -> PrefixMap | None:
    """The prefix rule that makes our first name that can match one of theirs, or ``None``.

    Exact names win; otherwise the first of ``ours`` that is a dotted suffix of one of
    ``theirs`` (they have an extra prefix), or has one of ``theirs`` as a dotted suffix (we do).
    """
    for name in ours:
        if name in theirs:
            return PrefixMap()
        for other in theirs:
            if other.endswith("." + name):
                return PrefixMap(add=other[: -len(name)])
            if name.endswith("." + other):
                return PrefixMap(drop=name[: -len(other)])
    return None
