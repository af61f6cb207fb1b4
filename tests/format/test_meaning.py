"""The manifest's meaning is bound to the tensor bytes (#15 item 5): edits that change what tensors mean are refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from unisub_hub.engine import BuildOptions, LayerSpec, RankRule, build_basis
from unisub_hub.errors import FormatError
from unisub_hub.format import load_basis, load_coefficients, save_basis, save_coefficients
from unisub_hub.io.memory import InMemoryCheckpoint

SHAPES = {"a.weight": (8, 8), "b.weight": (8, 8)}


@pytest.fixture
def pair(tmp_path):
    gen = torch.Generator().manual_seed(0)
    sources = [
        InMemoryCheckpoint(f"s{m}", {n: torch.randn(s, generator=gen, dtype=torch.float64) for n, s in SHAPES.items()})
        for m in range(4)
    ]
    result = build_basis(
        [LayerSpec(n, s) for n, s in SHAPES.items()],
        sources,
        options=BuildOptions(rank=RankRule(k=3), null_baseline=False),
    )
    basis = save_basis(
        tmp_path / "basis",
        result.layers,
        name="b",
        architecture_name="toy",
        source_kind="checkpoint",
        sources=[{"id": f"s{m}", "kind": "checkpoint", "role": "train"} for m in range(4)],
    )
    coefs = {n: torch.randn(basis.layer(n).coefficient_shape(), generator=gen) for n in SHAPES}
    task = save_coefficients(
        tmp_path / "task", coefs, {"bias": torch.zeros(8)}, name="t", basis_manifest=basis.manifest
    )
    return basis.path, task.path


def _edit(folder: Path, name: str, change) -> None:
    path = folder / name
    manifest = json.loads(path.read_text())
    change(manifest)
    path.write_text(json.dumps(manifest))


def _swap_roles(manifest):
    tensors = manifest["layers"][0]["tensors"]
    tensors["U"], tensors["V"] = tensors["V"], tensors["U"]


def _swap_layers(manifest):
    first, second = manifest["layers"][0], manifest["layers"][1]
    first["tensor"], second["tensor"] = second["tensor"], first["tensor"]


def _reshape(manifest):
    manifest["layers"][0]["shape"] = [8, 2, 4]  # the same 8 x 8 matrix view: only the meaning lies


def _flip_kind(manifest):
    manifest["source_kind"] = "lora"


@pytest.mark.parametrize(
    ("which", "change"),
    [
        ("basis", _swap_roles),
        ("basis", _reshape),
        ("basis", _flip_kind),
        ("task", _swap_layers),
        ("task", _flip_kind),
    ],
)
def test_an_edit_of_what_tensors_mean_is_refused(pair, which, change):
    basis, task = pair
    folder, name, load = (
        (basis, "unisub_basis.json", load_basis)
        if which == "basis"
        else (task, "unisub_coefficients.json", load_coefficients)
    )
    _edit(folder, name, change)
    with pytest.raises(FormatError, match="the manifest does not say what"):
        load(folder)


def test_descriptions_stay_editable_without_a_new_id(pair):
    basis, task = pair
    _edit(basis, "unisub_basis.json", lambda m: m.update(name="renamed", description="a better description"))
    assert load_basis(basis).manifest["name"] == "renamed"
    _edit(task, "unisub_coefficients.json", lambda m: m.update(metrics={"note": 1.0}))
    load_coefficients(task)
