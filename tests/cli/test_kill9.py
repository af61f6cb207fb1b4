"""kill -9 at random points of build, project, registry add, gc, push and pull.

After each kill the same command is run again and must succeed; then gc runs, and the
registry must verify clean with no unreferenced folders, nothing in ``downloads/`` and no
hidden temporary folder beside any output. ``UNISUB_KILLS`` sets the kills per command
(default 2, so 12 in the suite; the closing note's battery used 9, so 54).
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from clitools import SHAPES, write_checkpoints

from unisub_hub.registry import Registry
from unisub_hub.testing import LocalHub

KILLS = int(os.environ.get("UNISUB_KILLS", "2"))
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A registry with a basis pushed to the local Hub and an unregistered task folder, built once."""
    root = tmp_path_factory.mktemp("kill9")
    zoo = write_checkpoints(root / "zoo", 5, SHAPES)
    with LocalHub() as hub:
        env = _env(root / "home", hub, root)
        _command(["build", *zoo[:4], "--out", root / "basis", "--k", "2", "--name", "b"], env, None)
        started = time.perf_counter()
        _command(["project", zoo[4], "--basis", "b", "--out", root / "task", "--no-register"], env, None)
        duration = time.perf_counter() - started  # one whole command: the window the kills are drawn from
        _command(["push", "b", "me/b"], env, None)
        started = time.perf_counter()
        _command(["registry", "gc"], env, None)
        windows = {"gc": time.perf_counter() - started}  # gc is short: its kills are drawn from its own run time
        yield root, zoo, hub, lambda operation: windows.get(operation, duration)


def _env(home: Path, hub: LocalHub, root: Path) -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "UNISUB_HOME": str(home),
        "HF_ENDPOINT": hub.url,
        "HF_HUB_DISABLE_XET": "1",
        "HF_HOME": str(root / "hf-home"),
        "HF_HUB_OFFLINE": "0",
    }


def _command(args: list[str], env: dict[str, str], kill_after: float | None) -> int | None:
    """Run ``unisub-hub ARGS`` as its own process; with ``kill_after``, SIGKILL it then (None if it finished first)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "unisub_hub", *map(str, args)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    if kill_after is None:
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err[-2000:]
        return 0
    try:
        proc.wait(timeout=kill_after)
        return None
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        return -9


def _assert_clean(home: Path, outputs: list[Path]) -> None:
    registry = Registry(home)
    registry.gc()
    report = registry.verify()
    assert report["ok"] and report["unreferenced_folders"] == [], report
    downloads = home / "downloads"
    assert not downloads.is_dir() or not any(downloads.iterdir()), "a killed pull left files in downloads/"
    for out in outputs:
        assert not [p for p in out.parent.iterdir() if p.name.startswith(f".{out.name}.tmp-")], f"leftover beside {out}"


@pytest.mark.parametrize("operation", ["build", "project", "add", "gc", "push", "pull"])
def test_kill_nine_then_rerun_leaves_a_clean_registry(world, operation):
    root, zoo, hub, window = world
    rng = random.Random(f"kill9-{operation}")
    home = root / f"home-{operation}"
    shutil.copytree(root / "home", home)
    env = _env(home, hub, root)
    killed = 0
    for trial in range(KILLS):
        out = root / f"{operation}-out-{trial}"
        trial_env = env
        if operation == "build":
            args = ["build", *zoo[:4], "--out", out, "--k", "2"]
        elif operation == "project":
            args = ["project", zoo[4], "--basis", "b", "--out", out]
        elif operation == "add":
            trial_env = _env(root / f"add-home-{trial}", hub, root)
            shutil.copytree(root / "home", trial_env["UNISUB_HOME"])
            args = ["registry", "add", root / "task"]
        elif operation == "gc":
            (home / "store" / f"orphan-{trial}").mkdir(parents=True)  # something for gc to remove
            args = ["registry", "gc"]
        elif operation == "push":
            args = ["push", "b", f"me/pushed-{trial}"]
        else:
            trial_env = _env(root / f"pull-home-{trial}", hub, root)
            args = ["pull", "me/b"]
        if _command(args, trial_env, kill_after=rng.uniform(0.05, 0.9) * window(operation)) == -9:
            killed += 1
        _command(args, trial_env, None)  # the rerun recovers
        _assert_clean(Path(trial_env["UNISUB_HOME"]), [out] if operation in {"build", "project"} else [])
    print(f"{operation}: {killed} of {KILLS} runs killed before they finished")
    assert killed >= 1, f"none of {KILLS} runs was killed before it finished"
    if operation in {"build", "project"}:
        assert len(Registry(home).list("bases" if operation == "build" else "tasks")) >= 1
