"""Several processes registering at once, and registrations killed midway."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from helpers import make_basis, make_task

from unisub_hub.registry import Registry

REPO = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "PYTHONPATH": str(REPO)}

WORKER = textwrap.dedent(
    """
    import json, sys
    from unisub_hub.registry import Registry
    home, folders = sys.argv[1], json.loads(sys.argv[2])
    registry = Registry(home)
    created = sum(registry.add(folder).created for folder in folders)
    print(created)
    """
)


@pytest.mark.slow
def test_eight_processes_registering_fifty_each(tmp_path):
    basis = make_basis(tmp_path / "basis")
    home = tmp_path / "home"
    Registry(home).add(basis.path)
    folders = [str(make_task(tmp_path / f"t{i}", basis, name=f"task-{i}", seed=i).path) for i in range(400)]
    shared = folders[:10]  # every process also adds these: duplicates race
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, str(home), json.dumps(folders[w * 50 : (w + 1) * 50] + shared)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=ENV,
        )
        for w in range(8)
    ]
    results = [p.communicate(timeout=600) for p in procs]
    for proc, (_out, err) in zip(procs, results, strict=True):
        assert proc.returncode == 0, err
        assert "database is locked" not in err
    assert sum(int(out) for out, _ in results) == 400  # each artifact created exactly once
    registry = Registry(home)
    tasks = registry.list("tasks")
    assert len(tasks) == 400 and len({t["content_id"] for t in tasks}) == 400
    assert {t["version"] for t in tasks} == {1}
    report = registry.verify()
    assert report["ok"] and report["checked"] == 401 and report["unreferenced_folders"] == []


CRASH = textwrap.dedent(
    """
    import os, signal, sys
    from unisub_hub.registry import Registry, registry as module
    home, folder, where = sys.argv[1:]
    reg = Registry(home)
    if where == "after-copy":
        original = module.Registry._insert
        module.Registry._insert = lambda self, *a, **k: os.kill(os.getpid(), signal.SIGKILL)
    elif where == "mid-transaction":
        from unisub_hub.registry.models import Alias
        real_merge = module.Session.merge
        def merge(session, row, *a, **k):
            if isinstance(row, Alias):
                session.flush()  # rows are written but not committed
                os.kill(os.getpid(), signal.SIGKILL)
            return real_merge(session, row, *a, **k)
        module.Session.merge = merge
    elif where == "mid-copy":
        import shutil
        from unisub_hub.registry import store
        def copy_one_then_die(src, dst, *a, **k):
            shutil.copy2(src, dst)
            os.kill(os.getpid(), signal.SIGKILL)
        real_copytree = shutil.copytree
        def copytree(s, d):
            return real_copytree(s, d, copy_function=copy_one_then_die)
        store.shutil = type("patched", (), {"copytree": staticmethod(copytree), "rmtree": shutil.rmtree})
    reg.add(folder)
    """
)


@pytest.mark.slow
def test_killed_registrations_leave_registry_consistent(tmp_path):
    basis = make_basis(tmp_path / "basis")
    home = tmp_path / "home"
    Registry(home).add(basis.path)
    for number, where in enumerate(["mid-copy", "after-copy", "mid-transaction"]):
        task = make_task(tmp_path / f"t-{where}", basis, name=f"task-{number}", seed=number)
        done = subprocess.run(
            [sys.executable, "-c", CRASH, str(home), str(task.path), where],
            env=ENV,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == -9, done.stderr
        registry = Registry(home)
        report = registry.verify()
        assert report["ok"], report
        assert [t["name"] for t in registry.list("tasks")] == [f"task-{n}" for n in range(number)][::-1]
        registry.gc()
        assert registry.verify()["unreferenced_folders"] == []
        # The interrupted registration can simply be run again.
        assert registry.add(task.path).created
        registry.close()
