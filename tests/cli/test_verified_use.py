"""Every command that uses an artifact checks its content id first, and a failure leaves nothing behind (#15 item 2)."""

from __future__ import annotations

import json
import os

import pytest
from clitools import SHAPES, refused, run, write_checkpoints

from unisub_hub.format import verified


def _flip_a_byte(folder, name: str) -> None:
    """Change one data byte of a tensor file (its size stays the same, its time moves on)."""
    path = folder / name
    data = bytearray(path.read_bytes())
    data[-3] ^= 0x40
    path.write_bytes(bytes(data))


@pytest.fixture
def built(tmp_path):
    zoo = write_checkpoints(tmp_path / "zoo", 5, SHAPES)
    run("build", *zoo[:4], "--out", tmp_path / "basis", "--k", "2")
    run("project", zoo[4], "--basis", tmp_path / "basis", "--out", tmp_path / "task")
    verified._memory.clear()  # what a new process starts with (the file cache stays)
    return zoo


@pytest.mark.parametrize("command", ["materialize", "project", "validate-deep"])
def test_a_tampered_basis_is_refused_before_any_output(tmp_path, built, command):
    _flip_a_byte(tmp_path / "basis", "basis.safetensors")
    out = tmp_path / "out"
    if command == "materialize":
        refused(
            ["materialize", tmp_path / "task", "--basis", tmp_path / "basis", "--out", out], "tensor files hash to", out
        )
    elif command == "project":
        refused(["project", built[4], "--basis", tmp_path / "basis", "--out", out], "tensor files hash to", out)
    else:
        report = json.loads(
            run("validate", tmp_path / "task", "--deep", "--against", tmp_path / "basis", "--json", ok=False).stdout
        )
        assert not report["ok"] and any("tensor files hash to" in c["detail"] for c in report["checks"] if not c["ok"])


def test_a_tampered_basis_in_the_registry_store_is_refused(tmp_path, built, isolated_home):
    stored = next((isolated_home / "store").rglob("basis.safetensors"))
    _flip_a_byte(stored.parent, stored.name)
    out = tmp_path / "out"
    refused(["materialize", tmp_path / "task", "--basis", "basis", "--out", out], "tensor files hash to", out)


def test_a_coefficient_set_with_a_wrong_id_is_refused(tmp_path, built):
    _flip_a_byte(tmp_path / "task", "coefficients.safetensors")
    out = tmp_path / "out"
    refused(
        ["materialize", tmp_path / "task", "--basis", tmp_path / "basis", "--out", out], "tensor files hash to", out
    )


def test_verification_is_remembered_for_unchanged_files_only(tmp_path, built, monkeypatch):
    hashed = []
    real = verified.content_id
    monkeypatch.setattr(verified, "content_id", lambda files: hashed.append(1) or real(files))
    for _ in range(2):
        run(
            "materialize",
            tmp_path / "task",
            "--basis",
            tmp_path / "basis",
            "--out",
            tmp_path / f"out{len(hashed)}-{os.urandom(2).hex()}",
        )
    assert hashed == []  # written by build and project in this home: already known
    _flip_a_byte(tmp_path / "task", "coefficients.safetensors")
    refused(
        ["materialize", tmp_path / "task", "--basis", tmp_path / "basis", "--out", tmp_path / "bad"],
        "tensor files hash to",
        tmp_path / "bad",
    )
    assert hashed == [1]
