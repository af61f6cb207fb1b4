"""The web view under a registry of 1,000 tasks: front page and a basis page, as a browser asks.

    python bench/web_bench.py            # 1,000 tasks on one basis (#29's target: < 200 ms each)
    python bench/web_bench.py --quick    # 50 tasks: keeps the script working

A real ``unisub-hub web`` process on a loopback port and an ``httpx`` client: per page, the
median and worst of 20 GETs after one warm-up, with the page's size. Beside them, the floor a
page cannot beat: ``/api/front`` (the same data without HTML) and ``registry list tasks
--json`` as a whole command, so what the HTML costs is visible.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import torch

from unisub_hub.engine import BuildOptions, LayerSpec, RankRule, build_basis
from unisub_hub.format import save_basis, save_coefficients
from unisub_hub.io.memory import InMemoryCheckpoint
from unisub_hub.registry import Registry

SHAPES = {"layers.0.q.weight": (64, 64), "layers.0.v.weight": (64, 64), "layers.1.q.weight": (64, 64)}
RUNS = 20


def make_registry(home: Path, work: Path, tasks: int) -> None:
    gen = torch.Generator().manual_seed(0)
    members = [
        InMemoryCheckpoint(f"ft-{m}", {n: torch.randn(s, generator=gen) for n, s in SHAPES.items()}) for m in range(8)
    ]
    result = build_basis(
        [LayerSpec(n, s) for n, s in SHAPES.items()], members, options=BuildOptions(rank=RankRule(k=4))
    )
    basis = save_basis(
        work / "basis",
        result.layers,
        name="bench-basis",
        architecture_name="bench-arch",
        source_kind="checkpoint",
        sources=[
            {"id": m.name, "sha256": f"{i:064x}", "role": "train", "kind": "checkpoint"} for i, m in enumerate(members)
        ],
        quality=result.report.summary(),
    )
    registry = Registry(home)
    registry.add(basis.path)
    for number in range(tasks):
        folder = work / f"task-{number}"
        save_coefficients(
            folder,
            {n: torch.randn(basis.layer(n).coefficient_shape(), generator=gen) for n in SHAPES},
            {},
            name=f"task-{number:04d}",
            basis_manifest=basis.manifest,
            source={"id": f"finetune-{number}", "kind": "checkpoint"},
            metrics={"mean_rel_error": 0.1},
        )
        registry.add(folder)
    registry.close()


def timed(client: httpx.Client, url: str) -> dict:
    client.get(url).raise_for_status()  # warm-up
    times, size = [], 0
    for _ in range(RUNS):
        started = time.perf_counter()
        answer = client.get(url)
        times.append(time.perf_counter() - started)
        answer.raise_for_status()
        size = len(answer.content)
    return {
        "median_ms": round(statistics.median(times) * 1000, 1),
        "max_ms": round(max(times) * 1000, 1),
        "bytes": size,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--tasks", type=int, default=None)
    args = parser.parse_args()
    tasks = args.tasks or (50 if args.quick else 1000)
    root = Path(tempfile.mkdtemp(prefix="web-bench-"))
    started = time.perf_counter()
    make_registry(root / "home", root / "work", tasks)
    print(f"registered 1 basis and {tasks} tasks in {time.perf_counter() - started:.1f} s", file=sys.stderr)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    server = subprocess.Popen(
        [sys.executable, "-m", "unisub_hub", "--home", str(root / "home"), "web", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    try:
        line = server.stdout.readline() if server.stdout else ""
        found = re.search(r"(http://127\.0\.0\.1:\d+)", line)
        assert found, line
        url = found.group(1)
        with httpx.Client(base_url=url, timeout=60) as client:
            rows = [
                {"page": "front page (HTML)", **timed(client, "/")},
                {"page": "basis page (HTML)", **timed(client, "/basis/bench-basis:1")},
                {"page": "task page (HTML)", **timed(client, "/task/task-0000:1")},
                {"page": "front page data (/api/front)", **timed(client, "/api/front")},
            ]
        command = []
        for _ in range(5):
            begun = time.perf_counter()
            subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "unisub_hub",
                    "--home",
                    str(root / "home"),
                    "registry",
                    "list",
                    "tasks",
                    "--json",
                ],
                check=True,
                capture_output=True,
            )
            command.append(time.perf_counter() - begun)
        rows.append(
            {
                "page": "registry list tasks --json (whole command)",
                "median_ms": round(statistics.median(command) * 1000, 1),
            }
        )
    finally:
        server.terminate()
        server.wait(timeout=60)
    for row in rows:
        print(json.dumps({"tasks": tasks, **row}))


if __name__ == "__main__":
    main()
