"""Growing a basis against rebuilding it, on a collection grown from 32 to 64 members.

    python bench/grow_bench.py            # LoRA (wide sides: sketches) and checkpoints (Grams)
    python bench/grow_bench.py --quick    # tiny sizes: keeps the script working

Each step adds 8 members: ``unisub-hub build NEW --update PREVIOUS`` against ``unisub-hub
build ALL`` (both whole processes, imports included, k=16). Reported per step: both times,
the largest principal angle between the grown and the rebuilt bases (per layer and side, the
worst) against the default rebuild (randomized on wide layers) and against an exact one
(``--solver exact``), and the explained variance each keeps of the whole collection (from
the manifests' spectra). The first build (32 members) is run with ``--keep-state``; its extra
pass is timed too.
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
from run import make_checkpoints, principal_angle  # noqa: E402


def command(args: list[str], home: Path) -> float:
    env = {**os.environ, "PYTHONPATH": str(HERE.parent), "UNISUB_HOME": str(home)}
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "unisub_hub", "build", *args, "--json"], check=True, env=env, capture_output=True
    )
    return time.perf_counter() - started


def compare(grown: Path, rebuilt: Path) -> dict:
    from unisub_hub.format import load_basis

    ours, theirs = load_basis(grown), load_basis(rebuilt)
    worst = 0.0
    variance = {"grown": [], "rebuilt": []}
    for name in theirs.layer_names:
        a, b = ours.layer(name, dtype=torch.float64), theirs.layer(name, dtype=torch.float64)
        for side in ("left", "right"):
            if getattr(b, side) is not None:
                worst = max(worst, principal_angle(getattr(a, side), getattr(b, side)))
        for label, entry in (("grown", ours.entry(name)), ("rebuilt", theirs.entry(name))):
            variance[label].append(
                min(float(v) for v in entry.get("explained_variance", {}).values())
                if entry.get("explained_variance")
                else float("nan")
            )
    mean = lambda values: sum(values) / len(values)  # noqa: E731
    return {
        "largest_angle": worst,
        "explained_variance_grown": round(mean(variance["grown"]), 6),
        "explained_variance_rebuilt": round(mean(variance["rebuilt"]), 6),
    }


def grow_series(name: str, members: list[str], work: Path, start: int, step: int, k: int, log) -> list[dict]:  # noqa: ANN001
    home = work / f"home-{name}"
    rows = []
    first = work / f"{name}-{start}"
    plain = command(
        [*members[:start], "--out", str(work / f"{name}-plain-{start}"), "--k", str(k), "--no-register"], home
    )
    kept = command([*members[:start], "--out", str(first), "--k", str(k), "--keep-state", "--no-register"], home)
    rows.append(
        {
            "collection": name,
            "members": start,
            "build_s": round(plain, 2),
            "build_keep_state_s": round(kept, 2),
            "state_bytes": sum(p.stat().st_size for p in (first / "state").iterdir()),
        }
    )
    log(rows[-1])
    previous = first
    for count in range(start + step, len(members) + 1, step):
        grown = work / f"{name}-{count}"
        rebuilt = work / f"{name}-rebuilt-{count}"
        grow_s = command(
            [*members[count - step : count], "--update", str(previous), "--out", str(grown), "--no-register"], home
        )
        rebuild_s = command([*members[:count], "--out", str(rebuilt), "--k", str(k), "--no-register"], home)
        command(
            [*members[:count], "--out", str(rebuilt) + "-exact", "--k", str(k), "--solver", "exact", "--no-register"],
            home,
        )
        exact = compare(grown, Path(str(rebuilt) + "-exact"))
        rows.append(
            {
                "collection": name,
                "members": count,
                "grow_s": round(grow_s, 2),
                "rebuild_s": round(rebuild_s, 2),
                **compare(grown, rebuilt),
                "largest_angle_to_exact": exact["largest_angle"],
                "explained_variance_exact": exact["explained_variance_rebuilt"],
            }
        )
        log(rows[-1])
        previous = grown
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--data", type=Path, default=HERE / ".data")
    parser.add_argument("--out", type=Path, default=HERE / "results")
    args = parser.parse_args()
    work = args.data / "grow-work"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    log = lambda row: print(json.dumps(row), flush=True)  # noqa: E731
    if args.quick:
        loras = [str(p) for p in make_lora_collection(args.data / "grow-lora-quick", adapters=8, layers=1, d=64, r=4)]
        grow_series("LoRA quick", loras, work, 4, 2, 2, log)
        return
    rows = []
    loras = [
        str(p) for p in make_lora_collection(args.data / "grow-lora-1024", adapters=64, layers=4, d=1024, r=16, seed=7)
    ]
    rows += grow_series("LoRA 4 layers x q,k,v, d=1024, r=16", loras, work, 32, 8, 16, log)
    wide = [
        str(p)
        for p in make_lora_collection(
            args.data / "grow-lora-14336", adapters=64, layers=1, d=14336, d_kv=1024, r=16, seed=9
        )
    ]
    rows += grow_series("LoRA 1 layer x q,k,v, d=14336 (q sides sketched), planted 8, k=8", wide, work, 32, 8, 8, log)
    checkpoints = make_checkpoints(args.data / "grow-full-512", 64, layers=4, width=512)
    rows += grow_series("checkpoints 4 layers 512x512", checkpoints, work, 32, 8, 16, log)
    stamp = datetime.date.today().isoformat() + "-grow"
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{stamp}.json").write_text(json.dumps(rows, indent=2) + "\n")
    lines = [
        "| collection | members | grow s | rebuild s | largest angle to the rebuild / to an exact rebuild (rad) | "
        "explained var. grown / rebuilt / exact |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        if "grow_s" in row:
            lines.append(
                f"| {row['collection']} | {row['members']} | {row['grow_s']} | {row['rebuild_s']} | "
                f"{row['largest_angle']:.1e} / {row['largest_angle_to_exact']:.1e} | "
                f"{row['explained_variance_grown']:.4f} / {row['explained_variance_rebuilt']:.4f} / "
                f"{row['explained_variance_exact']:.4f} |"
            )
        else:
            lines.append(
                f"| {row['collection']} | {row['members']} (first build) | keep-state build "
                f"{row['build_keep_state_s']} | plain build {row['build_s']} | "
                f"state {row['state_bytes'] / 2**20:.1f} MiB | |"
            )
    (args.out / f"{stamp}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
