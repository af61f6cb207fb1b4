"""Atomic output folders: what a killed writer leaves is cleared, and a rerun after a kill recovers."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from clitools import SHAPES, refused, run, write_checkpoints

from unisub_hub.format.atomic import atomic_folder, stale_siblings


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_a_dead_writers_hidden_folder_is_cleared_by_the_next_write_and_a_live_ones_is_kept(tmp_path):
    from unisub_hub.format import atomic

    out = tmp_path / "out"
    dead = tmp_path / f".out.tmp-{atomic._HOST}-{_dead_pid()}-0123abcd"
    live = tmp_path / f".out.tmp-{atomic._HOST}-{os.getpid()}-89abcdef"
    other_host = tmp_path / f".out.tmp-elsewhere-{_dead_pid()}-00000000"
    other_out = tmp_path / f".outer.tmp-{atomic._HOST}-{_dead_pid()}-11111111"
    for folder in (dead, live, other_host, other_out):
        folder.mkdir()
        (folder / "half-written.safetensors").write_bytes(b"x")
    assert stale_siblings(out) == [dead]
    with atomic_folder(out) as tmp:
        (tmp / "file").write_text("done")
    assert (out / "file").read_text() == "done"
    assert not dead.exists() and live.exists() and other_host.exists() and other_out.exists()


def test_a_failed_write_leaves_nothing(tmp_path):
    with pytest.raises(RuntimeError), atomic_folder(tmp_path / "out") as tmp:
        (tmp / "file").write_text("partial")
        raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def test_a_rerun_after_a_kill_between_writing_and_registering_recovers(tmp_path):
    zoo = write_checkpoints(tmp_path / "zoo", 4, SHAPES)
    out = tmp_path / "basis"
    run("build", *zoo, "--out", out, "--k", "2", "--no-register")  # as if killed right after the rename
    first = json.loads((out / "unisub_basis.json").read_text())["content_id"]
    again = json.loads(run("build", *zoo, "--out", out, "--k", "2", "--json").stdout)
    assert again["content_id"] == first and again["registered"]["content_id"] == first
    assert json.loads(run("registry", "verify", "--json").stdout)["problems"] == []
    refused(
        ["build", *zoo, "--out", out, "--k", "1"],
        f"{out}: output folder already exists and holds other content than this run wrote",
    )
    assert json.loads((out / "unisub_basis.json").read_text())["content_id"] == first
    (out / "basis.safetensors").write_bytes(b"damaged")
    refused(["build", *zoo, "--out", out, "--k", "2"], f"{out}: output folder already exists (remove it")
