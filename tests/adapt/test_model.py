"""Tasks learned as coefficients on a frozen basis: gradients, teachers, save/load, mixed batches."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from unisub_hub.adapt import attach
from unisub_hub.engine import reconstruct_layer
from unisub_hub.errors import AdaptError
from unisub_hub.format import load_coefficients
from unisub_hub.pipeline.build import BuildSettings, build


def _zoo(folder: Path, module: nn.Module, count: int, *, seed: int = 0) -> list[str]:
    """``count`` checkpoints of ``module``: its weights plus a shared rank-2 update per matrix, plus noise."""
    gen = torch.Generator().manual_seed(seed)
    state = {k: v.detach().clone() for k, v in module.state_dict().items()}
    shared = {
        k: (torch.randn(v.shape[0], 2, generator=gen), torch.randn(2, v[0].numel(), generator=gen))
        for k, v in state.items()
        if v.ndim >= 2
    }
    paths = []
    for m in range(count):
        tensors = {}
        for key, value in state.items():
            if key in shared:
                left, right = shared[key]
                update = (left @ torch.randn(2, 2, generator=gen) @ right).reshape(value.shape) * 0.1
                tensors[key] = (value + update + 1e-3 * torch.randn(value.shape, generator=gen)).contiguous()
            else:
                tensors[key] = (value + 0.01 * torch.randn(value.shape, generator=gen)).contiguous()
        path = folder / f"m{m}"
        path.mkdir(parents=True)
        save_file(tensors, path / "model.safetensors")
        paths.append(str(path))
    return paths


def _mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 3))


@pytest.fixture(scope="module")
def mlp_basis(tmp_path_factory):
    root = tmp_path_factory.mktemp("mlp")
    paths = _zoo(root, _mlp(), 6)
    return build(paths, root / "basis", BuildSettings(k=3, device="cpu", include=["0.weight"])).basis


def test_only_coefficients_and_heads_receive_gradients_and_change(mlp_basis):
    model = _mlp()
    adapter = attach(model, mlp_basis, heads=["2"])
    adapter.add_task("t")
    frozen = {name: value.detach().clone() for name, value in model.named_parameters() if not value.requires_grad}
    trainable = {name for name, value in model.named_parameters() if value.requires_grad}
    assert trainable == {"0.coefficients.task0", "2.weights.task0", "2.biases.task0"}
    assert {id(p) for p in adapter.parameters()} == {id(p) for n, p in model.named_parameters() if n in trainable}
    assert not any(
        name.startswith("0.") and "left" in name for name, _ in model.named_parameters()
    )  # directions are buffers
    optimizer = torch.optim.SGD(adapter.parameters(), lr=0.1)
    x = torch.randn(32, 8)
    for _ in range(3):
        loss = model(x).square().mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    for name, value in model.named_parameters():
        if name in frozen:
            assert torch.equal(value, frozen[name]), name
    assert float(adapter.layers["0.weight"].coefficients["task0"].detach().abs().sum()) > 0


def test_zero_start_is_the_basis_mean_and_trained_weights_follow_the_format(mlp_basis):
    model = _mlp()
    adapter = attach(model, mlp_basis)
    adapter.add_task("t")
    layer = mlp_basis.layer("0.weight", dtype=torch.float64)
    x = torch.randn(5, 8, dtype=torch.float64)
    coef = torch.randn(layer.coefficient_shape(), dtype=torch.float64)
    with torch.no_grad():
        adapter.layers["0.weight"].coefficients["task0"].copy_(coef)
    expected = x @ reconstruct_layer(layer, coef).T + model[0].base.bias.double()
    torch.testing.assert_close(model[0](x.float()).double(), expected, rtol=1e-5, atol=1e-5)


def test_a_teacher_inside_the_basis_is_recovered(mlp_basis):
    teacher = _mlp()
    teaching = attach(teacher, mlp_basis)
    teaching.add_task("teacher")
    gen = torch.Generator().manual_seed(7)
    truth = torch.randn(3, 3, generator=gen)
    with torch.no_grad():
        teaching.layers["0.weight"].coefficients["task0"].copy_(truth)
    x = torch.randn(256, 8, generator=gen)
    with torch.no_grad():
        target = teacher(x)
    student = _mlp()
    adapter = attach(student, mlp_basis)
    adapter.add_task("student")
    optimizer = torch.optim.Adam(adapter.parameters(), lr=0.05)
    for _ in range(400):
        loss = (student(x) - target).square().mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert float(loss) < 1e-7
    torch.testing.assert_close(adapter.layers["0.weight"].coefficients["task0"].detach(), truth, rtol=1e-3, atol=1e-3)


def _train(adapter, model, steps: int, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.SGD(adapter.parameters(), lr=0.05)
    for _ in range(steps):
        x = torch.randn(16, 8, generator=gen)
        loss = (model(x) - x[:, :3]).square().mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


def test_save_load_and_continue_equals_uninterrupted_training(mlp_basis, tmp_path):
    whole_model = _mlp()
    whole = attach(whole_model, mlp_basis, heads=["2"])
    whole.add_task("t")
    _train(whole, whole_model, 10, seed=1)
    _train(whole, whole_model, 10, seed=2)

    first_model = _mlp()
    first = attach(first_model, mlp_basis, heads=["2"])
    first.add_task("t")
    _train(first, first_model, 10, seed=1)
    saved = first.save_task(tmp_path / "t", training={"steps": 10, "hyperparameters": {"lr": 0.05}})
    manifest = load_coefficients(saved.path, verify=True).manifest
    assert manifest["lineage"] == "trained" and manifest["training"]["steps"] == 10
    assert manifest["basis"]["content_id"] == mlp_basis.content_id
    assert {"2.weight", "2.bias", "0.bias"} <= set(saved.passthrough_names)

    second_model = _mlp()
    second = attach(second_model, mlp_basis, heads=["2"])
    assert second.load_task(saved.path) == "t"
    _train(second, second_model, 10, seed=2)
    for a, b in zip(whole.parameters(), second.parameters(), strict=True):
        assert torch.equal(a, b)


def test_load_task_takes_a_registry_name_as_attach_takes_the_basis(mlp_basis, tmp_path, isolated_home):
    from unisub_hub.registry import Registry

    model = _mlp()
    adapter = attach(model, mlp_basis, heads=["2"])
    adapter.add_task("food-task")
    _train(adapter, model, 3, seed=1)
    saved = adapter.save_task(tmp_path / "saved")
    registry = Registry()
    registry.add(mlp_basis.path)
    registry.add(saved.path)
    again = attach(_mlp(), mlp_basis, heads=["2"])
    assert again.load_task("food-task") == "food-task"  # the name the README shows
    assert again.task_bytes("food-task") == adapter.task_bytes("food-task")


def test_mixed_task_batch_equals_each_task_alone(mlp_basis):
    model = _mlp()
    adapter = attach(model, mlp_basis, heads=["2"])
    gen = torch.Generator().manual_seed(3)
    for name in ("a", "b", "c"):
        adapter.add_task(name)
        with torch.no_grad():
            for parameter in adapter.parameters(name):
                parameter.add_(torch.randn(parameter.shape, generator=gen))
    x = torch.randn(6, 8, generator=gen)
    names = ["b", "a", "c", "c", "a", "b"]
    with torch.no_grad(), adapter.per_example(names):
        mixed = model(x)
    for row, name in enumerate(names):
        adapter.set_task(name)
        with torch.no_grad():
            torch.testing.assert_close(mixed[row], model(x[row : row + 1])[0])


def test_wrong_model_and_foreign_tasks_are_refused(mlp_basis, tmp_path):
    with pytest.raises(AdaptError, match="wrong model for this basis"):
        attach(nn.ModuleDict({"encoder": nn.Linear(8, 16)}), mlp_basis)
    with pytest.raises(AdaptError, match="a Conv1d cannot carry"):
        attach(nn.Sequential(nn.Conv1d(8, 16, 1)), mlp_basis)
    with pytest.raises(AdaptError, match=r"weight is \(16, 9\)"):
        attach(nn.Sequential(nn.Linear(9, 16)), mlp_basis)
    untouched = nn.Sequential(nn.Linear(9, 16))
    before = untouched[0].weight.detach().clone()
    with pytest.raises(AdaptError):
        attach(untouched, mlp_basis)
    assert (
        isinstance(untouched[0], nn.Linear)
        and torch.equal(untouched[0].weight, before)
        and untouched[0].weight.requires_grad
    )
    model = _mlp()
    adapter = attach(model, mlp_basis)
    with pytest.raises(AdaptError, match="no task 'x'"):
        adapter.set_task("x")
    with pytest.raises(AdaptError, match="has no mean"):
        other = build(
            _zoo(tmp_path, _mlp(), 4, seed=5),
            tmp_path / "uncentred",
            BuildSettings(k=2, device="cpu", include=["0.weight"], center=False),
        ).basis
        attach(_mlp(), other).add_task("t", init="mean")


def test_a_saved_task_holding_nan_is_refused_on_load(mlp_basis, tmp_path):
    from unisub_hub.format import save_coefficients

    layer = mlp_basis.layer("0.weight")
    poisoned = save_coefficients(
        tmp_path / "nan-task",
        {"0.weight": torch.full(layer.coefficient_shape(), float("nan"))},
        {},
        name="nan-task",
        basis_manifest=mlp_basis.manifest,
    )
    adapter = attach(_mlp(), mlp_basis)
    with pytest.raises(AdaptError, match="coefficients of layer 0.weight hold NaN or Inf"):
        adapter.load_task(poisoned.path)
    assert adapter.tasks == []
