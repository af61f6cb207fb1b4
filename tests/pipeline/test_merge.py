"""``merge``: exact where it can be, heads never averaged silently, lineage, refusals that leave nothing."""

from __future__ import annotations

import json

import pytest
import torch
from clitools import SHAPES, refused, run, write_checkpoints

from unisub_hub.engine import reconstruct_layer
from unisub_hub.format import load_basis, load_coefficients


@pytest.fixture
def zoo(tmp_path):
    models = write_checkpoints(tmp_path / "zoo", 7, SHAPES)
    run("build", *models[:4], "--out", tmp_path / "basis", "--k", "2", "--name", "b")
    for number in (4, 5, 6):
        run("project", models[number], "--basis", "b", "--out", tmp_path / f"t{number}")
    return models


def updates(task, basis):
    return {
        layer: reconstruct_layer(basis.layer(layer, dtype=torch.float64), task.coefficient(layer).double())
        for layer in task.layer_names
    }


def test_a_linear_merge_is_the_weighted_sum_of_coefficients_and_of_updates(zoo, tmp_path):
    result = json.loads(
        run("merge", "t4", "t5", "t6", "--weights", "0.5,0.3,0.2", "--out", tmp_path / "m", "--json").stdout
    )
    basis = load_basis(tmp_path / "basis")
    merged = load_coefficients(tmp_path / "m")
    parts = [load_coefficients(tmp_path / f"t{n}") for n in (4, 5, 6)]
    weights = [0.5, 0.3, 0.2]
    for layer in merged.layer_names:
        expected = sum(w * p.coefficient(layer).double() for w, p in zip(weights, parts, strict=True))
        assert torch.allclose(merged.coefficient(layer).double(), expected, atol=1e-6)
        rebuilt = updates(merged, basis)[layer]
        summed = sum(w * updates(p, basis)[layer] for w, p in zip(weights, parts, strict=True))
        assert float((rebuilt - summed).abs().max()) <= 1e-5 * float(summed.abs().max())
    manifest = merged.manifest
    assert manifest["lineage"] == "merged" and manifest["merge"]["method"] == "linear"
    assert [(m["name"], m["weight"]) for m in manifest["merged_from"]] == [("t4", 0.5), ("t5", 0.3), ("t6", 0.2)]
    assert result["registered"]["kind"] == "task"
    assert run("validate", tmp_path / "m", "--deep", "--against", tmp_path / "basis").exit_code == 0
    run("materialize", "m", "--out", tmp_path / "m-hf", "--base", zoo[0])
    assert (tmp_path / "m-hf" / "model.safetensors").is_file()


def test_ties_and_dare_merges_are_reproducible(zoo, tmp_path):
    first = json.loads(
        run(
            "merge",
            "t4",
            "t5",
            "--method",
            "dare-ties",
            "--density",
            "0.5",
            "--seed",
            "7",
            "--out",
            tmp_path / "a",
            "--no-register",
            "--json",
        ).stdout
    )
    again = json.loads(
        run(
            "merge",
            "t4",
            "t5",
            "--method",
            "dare-ties",
            "--density",
            "0.5",
            "--seed",
            "7",
            "--out",
            tmp_path / "b",
            "--no-register",
            "--json",
        ).stdout
    )
    other = json.loads(
        run(
            "merge",
            "t4",
            "t5",
            "--method",
            "dare-ties",
            "--density",
            "0.5",
            "--seed",
            "8",
            "--out",
            tmp_path / "c",
            "--no-register",
            "--json",
        ).stdout
    )
    assert first["content_id"] == again["content_id"] != other["content_id"]
    assert first["merge"] == {"method": "dare-ties", "density": 0.5, "seed": 7, "weights": [0.5, 0.5], "heads": "none"}


def test_an_iso_merge_flattens_the_spectrum_of_the_weighted_sum(zoo, tmp_path):
    run("merge", "t4", "t5", "t6", "--method", "iso", "--weights", "0.5,0.3,0.2", "--out", tmp_path / "m")
    merged = load_coefficients(tmp_path / "m")
    parts = [load_coefficients(tmp_path / f"t{n}") for n in (4, 5, 6)]
    for layer in merged.layer_names:
        total = sum(w * p.coefficient(layer).double() for w, p in zip((0.5, 0.3, 0.2), parts, strict=True))
        left, values, right = torch.linalg.svd(total)
        expected = values.mean() * left @ right  # the sum of three random tasks has full rank k
        assert torch.allclose(merged.coefficient(layer).double(), expected, atol=1e-6)
    assert merged.manifest["merge"]["method"] == "iso" and merged.manifest["lineage"] == "merged"
    out = tmp_path / "bad"
    refused(
        ["merge", "t4", "t5", "--method", "iso", "--density", "0.5", "--out", out], "iso does not take --density", out
    )


@pytest.mark.parametrize("method", ["linear", "iso"])
def test_a_task_holding_nan_is_refused_with_nothing_written(zoo, tmp_path, method):
    from unisub_hub.errors import MergeError
    from unisub_hub.format import save_coefficients
    from unisub_hub.pipeline.merge import merge

    basis = load_basis(tmp_path / "basis")
    good = load_coefficients(tmp_path / "t4")
    nan = {layer: torch.full_like(good.coefficient(layer), float("nan")) for layer in good.layer_names}
    broken = save_coefficients(tmp_path / "nan", nan, {}, name="nan", basis_manifest=basis.manifest)
    with pytest.raises(MergeError, match="hold NaN or Inf; nothing written"):
        merge([good, broken], basis, tmp_path / "m", method=method)
    assert not (tmp_path / "m").exists()


def test_passthrough_heads_follow_the_rules(zoo, tmp_path):
    t4, t5 = load_coefficients(tmp_path / "t4"), load_coefficients(tmp_path / "t5")
    assert not torch.equal(t4.passthrough("norm.weight"), t5.passthrough("norm.weight"))  # they differ
    run("merge", "t4", "t5", "--out", tmp_path / "default", "--no-register")
    assert load_coefficients(tmp_path / "default").passthrough_names == []  # different: none unless asked
    run("merge", "t4", "t5", "--heads", "first", "--out", tmp_path / "first", "--no-register")
    assert torch.equal(load_coefficients(tmp_path / "first").passthrough("norm.weight"), t4.passthrough("norm.weight"))
    run("merge", "t4", "t5", "--weights", "0.25,0.75", "--heads", "average", "--out", tmp_path / "avg", "--no-register")
    averaged = load_coefficients(tmp_path / "avg").passthrough("norm.weight")
    assert torch.allclose(
        averaged, 0.25 * t4.passthrough("norm.weight") + 0.75 * t5.passthrough("norm.weight"), atol=1e-6
    )
    run("merge", "t4", "t4", "--out", tmp_path / "same", "--no-register")
    same = load_coefficients(tmp_path / "same")
    assert torch.equal(same.passthrough("norm.weight"), t4.passthrough("norm.weight"))  # equal: kept
    assert all(torch.allclose(same.coefficient(layer), t4.coefficient(layer), atol=1e-7) for layer in t4.layer_names)


def test_tasks_of_two_bases_are_refused_naming_rebase(zoo, tmp_path):
    run("build", *zoo[1:5], "--out", tmp_path / "basis2", "--k", "2", "--name", "other")
    run("project", zoo[6], "--basis", "other", "--out", tmp_path / "o6")
    out = tmp_path / "mixed"
    line = refused(["merge", "t4", "o6", "--out", out], "different bases", out)
    assert "unisub-hub rebase" in line


def test_centred_weights_that_do_not_sum_to_one_write_nothing(zoo, tmp_path):
    out = tmp_path / "bad"
    refused(["merge", "t4", "t5", "--weights", "1,1", "--out", out], "--weights sum to 2; the basis is centred", out)
    refused(
        ["merge", "t4", "t5", "--method", "linear", "--density", "0.5", "--out", out],
        "linear does not take --density",
        out,
    )


def test_the_in_memory_merge_equals_the_commands(tmp_path):
    from unisub_hub.adapt import attach
    from unisub_hub.io.checkpoint import CheckpointSource

    shapes = {"layers.0.weight": (16, 12), "layers.1.weight": (12, 16)}
    models = write_checkpoints(tmp_path / "linear", 7, shapes)
    run("build", *models[:4], "--out", tmp_path / "basis", "--k", "2", "--name", "lin")
    for n in (4, 5, 6):
        run("project", models[n], "--basis", "lin", "--out", tmp_path / f"t{n}")
    weights = ["--weights", "0.2,0.3,0.5"]
    run("merge", "t4", "t5", "t6", "--method", "ties", "--density", "0.5", *weights, "--out", tmp_path / "m")
    source = CheckpointSource(models[0])
    model = torch.nn.Module()
    model.layers = torch.nn.ModuleList([torch.nn.Linear(12, 16, bias=False), torch.nn.Linear(16, 12, bias=False)])
    with torch.no_grad():
        for number, layer in enumerate(model.layers):
            layer.weight.copy_(source.tensor(f"layers.{number}.weight"))
    adapter = attach(model, load_basis(tmp_path / "basis"))
    for n in (4, 5, 6):
        adapter.load_task(f"t{n}", f"t{n}")  # registry names, as attach takes
    adapter.merge_tasks(["t4", "t5", "t6"], [0.2, 0.3, 0.5], method="ties", density=0.5, name="merged")
    saved = load_coefficients(tmp_path / "m")
    for layer, module in adapter.layers.items():
        assert torch.allclose(
            module.coefficient(adapter.state.key("merged")).detach(), saved.coefficient(layer), atol=1e-6
        )
