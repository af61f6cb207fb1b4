"""What users wait for: each contender's command line, with its defaults, as a whole process.

    python bench/command_bench.py            # d=1024 and d=4096, 16 to 512 adapters (about an hour on 2 cores)
    python bench/command_bench.py --quick    # two tiny collections, one run each (a smoke run)

Unlike ``bench/run.py`` (engine timings, imports excluded), the clock here covers the whole
process: interpreter start, imports, reading, the build, writing the output and, for
unisub-hub, the registry. Peak memory is the process's own peak RSS, from ``wait4``.

Contenders and their modes (all from their ``--help``):

- ``unisub-hub build SOURCES --out OUT --k K``: the defaults, which are also its fastest
  documented mode for adapters (float32 sketch sums; null baseline, quality report and
  registration on);
- ``lorashare compress SOURCES -o OUT -k K``: its default (everything in memory, its fastest)
  and ``--layer-by-layer`` (its memory-saving mode);
- ``vlora compress SOURCES -o OUT -k K`` (vlora-dev has one mode).

Runs alternate between contenders, three rounds; a contender whose first run takes longer
than ``REPEAT_UNDER_SECONDS`` runs once. Accuracy: the first ``ACCURACY_ADAPTERS`` members are
rebuilt through each tool's own command (``project`` + ``materialize``, ``lorashare
reconstruct``, ``vlora export``) and compared with the originals' updates ``scale * B A``.
Results go to ``bench/results/<date>-commands.{json,md}``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from safetensors.torch import load_file

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from lora_data import make_lora_collection  # noqa: E402

REPEAT_UNDER_SECONDS = 60.0
ROUNDS = 3
ACCURACY_ADAPTERS = 4
LAYER_BY_LAYER_UP_TO = 16
"""lorashare's ``--layer-by-layer`` re-reads every adapter per module (146 s for 64 adapters at
d=1024 in the engine benchmark); above this many adapters it is not run."""

STANDARD = [{"d": 1024, "layers": 8, "adapters": n, "k": 16} for n in (16, 64, 512)] + [
    {"d": 4096, "d_kv": 1024, "layers": 2, "adapters": n, "k": 16} for n in (16, 64, 512)
]
QUICK = [{"d": 128, "layers": 2, "adapters": 6, "k": 4}, {"d": 256, "d_kv": 64, "layers": 1, "adapters": 6, "k": 4}]


def commands(sources: list[str], out: Path, k: int, adapters: int) -> dict[str, list[str]]:
    """Each contender's command line on one collection (``out`` must not exist)."""
    contenders = {
        "unisub-hub": ["unisub-hub", "build", *sources, "--out", str(out), "--k", str(k)],
        "lorashare": ["lorashare", "compress", *sources, "-o", str(out), "-k", str(k)],
        "lorashare --layer-by-layer": [
            "lorashare",
            "compress",
            *sources,
            "-o",
            str(out),
            "-k",
            str(k),
            "--layer-by-layer",
        ],
        "vlora-dev": ["vlora", "compress", *sources, "-o", str(out), "-k", str(k)],
    }
    if adapters > LAYER_BY_LAYER_UP_TO:
        del contenders["lorashare --layer-by-layer"]
    return {name: line for name, line in contenders.items() if shutil.which(line[0])}


_LAUNCHER = """
import os, sys, time
start = time.perf_counter()
pid = os.fork()
if pid == 0:
    os.execvp(sys.argv[2], sys.argv[2:])
_, status, usage = os.wait4(pid, 0)
with open(sys.argv[1], "w") as report:
    report.write(f"{time.perf_counter() - start} {usage.ru_maxrss} {os.waitstatus_to_exitcode(status)}")
"""
"""Forks and waits for the command from a bare interpreter: Linux records the old address
space's peak at ``exec``, so a command started straight from this process (torch loaded, a
collection just generated) would report this process's peak as its own."""


def run_whole(line: list[str], env: dict[str, str], work: Path) -> dict:
    """Wall time and peak RSS of one process (and the children it waited for)."""
    report = work / "launch-report"
    process = subprocess.run(
        [sys.executable, "-S", "-c", _LAUNCHER, str(report), *line],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    seconds, peak_kib, code = report.read_text().split()
    report.unlink()
    row = {"seconds": float(seconds), "peak_rss_mib": int(peak_kib) / 1024}
    if int(code):
        row["error"] = (process.stderr.decode(errors="replace").strip().splitlines() or ["(no message)"])[-1][:300]
    return row


def time_contenders(sources: list[str], work: Path, k: int, log, only: set[str] | None = None) -> dict[str, dict]:  # noqa: ANN001
    lines = {
        name: line
        for name, line in commands(sources, work / "out", k, len(sources)).items()
        if only is None or name in only
    }
    runs: dict[str, list[dict]] = {name: [] for name in lines}
    for round_number in range(ROUNDS):
        for name, line in lines.items():
            if round_number and (runs[name][0]["seconds"] >= REPEAT_UNDER_SECONDS or "error" in runs[name][0]):
                continue
            out = work / "out"
            shutil.rmtree(out, ignore_errors=True)
            home = Path(tempfile.mkdtemp(dir=work, prefix="home-"))
            run = run_whole(line, {**os.environ, "UNISUB_HOME": str(home)}, work)
            shutil.rmtree(home)
            runs[name].append(run)
            log(
                f"    {name}: {run['seconds']:.2f} s, {run['peak_rss_mib']:.0f} "
                f"MiB{' ' + run['error'] if 'error' in run else ''}"
            )
            if round_number == 0 and out.exists():  # the first run's output is kept for the accuracy check
                shutil.move(out, work / f"kept-{_slug(name)}")
            else:
                shutil.rmtree(out, ignore_errors=True)
    return {name: _summary(found) for name, found in runs.items()}


def _summary(runs: list[dict]) -> dict:
    failed = [run for run in runs if "error" in run]
    if failed:
        return {"error": failed[0]["error"]}
    return {
        "seconds": statistics.median(run["seconds"] for run in runs),
        "peak_rss_mib": max(run["peak_rss_mib"] for run in runs),
        "runs": [round(run["seconds"], 2) for run in runs],
    }


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


_LORA_KEY = re.compile(r"(?:base_model\.model\.)?(?P<module>.+)\.lora_(?P<side>[AB])(?:\.[A-Za-z_]\w*)?\.weight$")


def updates(folder: Path) -> dict[str, torch.Tensor]:
    """``scale * B A`` per module of a PEFT adapter folder, keyed by module name."""
    config = json.loads((folder / "adapter_config.json").read_text())
    scale = config["lora_alpha"] / config["r"]
    factors: dict[str, dict[str, torch.Tensor]] = {}
    for key, tensor in load_file(folder / "adapter_model.safetensors").items():
        match = _LORA_KEY.match(key)
        if match:
            factors.setdefault(match["module"], {})[match["side"]] = tensor.double()
    return {module: scale * (pair["B"] @ pair["A"]) for module, pair in factors.items()}


def relative_error(originals: list[Path], rebuilt: list[Path]) -> float:
    """``sqrt(sum ||W' - W||^2 / sum ||W||^2)`` over every module of the given members."""
    miss = total = 0.0
    for original, copy in zip(originals, rebuilt, strict=True):
        wanted, got = updates(original), updates(copy)
        if set(wanted) != set(got):
            raise ValueError(f"{copy}: modules {sorted(set(wanted) ^ set(got))[:3]} differ from {original}")
        for module, update in wanted.items():
            miss += float((got[module] - update).square().sum())
            total += float(update.square().sum())
    return (miss / total) ** 0.5


def rebuild(name: str, output: Path, source: Path, target: Path, work: Path) -> None:
    """One member rebuilt through the contender's own command, as a PEFT folder at ``target``."""
    env = {**os.environ, "UNISUB_HOME": str(work / "accuracy-home")}
    if name.startswith("unisub-hub"):
        task = target.with_name(target.name + "-task")
        steps = [
            ["unisub-hub", "project", str(source), "--basis", str(output), "--out", str(task)],
            ["unisub-hub", "materialize", str(task), "--out", str(target)],
        ]
    elif name.startswith("lorashare"):
        steps = [["lorashare", "reconstruct", str(output), "--adapter", source.name, "-o", str(target)]]
    else:
        alpha = json.loads((source / "adapter_config.json").read_text())["lora_alpha"]
        steps = [["vlora", "export", str(output), source.name, "-o", str(target), "--alpha", str(alpha)]]
    for step in steps:
        subprocess.run(step, env=env, check=True, capture_output=True)
    if not (target / "adapter_model.safetensors").is_file():  # lorashare writes one folder per adapter
        nested = target / source.name
        if (nested / "adapter_model.safetensors").is_file():
            for item in nested.iterdir():
                item.rename(target / item.name)


def accuracy(name: str, sources: list[Path], work: Path) -> float | None:
    output = work / f"kept-{_slug(name)}"
    if not output.exists():
        return None
    members = sources[:ACCURACY_ADAPTERS]
    targets = [work / "rebuilt" / _slug(name) / member.name for member in members]
    for member, target in zip(members, targets, strict=True):
        rebuild(name, output, member, target, work)
    return relative_error(members, targets)


def bench(configs: list[dict], data: Path, log, only: set[str] | None = None) -> list[dict]:  # noqa: ANN001
    """Every contender (or those in ``only``) on every collection."""
    rows = []
    for config in configs:
        shape = {key: config[key] for key in ("adapters", "layers", "d", "d_kv") if key in config}
        label = f"{config['adapters']} adapters, {config['layers']} layers q/k/v, d={config['d']}" + (
            f" (k/v {config['d_kv']})" if "d_kv" in config else ""
        )
        folder = data / "-".join(f"{key}{value}" for key, value in shape.items())
        start = time.perf_counter()
        sources = make_lora_collection(folder, **shape, r=16)
        log(f"{label}: generated in {time.perf_counter() - start:.0f} s")
        bytes_on_disk = sum(f.stat().st_size for s in sources for f in s.iterdir())
        with tempfile.TemporaryDirectory(dir=data) as scratch:
            work = Path(scratch)
            timings = time_contenders([str(s) for s in sources], work, config["k"], log, only)
            for name, timing in timings.items():
                timing["relative_error"] = None if "error" in timing else accuracy(name, sources, work)
                rows.append(
                    {
                        "collection": label,
                        **shape,
                        "k": config["k"],
                        "bytes_on_disk": bytes_on_disk,
                        "contender": name,
                        **timing,
                    }
                )
    return rows


ACCURACY_SLACK = 1.05
"""A peer is "as accurate" when its relative error is at most this times unisub-hub's."""


def ratios(rows: list[dict]) -> list[dict]:
    """unisub-hub's default command against the fastest peer command on each collection, and
    against the fastest one that is as accurate (a peer that loses most of every update is
    fast for a reason)."""
    found = []
    for label in dict.fromkeys(row["collection"] for row in rows):
        here = {row["contender"]: row for row in rows if row["collection"] == label and "error" not in row}
        ours = here.get("unisub-hub")
        peers = [row for name, row in here.items() if not name.startswith("unisub-hub")]
        if not ours or not peers:
            continue
        accurate = [
            row
            for row in peers
            if row["relative_error"] is not None and row["relative_error"] <= ACCURACY_SLACK * ours["relative_error"]
        ]
        for basis, group in (("fastest", peers), ("fastest as accurate", accurate)):
            if not group:
                found.append({"collection": label, "against": basis, "peer": None})
                continue
            peer = min(group, key=lambda row: row["seconds"])
            found.append(
                {
                    "collection": label,
                    "against": basis,
                    "peer": peer["contender"],
                    "speedup": peer["seconds"] / ours["seconds"],
                    "peak_rss_fraction": ours["peak_rss_mib"] / peer["peak_rss_mib"],
                    "error_ours": ours["relative_error"],
                    "error_peer": peer["relative_error"],
                }
            )
    return found


def markdown(rows: list[dict], found: list[dict]) -> str:
    lines = [
        "# Whole commands, defaults, imports included",
        "",
        f"Machine: {os.cpu_count()} cores, torch {torch.__version__}; medians of {ROUNDS} alternating runs (runs over "
        f"{REPEAT_UNDER_SECONDS:.0f} s: one).",
        "",
        "| collection | contender | seconds | peak RSS MiB | runs | relative error (first members) |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        if "error" in row:
            lines.append(f"| {row['collection']} | {row['contender']} | failed: {row['error']} | | | |")
            continue
        error = "" if row["relative_error"] is None else f"{row['relative_error']:.4f}"
        lines.append(
            f"| {row['collection']} | {row['contender']} | {row['seconds']:.2f} | {row['peak_rss_mib']:.0f} | "
            f"{row['runs']} | {error} |"
        )
    lines += [
        "",
        "| collection | against | peer | unisub-hub speed-up | peak RSS fraction | error ours / peer |",
        "|---|---|---|---|---|---|",
    ]
    for ratio in found:
        if ratio["peer"] is None:
            lines.append(f"| {ratio['collection']} | {ratio['against']} | none | | | |")
            continue
        lines.append(
            f"| {ratio['collection']} | {ratio['against']} | {ratio['peer']} | {ratio['speedup']:.2f}x | "
            f"{ratio['peak_rss_fraction']:.2f} | "
            f"{ratio['error_ours']:.4f} / {ratio['error_peer']:.4f} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="two tiny collections, one run each")
    parser.add_argument(
        "--data",
        type=Path,
        default=Path(tempfile.gettempdir()) / "unisub-command-bench",
        help="where collections are generated (kept between runs)",
    )
    parser.add_argument("--out", type=Path, default=HERE / "results")
    parser.add_argument("--tag", default="-commands")
    args = parser.parse_args()
    global ROUNDS
    if args.quick:
        ROUNDS = 1
    args.data.mkdir(parents=True, exist_ok=True)
    rows = bench(QUICK if args.quick else STANDARD, args.data, lambda line: print(line, flush=True))
    found = ratios(rows)
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / f"{datetime.date.today().isoformat()}{args.tag}"
    stem.with_suffix(".json").write_text(json.dumps({"rows": rows, "ratios": found}, indent=1))
    stem.with_suffix(".md").write_text(markdown(rows, found))
    print(markdown(rows, found))


if __name__ == "__main__":
    main()
