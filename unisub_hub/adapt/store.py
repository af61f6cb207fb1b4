"""Per-task tensors of one shape, for one wrapped module: trainable ones apart, frozen ones packed.

A task that trains needs its own ``nn.Parameter`` (an optimizer steps it alone). A task that
is only served does not, and a tensor object costs about 0.6 KiB of memory beyond its data
(measured: 1,000 B per 8x8 float parameter against 394 B per row of one slab): for a
thousand tasks of kilobytes each that overhead is most of what they weigh. So frozen tasks
are rows of one slab per module (a buffer that follows the model's device and dtype), grown
by doubling and reused after removal, and a mixed batch gathers its rows in one indexing op.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import cast

import torch
from torch import nn

__all__ = ["TaskTensors"]


class TaskTensors(nn.Module):
    """A task key -> tensor map: parameters for trainable tasks, slab rows for frozen ones.

    A trainable task's parameter is registered under its key, so it is named as in an
    ``nn.ParameterDict`` (``<module>.coefficients.task0``)."""

    slab: torch.Tensor

    def __init__(self, shape: Sequence[int], like: torch.Tensor) -> None:
        super().__init__()
        self.shape = tuple(shape)
        self.register_buffer(
            "slab", torch.empty(0, *self.shape, dtype=like.dtype, device=like.device), persistent=False
        )
        self.rows: dict[str, int] = {}
        self._free: list[int] = []

    def add(self, key: str, value: torch.Tensor, *, frozen: bool = False) -> nn.Parameter | None:
        """Store ``value`` (copied, in the slab's device and dtype) for ``key``; its parameter unless ``frozen``."""
        if key in self:
            del self[key]
        if not frozen:
            parameter = nn.Parameter(value.detach().to(self.slab).clone())
            self.register_parameter(key, parameter)
            return parameter
        if not self._free:
            grown = max(4, 2 * len(self.slab))
            slab = torch.zeros(grown, *self.shape, dtype=self.slab.dtype, device=self.slab.device)
            slab[: len(self.slab)] = self.slab
            self._free = list(range(grown - 1, len(self.slab) - 1, -1))
            self.slab = slab
        row = self._free.pop()
        with torch.no_grad():
            self.slab[row].copy_(value)  # converts dtype and device in the one call
        self.rows[key] = row
        return None

    def nbytes(self, key: str) -> int:
        """Bytes ``key``'s tensor holds (a slab row's share of the slab for a frozen task)."""
        if key in self.rows:
            return math.prod(self.shape) * self.slab.element_size()
        parameter = self._parameters[key]
        return 0 if parameter is None else parameter.numel() * parameter.element_size()

    def parameter(self, key: str) -> nn.Parameter | None:
        """The task's parameter, or ``None`` for a frozen task."""
        return self._parameters.get(key)

    def __getitem__(self, key: str) -> torch.Tensor:
        if key in self.rows:
            return self.slab[self.rows[key]]
        return cast(nn.Parameter, self._parameters[key])  # add() never registers None

    def __contains__(self, key: object) -> bool:
        return key in self.rows or key in self._parameters

    def __delitem__(self, key: str) -> None:
        if key in self.rows:
            self._free.append(self.rows.pop(key))
        else:
            del self._parameters[key]

    def __iter__(self) -> Iterator[str]:
        yield from self._parameters
        yield from self.rows

    def __len__(self) -> int:
        return len(self.rows) + len(self._parameters)

    def stack(self, keys: Sequence[str]) -> torch.Tensor:
        """The tensors of ``keys``, stacked (one gather when every one is frozen)."""
        if all(key in self.rows for key in keys):
            index = torch.tensor([self.rows[key] for key in keys], device=self.slab.device)
            return self.slab.index_select(0, index)
        return torch.stack([self[key] for key in keys])
