"""The mode sets a basis can have, one strategy object each, in a registry keyed by name.

A mode set decides everything that differs between flat PCA (``1``), one shared side
(``2`` or ``3``) and Tucker (``2,3``): which factors a layer stores, the shape of a task's
coefficients, how a layer is projected and rebuilt, and how a task's update is applied to an
input batch without forming a ``p x q`` matrix (training and multi-task serving). Callers
look a mode set up once (:func:`mode_set`) and never branch on the modes themselves.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import torch

from ..errors import EngineError
from .matrix import Dense, Factored, LayerMatrix

__all__ = ["MODE_SETS", "Factors", "ModeSet", "mode_set", "parse_modes"]


@dataclass(frozen=True)
class Factors:
    """The shared directions of one layer (no mean): ``U (p x k2)``, ``V (q x k3)``, or ``k x p x q`` components."""

    left: torch.Tensor | None = None
    right: torch.Tensor | None = None
    components: torch.Tensor | None = None

    @property
    def u(self) -> torch.Tensor:
        """``U``; a mode set that uses it has it (a missing one is a bug, not bad input)."""
        if self.left is None:
            raise ValueError("these factors have no U")
        return self.left

    @property
    def v(self) -> torch.Tensor:
        """``V``; see :attr:`u`."""
        if self.right is None:
            raise ValueError("these factors have no V")
        return self.right

    @property
    def stacked(self) -> torch.Tensor:
        """The ``k x p x q`` components of mode 1; see :attr:`u`."""
        if self.components is None:
            raise ValueError("these factors have no components")
        return self.components

    def to(self, like: torch.Tensor) -> Factors:
        """The factors on the device and dtype of ``like``."""
        cast = lambda t: None if t is None else t.to(device=like.device, dtype=like.dtype)  # noqa: E731
        return Factors(cast(self.left), cast(self.right), cast(self.components))

    def transposed(self) -> Factors:
        """The factors of the transposed layer (``dW^T``): sides swapped, components transposed."""
        components = None if self.components is None else self.components.transpose(1, 2)
        return Factors(self.right, self.left, components)


class ModeSet(ABC):
    """What one mode set means for storage, projection, reconstruction and application.

    In every method, ``x`` is a batch of inputs with the layer's ``q`` features last and the
    result has ``p`` features last: the product ``x dW^T`` of the update ``dW`` the
    coefficients stand for (the mean excluded; it is a plain matrix the caller applies).
    """

    name: str
    modes: tuple[int, ...]
    roles: tuple[str, ...]
    """Stored factor roles (``U``, ``V``, ``components``), besides the optional ``mean``."""

    @property
    def flat(self) -> bool:
        """Whether the layer is decomposed as flattened vectors across models (mode 1)."""
        return self.modes == (1,)

    def factor_shapes(self, p: int, q: int, ranks: dict[int, int]) -> dict[str, tuple[int, ...]]:
        """The shape of each stored factor role for a ``p x q`` layer of the given ranks."""
        shapes = {"U": (p, ranks.get(2, 0)), "V": (q, ranks.get(3, 0)), "components": (ranks.get(1, 0), p, q)}
        return {role: shapes[role] for role in self.roles}

    @property
    def transposed(self) -> ModeSet:
        """The mode set of the transposed layer: with :meth:`Factors.transposed` and
        :meth:`transpose_coefficients` it rebuilds ``dW^T`` (GPT-2's ``Conv1D`` stores ``in x out``)."""
        return _BY_MODES[tuple(sorted(5 - m if m > 1 else m for m in self.modes))]

    def transpose_coefficients(self, coef: torch.Tensor) -> torch.Tensor:
        """A task's coefficients for :attr:`transposed` (a batch of them keeps its leading dimension)."""
        return coef if self.flat else coef.transpose(-1, -2)

    @abstractmethod
    def coefficient_shape(self, p: int, q: int, ranks: dict[int, int]) -> tuple[int, ...]:
        """The shape of one task's coefficients for a ``p x q`` layer."""

    @abstractmethod
    def project(self, factors: Factors, matrix: LayerMatrix) -> torch.Tensor:
        """The orthogonal projection of an (already centred) layer onto the factors."""

    @abstractmethod
    def reconstruct(self, factors: Factors, coef: torch.Tensor) -> torch.Tensor:
        """The ``p x q`` matrix the coefficients stand for (without the mean)."""

    @abstractmethod
    def reconstruction_sq_norm(self, factors: Factors, coef: torch.Tensor) -> torch.Tensor:
        """``||reconstruct(coef)||^2`` from the factors' small Gram matrices (exact for any factors)."""

    @abstractmethod
    def as_matrix(self, factors: Factors, coef: torch.Tensor) -> LayerMatrix:
        """``reconstruct(coef)`` as a layer matrix, in low-rank factors where the mode set has them
        (so a task can be projected onto another basis without forming ``p x q``)."""

    @abstractmethod
    def apply(self, factors: Factors, coef: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """``x reconstruct(coef)^T`` through thin products."""

    @abstractmethod
    def apply_per_example(self, factors: Factors, coefs: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """The same with one coefficient tensor per example: ``coefs[b]`` applies to ``x[b]``.

        ``coefs`` is ``(B, *coefficient_shape)`` and ``x`` is ``(B, ..., q)``.
        """


def _rows(x: torch.Tensor) -> tuple[torch.Tensor, torch.Size]:
    """``x`` as ``(B, n, features)`` for batched products, and its leading shape to restore."""
    return x.reshape(x.shape[0], -1, x.shape[-1]), x.shape[:-1]


class Flat(ModeSet):
    """Mode 1: ``k`` component matrices, ``k`` numbers per task and layer."""

    name, modes, roles = "1", (1,), ("components",)

    def coefficient_shape(self, p: int, q: int, ranks: dict[int, int]) -> tuple[int, ...]:
        return (ranks[1],)

    def project(self, factors: Factors, matrix: LayerMatrix) -> torch.Tensor:
        return torch.stack([matrix.inner(c) for c in factors.stacked])

    def reconstruct(self, factors: Factors, coef: torch.Tensor) -> torch.Tensor:
        return torch.einsum("k,kpq->pq", coef, factors.stacked)

    def reconstruction_sq_norm(self, factors: Factors, coef: torch.Tensor) -> torch.Tensor:
        flat = factors.stacked.reshape(coef.shape[0], -1)
        return coef @ (flat @ flat.T) @ coef

    def as_matrix(self, factors: Factors, coef: torch.Tensor) -> LayerMatrix:
        return Dense(self.reconstruct(factors, coef))  # the components are dense already

    def apply(self, factors: Factors, coef: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        # The k-term sum costs k p q once per call, far less than k products with the batch.
        return x @ self.reconstruct(factors, coef).T

    def apply_per_example(self, factors: Factors, coefs: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        rows, lead = _rows(x)
        weights = torch.einsum("bk,kpq->bqp", coefs, factors.stacked)
        return torch.bmm(rows, weights).reshape(*lead, -1)


class Left(ModeSet):
    """Mode 2: a shared ``U``; each task keeps ``C = U^T X`` (``k2 x q``)."""

    name, modes, roles = "2", (2,), ("U",)

    def coefficient_shape(self, p: int, q: int, ranks: dict[int, int]) -> tuple[int, ...]:
        return (ranks[2], q)

    def project(self, factors: Factors, matrix: LayerMatrix) -> torch.Tensor:
        return matrix.left_project(factors.u)

    def reconstruct(self, factors: Factors, coef: torch.Tensor) -> torch.Tensor:
        return factors.u @ coef

    def reconstruction_sq_norm(self, factors: Factors, coef: torch.Tensor) -> torch.Tensor:
        return ((factors.u.T @ factors.u @ coef) * coef).sum()

    def as_matrix(self, factors: Factors, coef: torch.Tensor) -> LayerMatrix:
        return Factored(factors.u, coef, 1.0)

    def apply(self, factors: Factors, coef: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return (x @ coef.T) @ factors.u.T

    def apply_per_example(self, factors: Factors, coefs: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        rows, lead = _rows(x)
        return (torch.bmm(rows, coefs.transpose(1, 2)) @ factors.u.T).reshape(*lead, -1)


class Right(ModeSet):
    """Mode 3: a shared ``V``; each task keeps ``C = X V`` (``p x k3``)."""

    name, modes, roles = "3", (3,), ("V",)

    def coefficient_shape(self, p: int, q: int, ranks: dict[int, int]) -> tuple[int, ...]:
        return (p, ranks[3])

    def project(self, factors: Factors, matrix: LayerMatrix) -> torch.Tensor:
        return matrix.right_project(factors.v)

    def reconstruct(self, factors: Factors, coef: torch.Tensor) -> torch.Tensor:
        return coef @ factors.v.T

    def reconstruction_sq_norm(self, factors: Factors, coef: torch.Tensor) -> torch.Tensor:
        return ((coef @ (factors.v.T @ factors.v)) * coef).sum()

    def as_matrix(self, factors: Factors, coef: torch.Tensor) -> LayerMatrix:
        return Factored(coef, factors.v.T, 1.0)

    def apply(self, factors: Factors, coef: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return (x @ factors.v) @ coef.T

    def apply_per_example(self, factors: Factors, coefs: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        rows, lead = _rows(x)
        return torch.bmm(rows @ factors.v, coefs.transpose(1, 2)).reshape(*lead, -1)


class Tucker(ModeSet):
    """Modes 2,3: shared ``U`` and ``V``; each task keeps the core ``C = U^T X V`` (``k2 x k3``)."""

    name, modes, roles = "2,3", (2, 3), ("U", "V")

    def coefficient_shape(self, p: int, q: int, ranks: dict[int, int]) -> tuple[int, ...]:
        return (ranks[2], ranks[3])

    def project(self, factors: Factors, matrix: LayerMatrix) -> torch.Tensor:
        return matrix.core(factors.u, factors.v)

    def reconstruct(self, factors: Factors, coef: torch.Tensor) -> torch.Tensor:
        return factors.u @ coef @ factors.v.T

    def reconstruction_sq_norm(self, factors: Factors, coef: torch.Tensor) -> torch.Tensor:
        left_gram = factors.u.T @ factors.u
        right_gram = factors.v.T @ factors.v
        return ((left_gram @ coef @ right_gram) * coef).sum()

    def as_matrix(self, factors: Factors, coef: torch.Tensor) -> LayerMatrix:
        return Factored(factors.u @ coef, factors.v.T, 1.0)

    def apply(self, factors: Factors, coef: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return ((x @ factors.v) @ coef.T) @ factors.u.T

    def apply_per_example(self, factors: Factors, coefs: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        rows, lead = _rows(x)
        inner = torch.bmm(rows @ factors.v, coefs.transpose(1, 2))
        return (inner @ factors.u.T).reshape(*lead, -1)


MODE_SETS: dict[str, ModeSet] = {strategy.name: strategy for strategy in (Flat(), Left(), Right(), Tucker())}
"""Every supported mode set by its spelling: flat PCA (1), left side (2), right side (3), Tucker (2,3)."""

_BY_MODES = {strategy.modes: strategy for strategy in MODE_SETS.values()}


def parse_modes(text: str | tuple[int, ...] | list[int]) -> tuple[int, ...]:
    """Normalise ``"2,3"``, ``"23"``, ``(3, 2)`` ... to a supported sorted mode tuple."""
    if isinstance(text, str):
        digits = tuple(sorted({int(c) for c in text if c.isdigit()}))
    else:
        digits = tuple(sorted(set(int(m) for m in text)))
    if digits not in _BY_MODES:
        raise EngineError(f"unsupported modes {text!r}: choose one of {', '.join(MODE_SETS)}")
    return digits


def mode_set(modes: str | tuple[int, ...] | list[int]) -> ModeSet:
    """The strategy of a mode set, from any spelling :func:`parse_modes` accepts."""
    return _BY_MODES[parse_modes(modes)]
