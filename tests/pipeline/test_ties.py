"""Tied tensors stored twice are decomposed once and written back as a copy."""

from __future__ import annotations

import json

import pytest
import torch
from clitools import refused, run
from safetensors.torch import load_file, save_file

from unisub_hub.errors import FormatError
from unisub_hub.format import load_coefficients, read_artifact
from unisub_hub.format.checks import check_tensor_table


def _tied_members(folder, count, untie=()):
    """GPT-2-like checkpoints whose lm_head equals wte in every member (but those in ``untie``)."""
    gen = torch.Generator().manual_seed(0)
    base = {
        "transformer.wte.weight": torch.randn(20, 8, generator=gen),
        "transformer.h.0.attn.c_attn.weight": torch.randn(8, 24, generator=gen),
    }
    paths = []
    for m in range(count):
        tensors = {name: value + 0.1 * torch.randn(value.shape, generator=gen) for name, value in base.items()}
        tensors["lm_head.weight"] = tensors["transformer.wte.weight"].clone() + (0.5 if m in untie else 0.0)
        path = folder / f"m{m}"
        path.mkdir(parents=True)
        save_file(tensors, path / "model.safetensors")
        paths.append(path)
    return paths


def test_a_tied_head_is_decomposed_once_and_restored_as_a_copy(tmp_path):
    paths = _tied_members(tmp_path, 5, untie={4})
    built = json.loads(
        run(
            "build", *paths[:4], "--out", tmp_path / "basis", "--modes", "1", "--k", "3", "--no-register", "--json"
        ).stdout
    )
    assert sorted(built["layers"]) == ["transformer.h.0.attn.c_attn.weight", "transformer.wte.weight"]
    assert built["passthrough"]["lm_head.weight"].startswith("tied to transformer.wte.weight")
    assert json.loads((tmp_path / "basis" / "unisub_basis.json").read_text())["tied"] == {
        "lm_head.weight": "transformer.wte.weight"
    }
    run("project", paths[1], "--basis", tmp_path / "basis", "--out", tmp_path / "task", "--no-register")
    task = load_coefficients(tmp_path / "task")
    assert task.manifest["tied"] == {"lm_head.weight": "transformer.wte.weight"} and task.passthrough_names == []
    run("materialize", tmp_path / "task", "--basis", tmp_path / "basis", "--out", tmp_path / "model")
    rebuilt, original = load_file(tmp_path / "model" / "model.safetensors"), load_file(paths[1] / "model.safetensors")
    assert torch.equal(rebuilt["lm_head.weight"], rebuilt["transformer.wte.weight"])
    torch.testing.assert_close(rebuilt["lm_head.weight"], original["lm_head.weight"], atol=1e-5, rtol=1e-5)
    # a member that untied them keeps its own head, whole
    run("project", paths[4], "--basis", tmp_path / "basis", "--out", tmp_path / "untied", "--no-register")
    untied = load_coefficients(tmp_path / "untied")
    assert "tied" not in untied.manifest and untied.passthrough_names == ["lm_head.weight"]


def test_a_tie_edited_into_a_manifest_is_refused(tmp_path):
    paths = _tied_members(tmp_path, 4)
    run("build", *paths[:3], "--out", tmp_path / "basis", "--modes", "1", "--k", "2", "--no-register")
    run("project", paths[3], "--basis", tmp_path / "basis", "--out", tmp_path / "task", "--no-register")
    manifest_path = tmp_path / "task" / "unisub_coefficients.json"
    pristine = read_artifact(tmp_path / "task")
    manifest = json.loads(manifest_path.read_text())
    manifest["tied"] = {"lm_head.weight": "transformer.h.0.attn.c_attn.weight"}  # another target: the meaning changed
    manifest_path.write_text(json.dumps(manifest))
    refused(
        ["materialize", tmp_path / "task", "--basis", tmp_path / "basis", "--out", tmp_path / "model"],
        "the manifest does not say what coefficients.safetensors says its tensors mean",
    )
    pristine.manifest = {
        **pristine.manifest,
        "tied": {"lm_head.weight": "nothing.weight"},
    }  # as a set without a meaning table would read
    with pytest.raises(FormatError, match="tie lm_head.weight -> nothing.weight"):
        check_tensor_table(pristine)
