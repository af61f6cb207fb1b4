"""A build streams: no more than one source's bytes (or one row block of each) are alive at any moment."""

from __future__ import annotations

import weakref

import torch
from conftest import planted_collection

from unisub_hub.engine import BuildOptions, LayerSpec, RankRule, build_basis
from unisub_hub.engine.matrix import Dense, matrix_view

SHAPES = {"a.weight": (40, 30), "b.weight": (30, 40), "c.weight": (16, 8, 3)}


class CountingSource:
    """Hands out fresh float32 copies and counts the bytes alive across all sources."""

    kind = "checkpoint"
    factored = False
    live = 0
    peak = 0

    def __init__(self, inner):
        self.inner = inner
        self.name = inner.name

    @classmethod
    def _track(cls, tensor: torch.Tensor) -> torch.Tensor:
        size = tensor.numel() * tensor.element_size()
        cls.live += size
        cls.peak = max(cls.peak, cls.live)
        weakref.finalize(tensor, cls._release, size)
        return tensor

    @classmethod
    def _release(cls, size: int) -> None:
        cls.live -= size

    def load(self, names):
        return {n: Dense(self._track(matrix_view(self.inner.tensors[n]).float().clone())) for n in names}

    def load_rows(self, name, start, stop):
        return self._track(matrix_view(self.inner.tensors[name])[start:stop].float().clone())


ONE_SOURCE = sum(4 * torch.Size(shape).numel() for shape in SHAPES.values())  # float32 bytes of one source's layers


def test_build_holds_at_most_one_source_at_a_time():
    sources = [CountingSource(s) for s in planted_collection(30, SHAPES)]
    specs = [LayerSpec(n, s) for n, s in SHAPES.items()]
    CountingSource.live = CountingSource.peak = 0
    build_basis(specs, sources[:25], holdout=sources[25:], options=BuildOptions(rank=RankRule(k=4)))
    assert CountingSource.live == 0
    assert CountingSource.peak <= ONE_SOURCE, (
        f"{CountingSource.peak} bytes of sources were alive at once, one source has {ONE_SOURCE}"
    )


def test_flat_mode_holds_one_row_block_of_each_source():
    sources = [CountingSource(s) for s in planted_collection(12, SHAPES)]
    specs = [LayerSpec(n, s) for n, s in SHAPES.items()]
    CountingSource.live = CountingSource.peak = 0
    budget = 12 * 30 * 8 * 4
    result = build_basis(specs, sources, options=BuildOptions(modes=(1,), rank=RankRule(k=3), max_memory=budget))
    assert result.report.passes > 2 * len(SHAPES)  # several row blocks per layer
    # The quality pass loads one source's layers; the Gram passes one block of each source, under the budget.
    assert CountingSource.peak <= max(ONE_SOURCE, budget), (
        f"{CountingSource.peak} bytes alive (one source {ONE_SOURCE}, budget {budget})"
    )
