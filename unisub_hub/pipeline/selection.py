"""Which tensors a basis decomposes, and why the others are passed through whole."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from fnmatch import fnmatchcase

from ..engine.build import LayerSpec
from ..engine.matrix import matrix_shape
from ..errors import EngineError, option

__all__ = ["Selection", "select_layers"]


@dataclass
class Selection:
    """Layers to decompose, and every other tensor name with the reason it is passthrough."""

    layers: list[LayerSpec]
    passthrough: dict[str, str] = field(default_factory=dict)


def _matches(name: str, patterns: Sequence[str]) -> bool:
    return any(fnmatchcase(name, pattern) for pattern in patterns)


def select_layers(
    tables: Sequence[Mapping[str, tuple[tuple[int, ...], str]]],
    *,
    include: Sequence[str] = (),
    exclude: Sequence[str] = (),
    min_size: int = 2,
) -> Selection:
    """Choose the layers of a collection from each source's ``{name: (shape, dtype)}`` table.

    A tensor is decomposed when it is at least 2-D, has the same shape in every source, has
    both sides at least ``min_size``, matches an ``include`` glob (all tensors if none) and no
    ``exclude`` glob. Order follows the first source.

    Raises:
        EngineError: nothing is left to decompose.
    """
    first = tables[0]
    names = list(first) + sorted({n for t in tables[1:] for n in t} - set(first))
    layers, passthrough = [], {}
    for name in names:
        shapes = {tuple(t[name][0]) for t in tables if name in t}
        if sum(name in t for t in tables) < len(tables):
            passthrough[name] = "missing in some sources"
        elif len(shapes) > 1:
            passthrough[name] = "shape differs across sources: " + ", ".join(
                "x".join(map(str, s)) for s in sorted(shapes)
            )
        elif len(shape := next(iter(shapes))) < 2:
            passthrough[name] = f"{len(shape)}-D tensor"
        elif min(matrix_shape(shape)) < min_size:
            passthrough[name] = f"matrix side below {min_size}"
        elif include and not _matches(name, include):
            passthrough[name] = "not matched by --include"
        elif _matches(name, exclude):
            passthrough[name] = "matched by --exclude"
        elif not str(first[name][1]).upper().startswith(("F", "BF")) and "float" not in str(first[name][1]):
            passthrough[name] = f"dtype {first[name][1]} is not floating point"
        else:
            layers.append(LayerSpec(name, shape))
    if not layers:
        raise EngineError(
            "the layer selection is empty: no tensor is a matrix of the same shape in every source (check "
            f"{option('include')}/{option('exclude')})"
        )
    return Selection(layers, passthrough)
