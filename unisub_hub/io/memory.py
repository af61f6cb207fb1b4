"""Sources held in memory: handy for tests, notebooks and models built on the fly."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from ..engine.matrix import Dense, Factored, matrix_view

__all__ = ["InMemoryCheckpoint", "InMemoryLora"]


class InMemoryCheckpoint:
    """A full checkpoint given as ``{tensor name: tensor}``."""

    kind = "checkpoint"
    factored = False

    def __init__(self, name: str, tensors: Mapping[str, torch.Tensor]) -> None:
        self.name = name
        self.tensors = dict(tensors)

    def tensor(self, name: str) -> torch.Tensor:
        """One tensor as given.

        As :meth:`CheckpointSource.tensor <unisub_hub.io.checkpoint.CheckpointSource.tensor>` reads one.
        """
        return self.tensors[name]

    def load(self, names: Sequence[str]) -> dict[str, Dense]:
        return {n: Dense(matrix_view(self.tensors[n])) for n in names}

    def load_rows(self, name: str, start: int, stop: int) -> torch.Tensor:
        return matrix_view(self.tensors[name])[start:stop]


class InMemoryLora:
    """A LoRA adapter given as ``{base weight name: (lora_B, lora_A, scale)}``."""

    kind = "lora"
    factored = True

    def __init__(self, name: str, factors: Mapping[str, tuple[torch.Tensor, torch.Tensor, float]]) -> None:
        self.name = name
        self.factors = dict(factors)

    def load(self, names: Sequence[str]) -> dict[str, Factored]:
        """The updates in raw factors, as :class:`~unisub_hub.io.peft_adapter.LoraSource` gives them."""
        return {n: Factored(*self.factors[n]) for n in names}

    def load_rows(self, name: str, start: int, stop: int) -> torch.Tensor:
        lora_b, lora_a, scale = self.factors[name]
        return (lora_b[start:stop].double() @ lora_a.double()) * scale
