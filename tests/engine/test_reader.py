"""The build's source reader: stacking by shape, NaN/Inf handling and the cache's budget."""

from __future__ import annotations

import pytest
import torch

from unisub_hub.engine.matrix import Dense
from unisub_hub.engine.reader import SourceReader
from unisub_hub.errors import NonFiniteError
from unisub_hub.io.memory import InMemoryCheckpoint, InMemoryLora


class CountingLora(InMemoryLora):
    loads = 0

    def load(self, names):  # noqa: ANN001, ANN201
        CountingLora.loads += 1
        return super().load(names)


def _lora(name: str, ranks: dict[str, int], *, poison: str | None = None) -> CountingLora:
    gen = torch.Generator().manual_seed(len(name))
    factors = {}
    for layer, r in ranks.items():
        lora_b, lora_a = torch.randn(16, r, generator=gen), torch.randn(r, 12, generator=gen)
        if layer == poison:
            lora_b[0, 0] = float("nan")
        factors[layer] = (lora_b, lora_a, 2.0)
    return CountingLora(name, factors)


def test_updates_of_one_shape_and_rank_share_a_stack():
    reader = SourceReader(torch.device("cpu"), torch.float64, check_finite=True)
    loaded = reader.read(_lora("a", {"x": 4, "y": 8, "z": 4}), ["x", "y", "z"], check=True)
    assert sorted(stack.names for stack in loaded.stacks) == [("x", "z"), ("y",)]
    assert all(stack.lora_b.dtype == torch.float64 for stack in loaded.stacks)
    assert sorted(name for stack in loaded.stacks for name in stack.names) + sorted(loaded.single) == ["x", "y", "z"]


def test_non_finite_factors_are_refused_by_name():
    reader = SourceReader(torch.device("cpu"), torch.float32, check_finite=True)
    with pytest.raises(NonFiniteError, match="tensor y holds NaN"):
        reader.read(_lora("a", {"x": 4, "y": 4}, poison="y"), ["x", "y"], check=True)
    reader.read(_lora("a", {"x": 4, "y": 4}, poison="y"), ["x", "y"], check=False)  # an earlier pass checked it


def test_dense_nan_is_zeroed_on_every_pass_when_not_refused():
    source = InMemoryCheckpoint("c", {"w": torch.tensor([[1.0, float("nan")], [2.0, 3.0]])})
    reader = SourceReader(torch.device("cpu"), torch.float64, check_finite=False)
    for check in (True, False):
        matrix = reader.read(source, ["w"], check=check).single["w"]
        assert isinstance(matrix, Dense) and bool(torch.isfinite(matrix.value).all())


def test_cache_serves_later_passes_when_the_collection_fits():
    sources = [_lora(f"s{i}", {"x": 4}) for i in range(3)]
    reader = SourceReader(torch.device("cpu"), torch.float32, check_finite=True, cache_budget=1 << 20, source_count=3)
    CountingLora.loads = 0
    for _ in range(3):
        for source in sources:
            reader.read(source, ["x"], check=True, keep=True)
    assert CountingLora.loads == 3


def test_cache_gives_up_at_the_first_source_when_the_estimate_is_over_budget():
    sources = [_lora(f"s{i}", {"x": 4}) for i in range(3)]
    one = 4 * 4 * (16 + 12)
    reader = SourceReader(torch.device("cpu"), torch.float32, check_finite=True, cache_budget=2 * one, source_count=3)
    CountingLora.loads = 0
    reader.read(sources[0], ["x"], check=True, keep=True)
    assert reader.read(sources[0], ["x"], check=True, keep=True) is not None
    assert CountingLora.loads == 2  # nothing kept: three sources would not fit


@pytest.mark.parametrize(
    ("value", "finite"),
    [(1.0, True), (3e30, True), (float("nan"), False), (float("inf"), False), (float("-inf"), False)],
)
def test_all_finite_is_exact_even_when_the_norm_overflows(value, finite):
    from unisub_hub.engine import all_finite

    tensor = torch.ones(64, 32, dtype=torch.float32)
    tensor[7, 3] = value
    tensor[9, 1] = 3e30 if value == 3e30 else 1.0  # two 3e30 entries overflow the float32 norm
    assert all_finite(tensor) is finite
