"""Every writer registers once, after writing; a failed registration leaves neither folder nor row."""

from __future__ import annotations

import pytest
from clitools import SHAPES, refused, run, write_checkpoints

from unisub_hub.errors import RegistryError
from unisub_hub.registry import Registry


@pytest.fixture
def zoo(tmp_path):
    models = write_checkpoints(tmp_path / "zoo", 5, SHAPES)
    run("build", *models[:4], "--out", tmp_path / "basis", "--k", "2", "--name", "b")
    return models


@pytest.fixture
def failing_task_registration(monkeypatch):
    """The registry refuses any coefficient set (as a damaged or full registry would)."""
    real_add = Registry.add

    def add(self, folder, **kwargs):
        if (folder / "unisub_coefficients.json").exists():
            raise RegistryError(f"{folder}: cannot be recorded (test)")
        return real_add(self, folder, **kwargs)

    monkeypatch.setattr(Registry, "add", add)


def test_project_that_cannot_register_leaves_nothing(zoo, tmp_path, failing_task_registration):
    out = tmp_path / "task"
    refused(["project", zoo[4], "--basis", "b", "--out", out], "cannot be recorded (test)", out)


def test_rebase_that_cannot_register_leaves_nothing(zoo, tmp_path, monkeypatch):
    run("project", zoo[4], "--basis", "b", "--out", tmp_path / "task")
    run("build", *zoo[1:5], "--out", tmp_path / "basis2", "--k", "2", "--name", "b")
    real_add = Registry.add
    monkeypatch.setattr(
        Registry,
        "add",
        lambda self, folder, **kw: (
            (_ for _ in ()).throw(RegistryError("full (test)"))
            if folder.name == "moved"
            else real_add(self, folder, **kw)
        ),
    )
    out = tmp_path / "moved"
    refused(["rebase", "task", "--basis", "b:2", "--out", out], "full (test)", out)


def test_register_output_removes_the_folder_it_could_not_record(zoo, tmp_path, failing_task_registration):
    from unisub_hub.format import load_basis
    from unisub_hub.pipeline.project import project
    from unisub_hub.pipeline.register import register_output

    basis = load_basis(tmp_path / "basis")
    written = project(str(zoo[4]), basis, tmp_path / "t").coefficients.path
    registry = Registry()
    with pytest.raises(RegistryError):
        register_output(registry, written, basis=basis.path)
    assert not written.exists()
    assert registry.find("basis", basis.content_id) is not None  # the basis it needs stays registered
