"""``unisub-hub validate``: a table of checks, exit 0 only when all pass."""

from __future__ import annotations

import json

import torch
from clitools import SHAPES, run, write_checkpoints
from safetensors.torch import save_file

from unisub_hub.format.tensorfile import canonical_bytes


def checks(result) -> dict[str, bool]:
    return {c["name"]: c["ok"] for c in json.loads(result.stdout)["checks"]}


def setup(tmp_path):
    paths = write_checkpoints(tmp_path / "zoo", 5, SHAPES)
    run("build", *paths[:4], "--out", tmp_path / "basis", "--k", "2", "--name", "vb")
    run("project", paths[4], "--basis", tmp_path / "basis", "--out", tmp_path / "task")
    return paths


def test_valid_artifacts_pass_every_check(tmp_path):
    paths = setup(tmp_path)
    basis = run("validate", tmp_path / "basis", "--deep", "--against", paths[0], "--json")
    assert checks(basis) == {
        "manifest schema and format version": True,
        "content id": True,
        "tensor names, shapes and dtypes": True,
        "orthonormal factors": True,
        f"layers present in base model {paths[0]}": True,
        "finite values": True,
    }
    task = run("validate", tmp_path / "task", "--deep", "--json")
    assert all(checks(task).values()) and "basis present and matching" in checks(task)
    human = run("validate", "vb").output
    assert "3 of 3 checks passed" in human


def test_tampered_and_mismatched_artifacts_fail(tmp_path):
    setup(tmp_path)
    tensor_file = tmp_path / "basis" / "basis.safetensors"
    data = bytearray(tensor_file.read_bytes())
    data[-2] ^= 0x40
    tensor_file.write_bytes(bytes(data))
    result = run("validate", tmp_path / "basis", "--json", ok=False)
    assert result.exit_code == 1
    assert checks(result)["content id"] is False and checks(result)["tensor names, shapes and dtypes"] is True


def test_deep_finds_non_orthonormal_factors_and_nan(tmp_path):
    setup(tmp_path)
    folder = tmp_path / "basis"
    from safetensors import safe_open

    with safe_open(folder / "basis.safetensors", "pt") as handle:
        tensors = {k: handle.get_tensor(k) for k in handle.keys()}
    tensors["layers.0.w::U"] = tensors["layers.0.w::U"] * 1.5
    tensors["layers.1.w::mean"][0, 0] = float("nan")
    (folder / "basis.safetensors").write_bytes(
        canonical_bytes(tensors, {"format": "unisub-hub/basis", "format_version": "1.0.0"})
    )
    result = run("validate", folder, "--deep", "--json", ok=False)
    report = json.loads(result.stdout)
    failed = {c["name"]: c["detail"] for c in report["checks"] if not c["ok"]}
    assert "layer layers.0.w: U is not orthonormal" in failed["orthonormal factors"]
    assert "tensor layers.1.w::mean holds NaN or Inf" in failed["finite values"]
    assert "content id" in failed


def test_wrong_base_model_and_missing_basis(tmp_path, isolated_home):
    setup(tmp_path)
    other = write_checkpoints(tmp_path / "other", 1, {"layers.0.w": (16, 10), "layers.1.w": (12, 16)})[0]
    result = run("validate", tmp_path / "basis", "--against", other, "--json", ok=False)
    detail = [c["detail"] for c in json.loads(result.stdout)["checks"] if not c["ok"]][0]
    assert detail == f"{other}: tensor layers.0.w is 16x10, the basis layer is 16x12"
    run("registry", "rm", "vb", "--force")
    lonely = run("validate", tmp_path / "task", "--json", ok=False)
    assert "is not available (give --against BASIS or register it)" in json.dumps(json.loads(lonely.stdout))
    assert checks(run("validate", tmp_path / "task", "--against", tmp_path / "basis", "--json"))[
        "basis present and matching"
    ]


def test_tensor_table_mismatch(tmp_path):
    setup(tmp_path)
    folder = tmp_path / "task"
    from safetensors import safe_open

    with safe_open(folder / "coefficients.safetensors", "pt") as handle:
        tensors = {k: handle.get_tensor(k) for k in handle.keys()}
    tensors["layers.0.w::coef"] = torch.zeros(3, 3)
    save_file(
        tensors,
        folder / "coefficients.safetensors",
        metadata={"format": "unisub-hub/coefficients", "format_version": "1.0.0"},
    )
    result = run("validate", folder, "--json", ok=False)
    failed = {c["name"]: c["detail"] for c in json.loads(result.stdout)["checks"] if not c["ok"]}
    assert (
        "tensor 'layers.0.w::coef' has shape [3, 3], the manifest implies [2, 2]"
        in failed["tensor names, shapes and dtypes"]
    )
    materialized = run("materialize", folder, "--basis", tmp_path / "basis", "--out", tmp_path / "model", ok=False)
    # Rewritten bytes no longer hash to the content id: refused before the table is even read.
    assert (
        materialized.exit_code == 1
        and "tensor files hash to" in materialized.output
        and not (tmp_path / "model").exists()
    )


def test_validate_missing_folder(tmp_path):
    result = run("validate", tmp_path / "nothing", "--json", ok=False)
    assert json.loads(result.stdout)["checks"][0]["detail"] == f"{tmp_path / 'nothing'}: no such artifact folder"


def test_a_passthrough_dtype_the_tensor_contradicts_fails_validation(tmp_path):
    setup(tmp_path)
    folder = tmp_path / "task"
    path = folder / "unisub_coefficients.json"
    manifest = json.loads(path.read_text())
    assert manifest["passthrough"], "the fixture's task carries passthrough tensors"
    entry = manifest["passthrough"][0]
    entry["dtype"] = "float16" if entry["dtype"] != "float16" else "float32"
    path.write_text(json.dumps(manifest))
    result = run("validate", folder, "--json", ok=False)
    failed = {c["name"]: c["detail"] for c in json.loads(result.stdout)["checks"] if not c["ok"]}
    assert f"tensor {entry['name']!r} is" in failed["tensor names, shapes and dtypes"]
