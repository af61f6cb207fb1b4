"""The engine's shared vocabulary: what a source must offer, a layer to decompose, progress.

A leaf module: the build, the randomized solver and the reader all speak these types, so they
live below all three (no import cycle).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import torch

from .matrix import LayerMatrix, matrix_shape

__all__ = ["Advance", "LayerSpec", "MatrixSource", "Progress", "SilentProgress"]


class MatrixSource(Protocol):
    """One model of the collection, as the engine sees it: named layers as matrices."""

    @property
    def name(self) -> str: ...

    @property
    def factored(self) -> bool:
        """Whether layers load as :class:`Factored` LoRA updates (else as :class:`Dense` weights)."""

    def load(self, names: Sequence[str]) -> Mapping[str, LayerMatrix]:
        """The listed layers, each as a :class:`Dense` or :class:`LowRank` matrix view."""

    def load_rows(self, name: str, start: int, stop: int) -> torch.Tensor:
        """Rows ``start:stop`` of one layer's dense matrix view (mode 1 streams these)."""


class Advance(Protocol):
    """Moves a progress task on by ``count`` steps (an executor passes the items each finished part folded)."""

    def __call__(self, count: int = 1) -> None: ...


class Progress(Protocol):
    """Receives the build's progress; ``task`` returns the function that advances that task."""

    def task(self, description: str, total: int) -> Advance: ...


def _nothing(count: int = 1) -> None:
    pass


class SilentProgress:
    """Progress that shows nothing (the default)."""

    def task(self, description: str, total: int) -> Advance:
        return _nothing


@dataclass(frozen=True)
class LayerSpec:
    """A layer to decompose: its tensor name and the tensor's own shape."""

    name: str
    tensor_shape: tuple[int, ...]

    @property
    def shape(self) -> tuple[int, int]:
        return matrix_shape(self.tensor_shape)
