"""gc beside writers, lost store folders and a lost database (#15 items 1 and 7)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import make_basis

from unisub_hub.errors import RegistryError
from unisub_hub.registry import Registry

_GATED_ADD = """
import sys, time
from pathlib import Path
from unisub_hub.registry import Registry
registry = Registry(sys.argv[1])
ready, release = Path(sys.argv[3]), Path(sys.argv[4])
insert = registry._insert
def gated_insert(*args, **kwargs):
    ready.touch()  # the folder is placed, its rows not yet written: gc's window before the lease
    while not release.exists():
        time.sleep(0.01)
    return insert(*args, **kwargs)
registry._insert = gated_insert
print(registry.add(sys.argv[2]).content_id)
"""


def test_gc_beside_a_live_add_removes_nothing_it_is_placing(tmp_path):
    """gc is started while the writer is held inside its window (placed, no rows yet), so the
    test always exercises the window; gc must wait for the writer, then remove nothing."""
    import threading

    basis = make_basis(tmp_path / "basis")
    home = tmp_path / "home"
    ready, release = tmp_path / "ready", tmp_path / "release"
    Registry(home).close()
    writer = subprocess.Popen(
        [sys.executable, "-c", _GATED_ADD, str(home), str(basis.path), str(ready), str(release)],
        stdout=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 60
    while not ready.exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    placed = home / "store" / basis.content_id.removeprefix("sha256:")
    assert ready.exists() and placed.is_dir()
    collector = Registry(home)
    removed: list = []
    collecting = threading.Thread(target=lambda: removed.extend(collector.gc()))
    collecting.start()
    collecting.join(timeout=1.0)
    assert collecting.is_alive()  # gc waits for the writer's lease instead of sweeping the placed folder
    release.touch()
    collecting.join(timeout=60)
    assert writer.wait(timeout=60) == 0 and not collecting.is_alive()
    assert removed == [] and placed.is_dir()
    assert collector.resolve(basis.content_id, "basis").path == placed
    collector.close()


def test_a_lost_store_folder_is_restored_by_adding_it_again(tmp_path):
    import shutil

    basis = make_basis(tmp_path / "basis")
    registry = Registry(tmp_path / "home")
    entry = registry.add(basis.path)
    shutil.rmtree(entry.path)
    assert not registry.verify()["ok"]
    registry.add(basis.path)
    assert registry.verify()["ok"] and (entry.path / "basis.safetensors").is_file()
    registry.close()


def test_gc_refuses_to_empty_a_store_its_database_no_longer_describes(tmp_path):
    basis = make_basis(tmp_path / "basis")
    home = tmp_path / "home"
    registry = Registry(home)
    stored = registry.add(basis.path).path
    registry.close()
    (home / "registry.db").unlink()  # the database is lost; the store is not
    for suffix in ("-wal", "-shm"):
        Path(f"{home / 'registry.db'}{suffix}").unlink(missing_ok=True)
    fresh = Registry(home)
    with pytest.raises(RegistryError, match="the registry lists nothing but the store holds 1 artifact"):
        fresh.gc()
    assert stored.is_dir()
    fresh.add(stored)  # rebuilt from the store's own manifests
    assert fresh.gc() == [] and fresh.verify()["ok"]
    fresh.close()


def test_gc_clears_what_killed_pulls_left_in_downloads(tmp_path):
    home = tmp_path / "home"
    registry = Registry(home)
    leftover = home / "downloads" / "me--task-1a2b3c4d"
    leftover.mkdir(parents=True)
    (leftover / "coefficients.safetensors").write_bytes(b"half a download")
    assert registry.gc() == [leftover]
    assert not leftover.exists() and (home / "downloads").is_dir()
    registry.close()
