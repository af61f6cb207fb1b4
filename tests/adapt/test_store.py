"""Frozen tasks packed in slabs: the same outputs as trainable ones, rows reused, nothing to train."""

from __future__ import annotations

import pytest
import torch
from test_model import _mlp, mlp_basis  # noqa: F401 (the module's fixture)

from unisub_hub.adapt import attach
from unisub_hub.adapt.store import TaskTensors


def _saved_tasks(basis, folder, count: int) -> list:
    model = _mlp()
    adapter = attach(model, basis, heads=["2"])
    gen = torch.Generator().manual_seed(11)
    saved = []
    for number in range(count):
        adapter.add_task(f"t{number}")
        with torch.no_grad():
            for parameter in adapter.parameters(f"t{number}"):
                parameter.add_(torch.randn(parameter.shape, generator=gen))
        saved.append(adapter.save_task(folder / f"t{number}"))
    return saved


def test_frozen_tasks_compute_what_trainable_ones_do_alone_and_mixed(mlp_basis, tmp_path):  # noqa: F811
    saved = _saved_tasks(mlp_basis, tmp_path, 3)
    outputs = {}
    x = torch.randn(6, 8, generator=torch.Generator().manual_seed(2))
    names = ["t1", "t0", "t2", "t2", "t0", "t1"]
    for frozen in (False, True):
        model = _mlp()
        adapter = attach(model, mlp_basis, heads=["2"])
        for task in saved:
            adapter.load_task(task, frozen=frozen)
        with torch.no_grad(), adapter.per_example(names):
            mixed = model(x)
        alone = []
        for name in ("t0", "t1", "t2"):
            adapter.set_task(name)
            with torch.no_grad():
                alone.append(model(x))
        outputs[frozen] = (mixed, alone)
        if frozen:
            assert adapter.parameters("t0") == [] and not any(p.requires_grad for p in model.parameters())
    torch.testing.assert_close(outputs[True][0], outputs[False][0], rtol=0, atol=0)
    for frozen_out, trainable_out in zip(outputs[True][1], outputs[False][1], strict=True):
        torch.testing.assert_close(frozen_out, trainable_out, rtol=0, atol=0)


def test_rows_are_reused_after_removal_and_kept_when_the_slab_grows():
    store = TaskTensors((2, 3), torch.zeros(1))
    values = {f"task{n}": torch.full((2, 3), float(n)) for n in range(9)}
    for key, value in values.items():
        assert store.add(key, value, frozen=True) is None
    assert len(store.slab) == 16 and sorted(store) == sorted(values)  # 4 -> 8 -> 16 rows
    for key, value in values.items():
        assert torch.equal(store[key], value)
    row = store.rows["task3"]
    del store["task3"]
    store.add("task9", torch.full((2, 3), 9.0), frozen=True)
    assert store.rows["task9"] == row and "task3" not in store and len(store.slab) == 16
    stacked = store.stack(["task9", "task0", "task8"])
    assert torch.equal(stacked, torch.stack([torch.full((2, 3), v) for v in (9.0, 0.0, 8.0)]))


def test_a_trainable_task_is_a_named_parameter_and_mixes_with_frozen_rows():
    store = TaskTensors((2,), torch.zeros(1, dtype=torch.float64))
    parameter = store.add("task0", torch.tensor([1.0, 2.0]))
    store.add("task1", torch.tensor([3.0, 4.0]), frozen=True)
    assert dict(store.named_parameters()) == {"task0": parameter} and parameter.dtype == torch.float64
    assert store.parameter("task1") is None and store.parameter("task0") is parameter
    torch.testing.assert_close(
        store.stack(["task1", "task0"]), torch.tensor([[3.0, 4.0], [1.0, 2.0]], dtype=torch.float64)
    )
    store.to(torch.float32)
    assert store.slab.dtype == torch.float32 and store["task1"].dtype == torch.float32
    with pytest.raises(KeyError):
        store["task7"]
