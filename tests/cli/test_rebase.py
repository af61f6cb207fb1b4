"""``unisub-hub rebase`` and ``registry list tasks --stale``: tasks follow their basis to a new version."""

from __future__ import annotations

import json

import torch
from clitools import SHAPES, refused, run, write_checkpoints

from unisub_hub.engine import reconstruct_layer
from unisub_hub.format import load_basis, load_coefficients


def test_a_stale_task_is_listed_and_moved_onto_the_newer_basis(tmp_path):
    zoo = write_checkpoints(tmp_path / "zoo", 7, SHAPES)
    run("build", *zoo[:3], "--out", tmp_path / "b1", "--k", "2", "--name", "zb")
    run("project", zoo[6], "--basis", "zb", "--out", tmp_path / "task", "--name", "t")
    assert json.loads(run("registry", "list", "tasks", "--stale", "--json").stdout) == []
    run("build", *zoo[:6], "--out", tmp_path / "b2", "--k", "3", "--name", "zb")
    stale = json.loads(run("registry", "list", "tasks", "--stale", "--json").stdout)
    assert [(t["name"], t["basis"], t["newest_basis"]) for t in stale] == [("t", "zb:1", "zb:2")]

    moved = json.loads(run("rebase", "t", "--basis", "zb", "--out", tmp_path / "moved", "--json").stdout)
    new, old = load_basis(tmp_path / "b2"), load_basis(tmp_path / "b1")
    assert moved["basis"] == new.content_id and moved["registered"]["kind"] == "task"
    manifest = load_coefficients(tmp_path / "moved").manifest
    assert manifest["lineage"] == "rebased" and manifest["rebased_from"]["basis"] == old.content_id
    task = load_coefficients(tmp_path / "task")
    for layer in SHAPES:
        if layer not in task.layer_names:
            continue
        before = reconstruct_layer(old.layer(layer, dtype=torch.float64), task.coefficient(layer).double())
        after = reconstruct_layer(
            new.layer(layer, dtype=torch.float64), load_coefficients(tmp_path / "moved").coefficient(layer).double()
        )
        error = float((before - after).norm() / before.norm())
        assert abs(error - moved["errors"][layer]["rel_error"]) < 1e-4  # the reported loss is the real one


def test_rebase_onto_its_own_basis_changes_nothing(tmp_path):
    zoo = write_checkpoints(tmp_path / "zoo", 4, SHAPES)
    run("build", *zoo[:3], "--out", tmp_path / "b1", "--k", "2")
    run("project", zoo[3], "--basis", tmp_path / "b1", "--out", tmp_path / "task")
    moved = json.loads(
        run(
            "rebase",
            tmp_path / "task",
            "--basis",
            tmp_path / "b1",
            "--out",
            tmp_path / "moved",
            "--no-register",
            "--json",
        ).stdout
    )
    assert max(e["rel_error"] for e in moved["errors"].values()) < 1e-6
    for layer in load_coefficients(tmp_path / "task").layer_names:
        torch.testing.assert_close(
            load_coefficients(tmp_path / "moved").coefficient(layer),
            load_coefficients(tmp_path / "task").coefficient(layer),
        )


def test_rebase_onto_another_architecture_is_refused(tmp_path):
    zoo = write_checkpoints(tmp_path / "zoo", 4, SHAPES)
    other = write_checkpoints(tmp_path / "other", 3, {"layers.0.w": (8, 12), "layers.1.w": (12, 8)})
    run("build", *zoo[:3], "--out", tmp_path / "b1", "--k", "2")
    run("build", *other, "--out", tmp_path / "b2", "--k", "2")
    run("project", zoo[3], "--basis", tmp_path / "b1", "--out", tmp_path / "task")
    refused(
        ["rebase", tmp_path / "task", "--basis", tmp_path / "b2", "--out", tmp_path / "moved"],
        "has layer layers.0.w of shape [8, 12], the task's basis [16, 12]",
        tmp_path / "moved",
    )
