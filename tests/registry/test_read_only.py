"""A registry this process cannot write: listed and read, never changed, refused before long work.

Tests run as root, whom permission bits do not stop, so the home is made read-only for
this process by answering ``os.access`` as a read-only file system would; SQLite's own
read-only mode then refuses every write for real.
"""

from __future__ import annotations

import json
import os

import pytest
from clitools import SHAPES, run, write_checkpoints


@pytest.fixture
def registered(tmp_path, monkeypatch):
    home = tmp_path / "home"
    monkeypatch.setenv("UNISUB_HOME", str(home))
    zoo = write_checkpoints(tmp_path / "zoo", 4, SHAPES)
    run("build", *zoo, "--out", tmp_path / "basis", "--k", "2", "--name", "b")
    return home, zoo


def _make_read_only(monkeypatch, home):
    real = os.access
    monkeypatch.setattr(
        os,
        "access",
        lambda path, mode, **kw: (
            False if (mode & os.W_OK and str(path).startswith(str(home))) else real(path, mode, **kw)
        ),
    )


def test_opening_a_current_registry_writes_nothing(registered):
    home, _ = registered
    before = {p.name: (p.stat().st_size, p.stat().st_mtime_ns) for p in home.glob("registry.db*")}
    assert json.loads(run("registry", "list", "--json").stdout)[0]["name"] == "b"
    assert {p.name: (p.stat().st_size, p.stat().st_mtime_ns) for p in home.glob("registry.db*")} == before


def test_a_read_only_home_lists_and_reads_but_refuses_changes_in_one_line(registered, tmp_path, monkeypatch):
    home, zoo = registered
    _make_read_only(monkeypatch, home)
    assert json.loads(run("registry", "list", "--json").stdout)[0]["name"] == "b"
    assert json.loads(run("registry", "verify", "--json").stdout)["ok"]
    removed = run("registry", "rm", "b", ok=False)
    assert removed.exit_code == 1 and removed.output.strip().splitlines()[-1].startswith(
        f"Error: {home / 'registry.db'}: the registry is read-only here"
    )
    refused = run("project", zoo[0], "--basis", "b", "--out", tmp_path / "task", ok=False)
    assert refused.exit_code == 1 and "the registry is read-only here; pass --no-register" in refused.output
    assert not (tmp_path / "task").exists()  # refused before any work
    assert run("project", zoo[0], "--basis", "b", "--out", tmp_path / "task", "--no-register").exit_code == 0
