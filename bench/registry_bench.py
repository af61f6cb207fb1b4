"""Registry latency with many artifacts: fill a registry, then time list, show and resolution.

    python bench/registry_bench.py                 # 10,000 tasks over 100 bases
    python bench/registry_bench.py --tasks 200 --bases 4

Every artifact is real (written, hashed, copied into the store, registered through
``Registry.add``); timings are medians over repeated calls, in milliseconds.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "registry"))

from helpers import make_basis, make_task  # noqa: E402

from unisub_hub.registry import Registry  # noqa: E402


def median_ms(function, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        function()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=10_000)
    parser.add_argument("--bases", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--json", type=Path, default=None, help="Also write the numbers here.")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        registry = Registry(root / "home")
        start = time.perf_counter()
        bases = []
        for b in range(args.bases):
            basis = make_basis(root / "src" / f"basis-{b}", name=f"basis-{b}", seed=b)
            registry.add(basis.path)
            bases.append(basis)
        per_basis = max(1, args.tasks // args.bases)
        for t in range(args.tasks):
            basis = bases[t // per_basis % len(bases)]
            task = make_task(root / "src" / f"task-{t}", basis, name=f"task-{t}", seed=t)
            registry.add(task.path)
        fill = time.perf_counter() - start
        middle = f"task-{args.tasks // 2}"
        content_id = registry.resolve(middle).content_id
        numbers = {
            "tasks": args.tasks,
            "bases": args.bases,
            "fill_seconds": round(fill, 2),
            "add_ms_mean": round(fill * 1000 / (args.tasks + args.bases), 2),
            "list_tasks_ms": round(median_ms(lambda: registry.list("tasks"), max(3, args.repeat // 4)), 2),
            "list_bases_ms": round(median_ms(lambda: registry.list("bases"), args.repeat), 2),
            "list_tasks_by_name_ms": round(median_ms(lambda: registry.list("tasks", name=middle), args.repeat), 2),
            "show_task_ms": round(median_ms(lambda: registry.show(middle), args.repeat), 2),
            "show_basis_ms": round(median_ms(lambda: registry.show("basis-0"), args.repeat), 2),
            "resolve_name_ms": round(median_ms(lambda: registry.resolve(middle), args.repeat), 3),
            "resolve_name_version_ms": round(median_ms(lambda: registry.resolve(f"{middle}:1"), args.repeat), 3),
            "resolve_alias_ms": round(median_ms(lambda: registry.resolve(f"{middle}@latest"), args.repeat), 3),
            "resolve_id_prefix_ms": round(median_ms(lambda: registry.resolve(content_id[7:19]), args.repeat), 3),
        }
        registry.close()
    width = max(map(len, numbers))
    for key, value in numbers.items():
        print(f"{key:<{width}}  {value}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(numbers, indent=2) + "\n")


if __name__ == "__main__":
    main()
