"""The build command on a local Dask cluster against the serial build, as a user runs it.

    python bench/dask_bench.py                # LoRA and full-checkpoint collections, 1 and 2 workers
    python bench/dask_bench.py --quick        # tiny sizes: keeps the script working

Each row is the whole ``unisub-hub build`` process (imports, cluster start-up and shutdown
included) with its defaults but ``--executor``; the median of three runs, and the largest
peak RSS of any one process of the run (driver or worker: ``ru_maxrss`` of the reaped
children). On a 2-core machine two workers cannot be faster than one process by much: the
point is what the cluster costs (start-up, shipping partial sums) and that it stays correct.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from lora_data import make_lora_collection  # noqa: E402
from run import PLANTED, make_checkpoints, principal_angle  # noqa: E402

EXECUTORS = [
    ("serial", []),
    ("dask, 1 worker", ["--executor", "dask", "--workers", "1"]),
    ("dask, 2 workers", ["--executor", "dask", "--workers", "2"]),
]
ROUND_OFF = ("serial, float64 sums", ["--precision", "float64"])
"""Where the default sums are float32 (LoRA), the float64 build is the yardstick of round-off:
any two summation orders (serial, 1 or 2 workers) may differ by as much as float32 and
float64 sums do, and no more."""


def timed_build(sources: list[str], out: Path, flags: list[str], k: int) -> tuple[float, int]:
    """Seconds and peak RSS (bytes) of one ``unisub-hub build`` process and its workers."""
    shutil.rmtree(out, ignore_errors=True)
    env = {**os.environ, "PYTHONPATH": str(HERE.parent), "UNISUB_HOME": str(out.parent / "home")}
    started = time.perf_counter()
    log = out.parent / f"{out.name}.stderr"
    with log.open("w") as errors:  # a file, not a pipe: Dask's warnings could fill a pipe nobody reads until the end
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "unisub_hub",
                "build",
                *sources,
                "--out",
                str(out),
                "--k",
                str(k),
                "--no-register",
                "--json",
                *flags,
            ],
            stdout=subprocess.DEVNULL,
            stderr=errors,
            env=env,
        )
        _, status, usage = os.wait4(process.pid, 0)  # this process's usage, with the workers it reaped
    seconds = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(log.read_text().strip().splitlines()[-1])
    return seconds, usage.ru_maxrss * 1024


def compare(serial: Path, other: Path, planted: int) -> tuple[float, float]:
    """The largest principal angle between the two bases' left sides: over all k directions,
    and over the top ``planted`` (the planted subspace, behind the spectrum's gap; the
    directions past it span noise, whose near-equal eigenvalues any round-off turns)."""
    from unisub_hub.format import load_basis

    ours, theirs = load_basis(serial), load_basis(other)
    pairs = [(ours.layer(n).left, theirs.layer(n).left) for n in ours.layer_names]
    return max(principal_angle(a, b) for a, b in pairs), max(
        principal_angle(a[:, :planted], b[:, :planted]) for a, b in pairs
    )


def section(
    name: str, sources: list[str], work: Path, repeats: int, log, k: int = 16, planted: int = 8, lora: bool = True
) -> list[dict]:  # noqa: ANN001
    rows = []
    for label, flags in EXECUTORS + [ROUND_OFF] * lora:
        runs = [
            timed_build(sources, work / f"{name}-{label.replace(' ', '_').replace(',', '')}", flags, k)
            for _ in range(repeats)
        ]
        seconds = sorted(r[0] for r in runs)[len(runs) // 2]
        row = {
            "collection": name,
            "sources": len(sources),
            "executor": label,
            "seconds": round(seconds, 2),
            "runs": [round(r[0], 2) for r in runs],
            "peak_rss_mib": round(max(r[1] for r in runs) / 2**20),
        }
        if label != "serial":
            row["angle_to_serial"], row["planted_angle_to_serial"] = compare(
                work / f"{name}-serial", work / f"{name}-{label.replace(' ', '_').replace(',', '')}", planted
            )
        rows.append(row)
        log(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument(
        "--paper",
        action="store_true",
        help="500 Mistral-7B-shaped q/k/v LoRAs (r=16, 32 layers, bf16, ~9.5 GB), one run per executor",
    )
    parser.add_argument("--data", type=Path, default=HERE / ".data")
    parser.add_argument("--out", type=Path, default=HERE / "results")
    args = parser.parse_args()
    work = args.data / "dask-work"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    log = lambda row: print(json.dumps(row), flush=True)  # noqa: E731
    rows = []
    if args.quick:
        loras = [str(p) for p in make_lora_collection(args.data / "dask-lora-quick", adapters=6, layers=1, d=64, r=4)]
        rows += section("LoRA 6 x d=64", loras, work, 1, log, k=2, planted=2)
        return
    if args.paper:  # the same collection as run.py --paper (planted 16, k=16)
        folder = args.data / "lora-n500-d4096-L32-s16-bfloat16"
        loras = [
            str(p)
            for p in make_lora_collection(
                folder, adapters=500, layers=32, d=4096, d_kv=1024, r=16, shared=16, dtype=torch.bfloat16
            )
        ]
        rows += section("paper: 500 LoRA (32 layers x q,k,v, d=4096, r=16, bf16)", loras, work, 1, log, planted=16)
        _write(rows, args.out, "-dask-paper")
        return
    for adapters in (16, 64):
        loras = [
            str(p) for p in make_lora_collection(args.data / "lora-1024", adapters=adapters, layers=8, d=1024, r=16)
        ][:adapters]
        rows += section(f"LoRA {adapters} x (8 layers x q,k,v, d=1024, r=16)", loras, work, 3, log)
    checkpoints = make_checkpoints(args.data / "full-1024", 16, layers=8, width=1024)
    rows += section("16 checkpoints x 8 layers 1024x1024", checkpoints, work, 3, log, planted=PLANTED, lora=False)
    _write(rows, args.out, "-dask")


def _write(rows: list[dict], out: Path, suffix: str) -> None:
    stamp = datetime.date.today().isoformat() + suffix
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{stamp}.json").write_text(json.dumps(rows, indent=2) + "\n")
    lines = [
        "| collection | executor | median s (runs) | peak RSS MiB | largest angle to serial: all k / planted |",
        "|---|---|---|---|---|",
    ]
    for row in rows:
        angles = (
            f"{row['angle_to_serial']:.1e} / {row['planted_angle_to_serial']:.1e}" if "angle_to_serial" in row else "-"
        )
        lines.append(
            f"| {row['collection']} | {row['executor']} | {row['seconds']} ({', '.join(map(str, row['runs']))}) | "
            f"{row['peak_rss_mib']} | {angles} |"
        )
    (out / f"{stamp}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
