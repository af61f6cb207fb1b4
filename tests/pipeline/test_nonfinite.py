"""NaN and Inf are refused by project and materialize before anything is written."""

from __future__ import annotations

import json

import pytest
import torch
from models import save_adapters, save_base
from safetensors.torch import load_file, save_file

from unisub_hub.errors import NonFiniteError, SourceError
from unisub_hub.format import save_coefficients
from unisub_hub.pipeline.build import BuildSettings, build
from unisub_hub.pipeline.materialize import materialize
from unisub_hub.pipeline.project import project


def _checkpoints(root, count):
    gen = torch.Generator().manual_seed(0)
    paths = []
    for m in range(count):
        folder = root / f"m{m}"
        folder.mkdir()
        save_file(
            {"w": torch.randn(6, 5, generator=gen), "b": torch.randn(6, generator=gen)}, folder / "model.safetensors"
        )
        paths.append(folder)
    return paths


@pytest.mark.parametrize("tensor", ["w", "b"])
def test_project_refuses_nan_in_a_layer_or_a_passthrough_tensor(tmp_path, tensor):
    paths = _checkpoints(tmp_path, 4)
    basis = build([str(p) for p in paths[:3]], tmp_path / "basis", BuildSettings(k=2, device="cpu")).basis
    tensors = load_file(paths[3] / "model.safetensors")
    tensors[tensor][0, ...] = float("nan")
    save_file(tensors, paths[3] / "model.safetensors")
    with pytest.raises(NonFiniteError, match=f"tensor {tensor} holds NaN or Inf"):
        project(str(paths[3]), basis, tmp_path / "task", device="cpu")
    assert not (tmp_path / "task").exists()


def test_project_refuses_an_overflowing_lora_alpha(tmp_path):
    base = save_base(tmp_path / "base")
    adapters = save_adapters(base, tmp_path, 4)
    basis = build([str(p) for p in adapters[:3]], tmp_path / "basis", BuildSettings(k=2, device="cpu")).basis
    config = json.loads((adapters[3] / "adapter_config.json").read_text())
    config["lora_alpha"] = float("inf")
    (adapters[3] / "adapter_config.json").write_text(json.dumps(config).replace("Infinity", "1e999"))
    with pytest.raises(
        SourceError, match="lora-3: adapter_config.json: lora_alpha must be a finite non-zero number, got inf"
    ):
        project(str(adapters[3]), basis, tmp_path / "task", device="cpu")
    assert not (tmp_path / "task").exists()


def test_materialize_refuses_coefficients_that_rebuild_to_nan(tmp_path):
    paths = _checkpoints(tmp_path, 4)
    basis = build([str(p) for p in paths[:3]], tmp_path / "basis", BuildSettings(k=2, device="cpu")).basis
    coef = torch.full(basis.layer("w").coefficient_shape(), float("nan"))
    task = save_coefficients(
        tmp_path / "task", {"w": coef}, {"b": torch.zeros(6)}, name="task", basis_manifest=basis.manifest
    )
    with pytest.raises(NonFiniteError, match="layer w rebuilds to NaN or Inf"):
        materialize(task, basis, tmp_path / "out", device="cpu")
    assert not (tmp_path / "out").exists()
