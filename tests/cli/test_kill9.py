"""kill -9 in the middle of build, project, registry add, gc, push, pull, merge and train, and
of a server loading a task from the Hub.

Each run is killed once it is seen doing its work (a temporary output folder, the store's
lock held, a request at the Hub, a file in ``downloads/``, the base model's weights mapped
into a training process), after a further random pause, so no kill lands before the command
has started. After each kill the same command is run again
and must succeed; then gc runs, and the registry must verify clean with no unreferenced
folders, nothing in ``downloads/`` and no hidden temporary folder beside any output.
``UNISUB_KILLS`` sets the kills per command (default 2, so 18 in the suite; a closing note's
battery sets 9).
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from clitools import SHAPES, write_checkpoints

from unisub_hub.registry import Registry
from unisub_hub.testing import LocalHub

pytestmark = pytest.mark.slow

KILLS = int(os.environ.get("UNISUB_KILLS", "2"))
REPO = Path(__file__).resolve().parents[2]
WRITERS = {"build", "project", "merge", "train"}
"""Commands that write an output folder (and register it)."""


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A registry with a basis pushed to the local Hub and an unregistered task folder, built once."""
    root = tmp_path_factory.mktemp("kill9")
    zoo = write_checkpoints(root / "zoo", 5, SHAPES)
    with LocalHub() as hub:
        env = _env(root / "home", hub, root)
        _command(["build", *zoo[:4], "--out", root / "basis", "--k", "2", "--name", "b"], env)
        _command(["project", zoo[4], "--basis", "b", "--out", root / "task", "--no-register"], env)
        _command(["push", "b", "me/b"], env)
        _command(["project", zoo[4], "--basis", "b", "--out", root / "task-2", "--no-register"], env)
        _text_world(root, env)
        yield root, zoo, hub


def _text_world(root: Path, env: dict[str, str]) -> None:
    """A tiny BERT with a tokenizer, a LoRA basis ``lb`` of it, a task of ``lb`` on the local Hub
    (``me/lt``) and training data: what train and serve need."""
    from models import save_adapters, save_base_with_tokenizer
    from serve_zoos import TEXTS

    base = save_base_with_tokenizer(root / "bert", sorted({word for text in TEXTS for word in text.split()}))
    adapters = save_adapters(base, root, 4)
    _command(["build", *adapters[:3], "--out", root / "lb", "--k", "2", "--name", "lb"], env)
    _command(["project", adapters[3], "--basis", "lb", "--out", root / "lt", "--name", "lt"], env)
    _command(["push", "lt", "me/lt", "--push-basis", "me/lb"], env)
    rows = [{"text": TEXTS[i % len(TEXTS)], "label": i % 3} for i in range(64)]
    (root / "train.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))


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


def _command(args: list[str], env: dict[str, str]) -> None:
    """Run ``unisub-hub ARGS`` as its own process to the end; it must succeed."""
    done = subprocess.run(
        [sys.executable, "-m", "unisub_hub", *map(str, args)], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]


def _kill_mid_work(args: list[str], env: dict[str, str], working: Callable[[int], bool], pause: float) -> bool:
    """Run ``unisub-hub ARGS``; once ``working(pid)`` holds, wait ``pause`` seconds and SIGKILL it.

    True when the kill landed while the command was still running after it was seen working.
    """
    proc = subprocess.Popen(
        [sys.executable, "-m", "unisub_hub", *map(str, args)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 120
    while proc.poll() is None and not working(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.002)
    if proc.poll() is not None:
        return False
    time.sleep(pause)
    if proc.poll() is not None:
        return False
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    return True


def _writing(pid: int, out: Path) -> bool:
    """Whether the process is writing ``out`` (its temporary folder exists) or registering it (the store's lock)."""
    return any(out.parent.glob(f".{out.name}.tmp-*")) or _holds(pid, "store.lock")


def _maps(pid: int, name: str) -> bool:
    """Whether process ``pid`` has a file called ``name`` mapped into memory (safetensors weights, loaded)."""
    try:
        return name in Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return False


def _holds(pid: int, name: str) -> bool:
    """Whether process ``pid`` has a file called ``name`` open (Linux /proc)."""
    try:
        return any(os.readlink(fd).endswith(name) for fd in Path(f"/proc/{pid}/fd").iterdir())
    except OSError:
        return False


def _assert_clean(home: Path, outputs: list[Path]) -> None:
    registry = Registry(home)
    registry.gc()
    report = registry.verify()
    assert report["ok"] and report["unreferenced_folders"] == [], report
    downloads = home / "downloads"
    assert not downloads.is_dir() or not any(downloads.iterdir()), "a killed pull left files in downloads/"
    for out in outputs:
        assert not [p for p in out.parent.iterdir() if p.name.startswith(f".{out.name}.tmp-")], f"leftover beside {out}"


@pytest.mark.parametrize("operation", ["build", "project", "add", "gc", "push", "pull", "merge", "train"])
def test_kill_nine_then_rerun_leaves_a_clean_registry(world, operation):
    root, zoo, hub = world
    rng = random.Random(f"kill9-{operation}")
    home = root / f"home-{operation}"
    shutil.copytree(root / "home", home)
    env = _env(home, hub, root)
    killed = 0
    for trial in range(KILLS):
        out = root / f"{operation}-out-{trial}"
        trial_env = env
        working: Callable[[int], bool]
        if operation in {"build", "project", "merge"}:
            args = {
                "build": ["build", *zoo[:4], "--out", out, "--k", "2"],
                "project": ["project", zoo[4], "--basis", "b", "--out", out],
                "merge": ["merge", root / "task", root / "task-2", "--out", out],
            }[operation]
            working = lambda pid, out=out: _writing(pid, out)  # noqa: E731
        elif operation == "train":
            args = ["train", "lb", "--base", root / "bert", "--data", root / "train.jsonl", "--out", out]
            args += ["--epochs", "3", "--device", "cpu"]
            working = lambda pid: _maps(pid, str(root / "bert" / "model.safetensors"))  # noqa: E731 (training)
        elif operation == "add":
            trial_env = _env(root / f"add-home-{trial}", hub, root)
            shutil.copytree(root / "home", trial_env["UNISUB_HOME"])
            args = ["registry", "add", root / "task"]
            working = lambda pid: _holds(pid, "store.lock")  # noqa: E731  (placing the folder)
        elif operation == "gc":
            (home / "store" / f"orphan-{trial}").mkdir(parents=True)  # something for gc to remove
            args = ["registry", "gc"]
            working = lambda pid: _holds(pid, "store.lock")  # noqa: E731  (collecting)
        elif operation == "push":
            args = ["push", "b", f"me/pushed-{trial}"]
            working = lambda pid, repo=f"me/pushed-{trial}": any(repo in r.path for r in hub.requests)  # noqa: E731
        else:
            trial_env = _env(root / f"pull-home-{trial}", hub, root)
            downloads = Path(trial_env["UNISUB_HOME"]) / "downloads"
            args = ["pull", "me/b"]
            working = lambda pid, downloads=downloads: downloads.is_dir() and any(downloads.iterdir())  # noqa: E731
        pause = rng.uniform(0.0, 1.5) if operation == "train" else rng.uniform(0.0, 0.02)
        if _kill_mid_work(args, trial_env, working, pause=pause):
            killed += 1
        _command(args, trial_env)  # the rerun recovers
        _assert_clean(
            Path(trial_env["UNISUB_HOME"]), [out] if operation in {"build", "project", "merge", "train"} else []
        )
    print(f"{operation}: {killed} of {KILLS} runs killed mid-work")
    assert killed >= 1, f"none of {KILLS} runs was seen working and killed before it finished"
    if operation in WRITERS:
        assert len(Registry(home).list("bases" if operation == "build" else "tasks")) >= 1


def test_a_server_killed_while_pulling_a_task_leaves_a_clean_registry(world):
    """``POST /v1/tasks/load`` of a Hub id pulls the task into the server's registry; a server
    killed -9 in the middle leaves the registry clean, and the next server loads the task."""
    import threading

    import httpx
    from live_server import Server

    root, _, hub = world
    rng = random.Random("kill9-serve")
    killed = 0
    for trial in range(KILLS):
        env = _env(root / f"serve-home-{trial}", hub, root)
        home = Path(env["UNISUB_HOME"])
        _command(["registry", "add", root / "lb"], env)
        seen = len(hub.requests)
        server = Server("lb", "--base", root / "bert", home=home, env=env)
        answered: list[int] = []
        asked = threading.Thread(target=_load, args=(server.url + "/v1/tasks/load", answered), daemon=True)
        asked.start()
        deadline = time.monotonic() + 60
        while not any("me/lt" in r.path for r in hub.requests[seen:]) and time.monotonic() < deadline:
            time.sleep(0.002)
        time.sleep(rng.uniform(0.0, 0.02))
        killed += not answered  # the load was still under way
        server.stop(signal.SIGKILL)
        asked.join(timeout=30)
        _assert_clean(home, [])
        with Server("lb", "--base", root / "bert", home=home, env=env) as again:
            loaded = httpx.post(again.url + "/v1/tasks/load", json={"task": "me/lt", "name": "lt"}, timeout=120)
            assert loaded.status_code == 200, loaded.text
            answer = httpx.post(again.url + "/v1/classify", json={"task": "lt", "inputs": ["the cat sat"]}, timeout=60)
            assert answer.status_code == 200 and len(answer.json()["results"]) == 1
        _assert_clean(home, [])
    print(f"serve: {killed} of {KILLS} servers killed while pulling a task")
    assert killed >= 1


def _load(url: str, answered: list[int]) -> None:
    """Ask a server to load ``me/lt``; ``answered`` gets the status if it answers before it dies."""
    import httpx

    try:
        answered.append(httpx.post(url, json={"task": "me/lt"}, timeout=60).status_code)
    except httpx.HTTPError:  # killed under the request
        return
