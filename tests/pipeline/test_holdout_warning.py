"""build and analyze warn when held-out members, projected, recover no more than the mean alone."""

from __future__ import annotations

import json

import torch
from clitools import SHAPES, run, write_checkpoints
from safetensors.torch import save_file

from unisub_hub.engine.quality import BuildReport
from unisub_hub.pipeline.build import HOLDOUT_FLOOR, holdout_warning


def planted(root, count):
    """Checkpoints whose deltas share one rank-2 subspace per matrix: held-out members lie in it."""
    gen = torch.Generator().manual_seed(0)
    base = {name: torch.randn(shape, generator=gen) for name, shape in SHAPES.items()}
    sides = {
        n: (torch.randn(s[0], 2, generator=gen), torch.randn(2, s[1], generator=gen))
        for n, s in SHAPES.items()
        if len(s) == 2
    }
    paths = []
    for m in range(count):
        tensors = {}
        for name, value in base.items():
            if name in sides:
                left, right = sides[name]
                value = (
                    value
                    + left @ torch.randn(2, 2, generator=gen) @ right
                    + 1e-4 * torch.randn(value.shape, generator=gen)
                )
            tensors[name] = value.contiguous()
        folder = root / f"m{m}"
        folder.mkdir(parents=True)
        save_file(tensors, folder / "model.safetensors")
        paths.append(folder)
    return paths


def test_unrelated_held_out_members_get_a_warning(tmp_path):
    noise = write_checkpoints(tmp_path / "noise", 8, SHAPES)  # deltas are independent noise
    built = run("build", *noise, "--out", tmp_path / "b", "--k", "2", "--holdout", "2", "--no-register", "--json")
    assert "Warning: the directions recover" in built.output and "`eval TASK BASIS base`" in built.output
    report = json.loads(run("analyze", *noise, "--holdout", "2", "--k", "2", "--json").stdout)
    assert report["holdout"] == [str(p) for p in noise[-2:]] and report["warning"].startswith("the directions recover")


def test_held_out_members_inside_the_subspace_get_none(tmp_path):
    members = planted(tmp_path, 8)
    built = run("build", *members, "--out", tmp_path / "b", "--k", "2", "--holdout", "2", "--no-register")
    assert "Warning" not in built.output
    assert json.loads(run("analyze", *members, "--holdout", "2", "--k", "2", "--json").stdout)["warning"] is None


def test_no_held_out_members_no_warning():
    assert (
        holdout_warning(
            BuildReport(
                modes=(2, 3), centered=True, device="cpu", passes=1, max_memory=1, sources=["a"], holdout=[], layers=[]
            )
        )
        is None
    )
    assert 0 < HOLDOUT_FLOOR < 1
