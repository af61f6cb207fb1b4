"""Reading sources for a build: cast to the build's device and precision, check, stack, cache.

Every pass of a build asks a source for one group of layers. The reader hands them back
ready for the math: on the build device in the accumulate dtype, refused (or zeroed) when
they hold NaN or Inf, and with same-shaped LoRA updates stacked into one
:class:`FactoredStack`. When the whole collection fits in the cache's budget (LoRA factors
usually do), the first pass keeps what it read and later passes read nothing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch

from ..errors import NonFiniteError
from .matrix import Dense, Factored, LayerMatrix, all_finite
from .stack import FactoredStack

if TYPE_CHECKING:
    from .spec import MatrixSource

__all__ = ["Loaded", "SourceReader"]


@dataclass
class Loaded:
    """One source's share of a group of layers: LoRA updates stacked by shape, the rest per layer."""

    stacks: list[FactoredStack] = field(default_factory=list)
    single: dict[str, LayerMatrix] = field(default_factory=dict)

    @property
    def nbytes(self) -> int:
        tensors = [t for s in self.stacks for t in (s.lora_b, s.lora_a)] + [
            t for m in self.single.values() for t in m.parts
        ]
        return sum(t.numel() * t.element_size() for t in tensors)


class _Cache:
    """What a pass read, kept for the next passes while the collection fits in ``budget`` bytes.

    The first source of each group tells what the whole collection will take (sources of
    one family share their shapes); when that estimate is over budget the cache gives up at
    once instead of filling up first.
    """

    def __init__(self, budget: int, source_count: int) -> None:
        self.budget = budget
        self.source_count = source_count
        self.entries: dict[tuple[str, tuple[str, ...]], Loaded] = {}
        self.expected: dict[tuple[str, ...], int] = {}
        self.enabled = budget > 0

    def get(self, source: str, names: tuple[str, ...]) -> Loaded | None:
        return self.entries.get((source, names))

    def offer(self, source: str, names: tuple[str, ...], loaded: Loaded) -> None:
        if not self.enabled:
            return
        self.expected.setdefault(names, loaded.nbytes * self.source_count)
        if sum(self.expected.values()) > self.budget:
            self.entries.clear()
            self.enabled = False
            return
        self.entries[(source, names)] = loaded


class SourceReader:
    """Reads groups of layers from sources for the engine's passes.

    Args:
        device: the build device.
        dtype: the accumulate dtype.
        check_finite: refuse NaN/Inf (``True``) or zero them (``False``).
        cache_budget: bytes the cache may hold (0 disables it).
        source_count: how many sources a pass reads (for the cache's estimate).
    """

    def __init__(
        self,
        device: torch.device,
        dtype: torch.dtype,
        *,
        check_finite: bool,
        cache_budget: int = 0,
        source_count: int = 0,
        reuse_buffers: bool = False,
    ) -> None:
        self.device = device
        self.dtype = dtype
        self.check_finite = check_finite
        self._cache = _Cache(cache_budget, source_count)
        self._reuse = reuse_buffers
        self._scratch: dict[tuple, torch.Tensor] = {}

    def read(
        self,
        source: MatrixSource,
        names: Sequence[str],
        *,
        check: bool,
        keep: bool = False,
        shift: Mapping[str, torch.Tensor] | None = None,
    ) -> Loaded:
        """The layers ``names`` of one source, ready for the math.

        Args:
            check: look for NaN/Inf (``False`` for a source an earlier pass already checked; with
                ``check_finite`` off, dense layers are still cleaned, since the cleaning is not kept).
            keep: offer what was read to the cache.
            shift: per dense layer, a matrix to subtract (see :meth:`cast`).

        With ``reuse_buffers``, stacks that the cache does not keep are written, already cast,
        into buffers the next ``read`` overwrites: a pass that streams gigabytes then costs no
        fresh pages per source (a new 40 MB tensor costs more in page faults than its cast).
        """
        key = tuple(names)
        stored = self._cache.get(source.name, key)
        if stored is None:
            scratch = self._reuse and not (keep and self._cache.enabled)
            stored = self._stack(source.load(names), names, scratch=scratch)
            if keep:
                self._cache.offer(source.name, key, stored)
        loaded = Loaded(
            single={
                name: self.cast(matrix, source.name, name, check=check, shift=shift)
                for name, matrix in stored.single.items()
            }
        )
        for stack in stored.stacks:
            stack = stack.to(self.dtype)
            if check and not stack.all_finite():
                self._refuse_first_non_finite(stack, source.name)
            loaded.stacks.append(stack)
        return loaded

    def _stack(self, raw: Mapping[str, LayerMatrix], names: Sequence[str], *, scratch: bool) -> Loaded:
        """Same-shaped LoRA updates stacked on the build device.

        In the dtype they were stored in, for the cache (float32 factors cached for a float64
        build take half the memory, and a cast per pass is cheap next to the products); or,
        with ``scratch``, cast while copied into the reused buffers.
        """
        stored = Loaded()
        groups: dict[tuple, list[str]] = {}
        for name in names:
            matrix = raw[name]
            if isinstance(matrix, Factored):
                groups.setdefault(
                    (tuple(matrix.lora_b.shape), tuple(matrix.lora_a.shape), matrix.lora_b.dtype), []
                ).append(name)
            else:
                stored.single[name] = matrix
        for number, members in enumerate(groups.values()):
            matrices: list[Factored] = [raw[n] for n in members]  # type: ignore[misc]
            buffers = None
            if scratch:
                buffers = (
                    self._buffer((number, "b", len(members), *matrices[0].lora_b.shape)),
                    self._buffer((number, "a", len(members), *matrices[0].lora_a.shape)),
                )
            stored.stacks.append(FactoredStack.of(members, matrices, self.device, into=buffers))
        return stored

    def _buffer(self, key: tuple) -> torch.Tensor:
        if key not in self._scratch:
            self._scratch[key] = torch.empty(key[2:], dtype=self.dtype, device=self.device)
        return self._scratch[key]

    def cast(
        self,
        matrix: LayerMatrix,
        source: str,
        layer: str,
        *,
        check: bool = True,
        shift: Mapping[str, torch.Tensor] | None = None,
    ) -> LayerMatrix:
        """One matrix on the build's device and precision, with non-finite values refused (or zeroed).

        A dense layer named in ``shift`` comes back minus its shift: centred sums taken
        about a nearby point (one source of the collection) do not cancel catastrophically,
        where sums about zero would lose a fine-tune's small deltas under the weights' size.
        With ``reuse_buffers``, a dense layer that has to be copied (cast or shifted) is
        written into its layer's reused buffer, valid until the next read of that layer.
        """
        shifted = shift is not None and layer in shift and isinstance(matrix, Dense)
        moved, owned = self._move(matrix, layer, copy=shifted)
        if not ((not check and self.check_finite) or all(all_finite(part) for part in moved.parts)):
            if self.check_finite:
                raise NonFiniteError(f"tensor {layer} holds NaN or Inf", source=source)
            if isinstance(moved, Dense):
                clean = torch.nan_to_num_ if owned else torch.nan_to_num
                moved = Dense(clean(moved.value, nan=0.0, posinf=0.0, neginf=0.0))
                owned = True
            # a LoRA update with NaN factors has no finite canonical form; eigh reports it
        if shifted:
            value = moved.value.sub_(shift[layer]) if owned else moved.value - shift[layer]  # type: ignore[union-attr, index]
            return Dense(value)
        return moved

    def _move(self, matrix: LayerMatrix, layer: str, *, copy: bool) -> tuple[LayerMatrix, bool]:
        """The matrix on the build's device and dtype, and whether the tensor is the reader's own."""
        if not (self._reuse and isinstance(matrix, Dense)):
            return matrix.to(self.device, self.dtype), False
        value = matrix.value
        if not copy and value.dtype == self.dtype and value.device == self.device:
            return matrix, False
        buffer = self._buffer(("dense", layer, *value.shape))
        return Dense(buffer.copy_(value)), True

    def finite_rows(self, value: torch.Tensor, source: str, layer: str) -> torch.Tensor:
        """Rows of a dense layer, with non-finite values refused (or zeroed)."""
        if all_finite(value):
            return value
        if self.check_finite:
            raise NonFiniteError(f"tensor {layer} holds NaN or Inf", source=source)
        return torch.nan_to_num(value, nan=0.0, posinf=0.0, neginf=0.0)

    def _refuse_first_non_finite(self, stack: FactoredStack, source: str) -> None:
        if not self.check_finite:
            return  # a LoRA update with NaN factors has no finite canonical form; the solver reports it
        for index, name in enumerate(stack.names):
            if not (all_finite(stack.lora_b[index]) and all_finite(stack.lora_a[index])):
                raise NonFiniteError(f"tensor {name} holds NaN or Inf", source=source)
