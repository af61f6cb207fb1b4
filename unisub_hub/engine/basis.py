"""The in-memory basis of one layer, and the mode sets the engine understands."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..errors import EngineError

__all__ = ["MODE_SETS", "LayerBasis", "parse_modes"]

MODE_SETS: dict[str, tuple[int, ...]] = {"1": (1,), "2": (2,), "3": (3,), "2,3": (2, 3)}
"""Spelling of each supported mode set: flat PCA (1), left side (2), right side (3), Tucker (2,3)."""


def parse_modes(text: str | tuple[int, ...] | list[int]) -> tuple[int, ...]:
    """Normalise ``"2,3"``, ``"23"``, ``(3, 2)`` ... to a supported sorted mode tuple."""
    if isinstance(text, str):
        digits = tuple(sorted({int(c) for c in text if c.isdigit()}))
    else:
        digits = tuple(sorted(set(int(m) for m in text)))
    if digits not in MODE_SETS.values():
        raise EngineError(f"unsupported modes {text!r}: choose one of {', '.join(MODE_SETS)}")
    return digits


@dataclass
class LayerBasis:
    """Shared subspace of one layer.

    Attributes:
        name: tensor name in the source checkpoints (for LoRA, the base model's weight name).
        tensor_shape: the weight's own shape; the matrix view is ``(shape[0], prod(shape[1:]))``.
        modes: ``(1,)``, ``(2,)``, ``(3,)`` or ``(2, 3)``.
        mean: ``p x q`` centre, or ``None`` when the layer is not centred.
        left: ``U``, ``p x k2`` with orthonormal columns (modes 2 and 2,3).
        right: ``V``, ``q x k3`` with orthonormal columns (modes 3 and 2,3).
        components: ``k x p x q`` orthonormal (Frobenius) component matrices (mode 1).
        spectra: per mode, the singular values of the centred data in that mode, descending:
            all of them the data has with the exact solver, the leading ``k + oversample``
            with the randomized one.
    """

    name: str
    tensor_shape: tuple[int, ...]
    modes: tuple[int, ...]
    mean: torch.Tensor | None = None
    left: torch.Tensor | None = None
    right: torch.Tensor | None = None
    components: torch.Tensor | None = None
    spectra: dict[int, torch.Tensor] = field(default_factory=dict)
    variance_totals: dict[int, float] = field(default_factory=dict)
    """Per mode, the total centred variance when ``spectra`` holds only the leading values
    (randomized solver, or values below round-off dropped); empty when the spectra are complete."""

    @property
    def shape(self) -> tuple[int, int]:
        """The ``p x q`` matrix view."""
        rows = self.tensor_shape[0]
        cols = 1
        for size in self.tensor_shape[1:]:
            cols *= size
        return rows, cols

    @property
    def centered(self) -> bool:
        return self.mean is not None

    @property
    def ranks(self) -> dict[int, int]:
        """Kept rank per mode."""
        ranks: dict[int, int] = {}
        if self.components is not None:
            ranks[1] = self.components.shape[0]
        if self.left is not None:
            ranks[2] = self.left.shape[1]
        if self.right is not None:
            ranks[3] = self.right.shape[1]
        return ranks

    def coefficient_shape(self) -> tuple[int, ...]:
        """Shape of one task's coefficient tensor for this layer."""
        p, q = self.shape
        ranks = self.ranks
        if self.modes == (1,):
            return (ranks[1],)
        if self.modes == (2, 3):
            return (ranks[2], ranks[3])
        if self.modes == (2,):
            return (ranks[2], q)
        return (p, ranks[3])

    def check(self) -> None:
        """Raise if the factors do not fit the modes and the shape."""
        p, q = self.shape
        wanted = {1: self.components, 2: self.left, 3: self.right}
        for mode, factor in wanted.items():
            if (mode in self.modes) != (factor is not None):
                raise EngineError(f"layer {self.name}: modes {self.modes} and factor of mode {mode} disagree")
        if self.left is not None and self.left.shape[0] != p:
            raise EngineError(f"layer {self.name}: U has {self.left.shape[0]} rows, expected {p}")
        if self.right is not None and self.right.shape[0] != q:
            raise EngineError(f"layer {self.name}: V has {self.right.shape[0]} rows, expected {q}")
        if self.components is not None and tuple(self.components.shape[1:]) != (p, q):
            raise EngineError(f"layer {self.name}: components are {tuple(self.components.shape[1:])}, expected {(p, q)}")
        if self.mean is not None and tuple(self.mean.shape) != (p, q):
            raise EngineError(f"layer {self.name}: mean is {tuple(self.mean.shape)}, expected {(p, q)}")
