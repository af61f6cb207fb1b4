"""The demo's serving step: ``unisub-hub serve`` as a real process, one request mixing two tasks.

The server runs on an ephemeral loopback port with the LoRA basis and two held-out tasks; a
``/v1/classify`` request gives each row its own task, and the answers are checked against the
same tasks computed in this process (attached model, one row at a time): what a client sees
is what the library computes.
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

__all__ = ["running_server", "serve_round_trip", "start_server"]

_READY = re.compile(r"on (http://127\.0\.0\.1:\d+)")


def start_server(command: list[str], timeout: float = 180) -> tuple[subprocess.Popen[str], str, list[str]]:
    """Start ``unisub-hub serve`` (``command``) and wait until it prints its address: the process,
    its URL and what it printed."""
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = process.stdout.readline() if process.stdout else ""
        if not line and process.poll() is not None:
            break
        lines.append(line)
        if found := _READY.search(line):
            return process, found.group(1), lines
    process.kill()
    raise RuntimeError("the demo's server did not start: " + "".join(lines)[-2000:])


def _local_logits(base: Path, basis: Path, tasks: dict[str, Path], rows: list[dict[str, str]]) -> list[list[float]]:
    """Each row's logits from the attached model in this process, one row at a time."""
    from transformers import AutoTokenizer

    from ..adapt import attach
    from .minilm import load_task_model

    model = load_task_model(base)
    adapter = attach(model, basis, heads=["classifier"])
    for name, folder in tasks.items():
        adapter.load_task(folder, name, frozen=True)
    tokenizer = AutoTokenizer.from_pretrained(base)
    out = []
    with torch.no_grad():
        for row in rows:
            adapter.set_task(row["task"])
            encoded = tokenizer(
                row["text"], truncation=True, max_length=model.config.max_position_embeddings, return_tensors="pt"
            )
            out.append(model(**encoded).logits[0].tolist())
    return out


@contextmanager
def running_server(home: Path, basis: Path, base: Path, tasks: dict[str, Path]) -> Iterator[tuple[str, str]]:
    """``unisub-hub serve`` on ``tasks`` as a real process on a loopback port: its URL and the
    command as a user would type it; SIGTERM when the block ends."""
    command = [sys.executable, "-m", "unisub_hub", "--home", str(home), "serve", str(basis)]
    command += ["--base", str(base), "--port", "0", "--device", "cpu"]
    for name, folder in tasks.items():
        command += ["--task", f"{name}={folder}"]
    process, url, _ = start_server(command)
    try:
        yield url, "unisub-hub serve " + " ".join(command[command.index("serve") + 1 :])
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()


def serve_round_trip(
    work: Path, basis: Path, base: Path, tasks: dict[str, Path], texts: Sequence[str], log: Callable[[str], None]
) -> dict[str, Any]:
    """Serve ``tasks``, send one request whose rows alternate between them, compare with the library."""
    import httpx

    names = list(tasks)
    rows = [{"task": names[number % len(names)], "text": text} for number, text in enumerate(texts)]
    started = time.perf_counter()
    with running_server(work / "home-serve", basis, base, tasks) as (url, command):
        ready = time.perf_counter() - started
        request_start = time.perf_counter()
        response = httpx.post(url + "/v1/classify", json={"inputs": rows}, timeout=120)
        request_ms = 1000 * (time.perf_counter() - request_start)
        response.raise_for_status()
        answer = response.json()
    local = _local_logits(base, basis, tasks, rows)
    served = [result["logits"] for result in answer["results"]]
    difference = max(
        abs(a - b) for mine, theirs in zip(served, local, strict=True) for a, b in zip(mine, theirs, strict=True)
    )
    log(
        f"served {len(names)} tasks from one process ({ready:.1f} s to start); one request mixing them, "
        f"{len(rows)} rows in {request_ms:.0f} ms, logits within {difference:.1e} of the library's"
    )
    return {
        "command": command,
        "request": {"inputs": rows},
        "results": [{k: r[k] for k in ("task", "label", "scores")} for r in answer["results"]],
        "max_abs_logit_difference": difference,
        "start_seconds": ready,
        "request_ms": request_ms,
    }
