"""The in-memory basis of one layer."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..errors import EngineError
from .matrix import matrix_shape
from .modes import Factors, ModeSet, mode_set

__all__ = ["LayerBasis"]


@dataclass
class LayerBasis:
    """Shared subspace of one layer.

    Attributes:
        name: tensor name in the source checkpoints (for LoRA, the base model's weight name).
        tensor_shape: the weight's own shape; the matrix view is ``matrix_shape(tensor_shape)``.
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
        return matrix_shape(self.tensor_shape)

    @property
    def strategy(self) -> ModeSet:
        """What the layer's mode set means (see :mod:`unisub_hub.engine.modes`)."""
        return mode_set(self.modes)

    @property
    def factors(self) -> Factors:
        """The shared directions, without the mean."""
        return Factors(self.left, self.right, self.components)

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
        return self.strategy.coefficient_shape(*self.shape, self.ranks)

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
            raise EngineError(
                f"layer {self.name}: components are {tuple(self.components.shape[1:])}, expected {(p, q)}"
            )
        if self.mean is not None and tuple(self.mean.shape) != (p, q):
            raise EngineError(f"layer {self.name}: mean is {tuple(self.mean.shape)}, expected {(p, q)}")
