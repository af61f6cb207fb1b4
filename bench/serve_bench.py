"""`unisub-hub serve` against the same server serving peft LoRA adapters, as whole processes.

    python bench/serve_bench.py            # MiniLM and a small GPT-2, 1 / 32 / 1,000 distinct tasks
    python bench/serve_bench.py --quick    # 40 tasks, few requests: keeps the script working

Both servers run at once on loopback ports: ``unisub-hub serve`` (tasks as coefficients on one
basis) and ``bench/lora_server.py`` (the same app, worker and batching; tasks as LoRA adapters
in one ``PeftModel``, mixed batches through peft's ``adapter_names=``). The same tasks exist
both ways: each synthetic LoRA adapter, and its projection onto a basis built from 32 of them.

Per model and server: the cold load of every task (``POST /v1/tasks/load``; the server's own
timing), resident bytes per task, RSS after 1, 32 and all tasks, then a closed loop of
``CLIENTS`` concurrent clients per phase (one task for all; 32 tasks; every task), phases
alternating between the servers and repeated ``ROUNDS`` times: throughput and p50/p99
latency (medians over rounds), failed requests. Results: bench/results/DATE-serve.{json,md}.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import random
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import torch
from safetensors.torch import save_file

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"
CLIENTS = 32
ROUNDS = 2
TEXTS = [
    "the film was a quiet delight from start to end",
    "service was slow and the food arrived cold",
    "a solid, forgettable sequel",
    "I would buy this again without a second thought",
]
PROMPTS = ["the cat sat on", "once upon a time", "the market opened", "a dog ran"]


# --- the models and tasks ------------------------------------------------------------------------


def synthetic_loras(base: Path, out: Path, count: int, *, targets: list[str], rank: int, seed: int = 0) -> list[Path]:
    """``count`` PEFT LoRA folders of random factors on ``targets`` (what serving costs does not
    depend on the numbers), written directly with safetensors."""
    from transformers import AutoModel
    from transformers.pytorch_utils import Conv1D

    model = AutoModel.from_pretrained(base) if "gpt2" not in base.name else _causal(base)
    modules = {
        name: module
        for name, module in model.named_modules()
        if name.split(".")[-1] in targets and isinstance(module, torch.nn.Linear | Conv1D)
    }
    conv = any(isinstance(module, Conv1D) for module in modules.values())
    prefix = "base_model.model." + ("" if "gpt2" in base.name else "bert.")
    paths = []
    gen = torch.Generator().manual_seed(seed)
    for number in range(count):
        folder = out / f"lora-{number}"
        paths.append(folder)
        if (folder / "adapter_model.safetensors").is_file():
            continue
        tensors = {}
        for name, module in modules.items():
            fan_in, fan_out = module.weight.shape if isinstance(module, Conv1D) else module.weight.shape[::-1]
            tensors[f"{prefix}{name}.lora_A.weight"] = torch.randn(rank, fan_in, generator=gen) / fan_in**0.5
            tensors[f"{prefix}{name}.lora_B.weight"] = 0.05 * torch.randn(fan_out, rank, generator=gen)
        folder.mkdir(parents=True, exist_ok=True)
        config = {
            "peft_type": "LORA",
            "r": rank,
            "lora_alpha": rank,
            "target_modules": targets,
            "fan_in_fan_out": conv,
            "task_type": None,
            "bias": "none",
        }
        (folder / "adapter_config.json").write_text(json.dumps(config))
        save_file(tensors, folder / "adapter_model.safetensors")
    return paths


def _causal(base: Path) -> torch.nn.Module:
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(base).transformer


def prepare(work: Path, family: str, count: int, home: Path) -> dict[str, Any]:
    """The base, the LoRA adapters, a basis of 32 of them and every adapter's projection, registered in ``home``."""
    from unisub_hub.format import load_basis
    from unisub_hub.pipeline.build import BuildSettings, build
    from unisub_hub.pipeline.project import project
    from unisub_hub.registry import Registry

    root = work / family
    root.mkdir(parents=True, exist_ok=True)
    if family == "minilm":
        from unisub_hub.examples.minilm import ensure_base

        base = ensure_base(root / "base")
        targets, rank = ["query", "value"], 8
    else:
        base = _gpt2(root)
        targets, rank = ["c_attn"], 8
    adapters = synthetic_loras(base, root / "loras", count, targets=targets, rank=rank)
    basis_folder = root / "basis"
    if not (basis_folder / "unisub_basis.json").is_file():
        build([str(a) for a in adapters[:32]], basis_folder, BuildSettings(k=8, name=f"{family}-serve", device="cpu"))
    registry = Registry(home)
    registry.add(basis_folder)
    basis = load_basis(basis_folder)
    for number, adapter in enumerate(adapters):
        task = root / "tasks" / f"t{number}"
        if not (task / "unisub_coefficients.json").is_file():
            project(str(adapter), basis, task, name=f"{family}-t{number}", device="cpu")
        registry.add(task)
    return {"base": base, "basis": basis_folder, "adapters": adapters}


def _gpt2(root: Path) -> Path:
    from unisub_hub.examples.causal import make_gpt2, train_tokenizer

    folder = root / "gpt2"
    if (folder / "model.safetensors").is_file():
        return folder
    rng = random.Random(0)
    words = "the a cat dog sat ran on in market opened time once upon quiet slow film food".split()
    texts = [" ".join(rng.choice(words) for _ in range(12)) for _ in range(2000)]
    tokenizer = train_tokenizer(texts, root / "tokenizer")
    return make_gpt2(folder, tokenizer, layers=4, width=256, heads=4, positions=128)


# --- the servers ----------------------------------------------------------------------------------


class Process:
    """A server process on an ephemeral loopback port (``url`` once it answers ``/healthz``)."""

    def __init__(self, command: list[str], env: dict[str, str]) -> None:
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
        self.lines: list[str] = []
        self.url = ""
        deadline = time.monotonic() + 300
        while not self.url and time.monotonic() < deadline:
            line = self.process.stdout.readline() if self.process.stdout else ""
            if not line and self.process.poll() is not None:
                raise RuntimeError("server exited: " + "".join(self.lines))
            self.lines.append(line)
            if found := re.search(r"on (http://127\.0\.0\.1:\d+)", line):
                self.url = found.group(1)
        threading.Thread(target=lambda: [self.lines.append(x) for x in self.process.stdout or ()], daemon=True).start()

    def memory(self, field_name: str = "VmRSS") -> int:
        """``VmRSS`` (now) or ``VmHWM`` (peak) of the process, in bytes."""
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith(field_name + ":"):
                return int(line.split()[1]) * 1024
        return 0

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=60)


def start_servers(setup: dict[str, Any], home: Path, *, peer: bool = True) -> dict[str, Process]:
    env = {**os.environ, "PYTHONPATH": str(REPO), "UNISUB_HOME": str(home), "HF_HUB_OFFLINE": "1"}
    common = ["--max-batch", "32", "--max-wait-ms", "5", "--port", "0"]
    ours = [sys.executable, "-m", "unisub_hub", "serve", str(setup["basis"]), "--base", str(setup["base"]), *common]
    ours += ["--device", "cpu", "--max-resident-mb", "100000", "--max-queue", "4096"]
    lora = [sys.executable, str(REPO / "bench" / "lora_server.py"), "--base", str(setup["base"]), *common]
    return {"unisub-hub": Process(ours, env), **({"peft LoRA": Process(lora, env)} if peer else {})}


# --- measuring --------------------------------------------------------------------------------------


@dataclass
class Phase:
    latencies: list[float] = field(default_factory=list)
    failed: int = 0
    seconds: float = 0.0

    def summary(self) -> dict[str, float]:
        ordered = sorted(self.latencies)
        return {
            "requests": len(ordered) + self.failed,
            "failed": self.failed,
            "throughput_rps": round(len(ordered) / self.seconds, 2),
            "p50_ms": round(1000 * ordered[len(ordered) // 2], 2),
            "p99_ms": round(1000 * ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))], 2),
        }


def load_tasks(server: Process, names: list[str], references: list[str]) -> list[float]:
    """Load each task; the server-side seconds of each cold load."""
    seconds = []
    with httpx.Client(timeout=300) as client:
        for name, reference in zip(names, references, strict=True):
            answer = client.post(server.url + "/v1/tasks/load", json={"task": reference, "name": name})
            answer.raise_for_status()
            seconds.append(answer.json()["seconds"])
    return seconds


def run_phase(server: Process, family: str, tasks: list[str], requests: int) -> Phase:
    """``requests`` requests from ``CLIENTS`` concurrent clients, each for a random task of ``tasks``."""
    rng = random.Random(f"{family}-{len(tasks)}")
    bodies = []
    for number in range(requests):
        task = rng.choice(tasks)
        if family == "minilm":
            bodies.append(("/v1/classify", {"task": task, "inputs": [TEXTS[number % len(TEXTS)]]}))
        else:
            prompt = PROMPTS[number % len(PROMPTS)]
            bodies.append(("/v1/completions", {"model": task, "prompt": prompt, "max_tokens": 8, "temperature": 0}))
    phase = Phase()
    lock = threading.Lock()
    client = httpx.Client(timeout=300, limits=httpx.Limits(max_connections=CLIENTS))

    def send(item: tuple[str, dict[str, Any]]) -> None:
        started = time.perf_counter()
        try:
            ok = client.post(server.url + item[0], json=item[1]).status_code == 200
        except httpx.HTTPError:
            ok = False
        with lock:
            if ok:
                phase.latencies.append(time.perf_counter() - started)
            else:
                phase.failed += 1

    with ThreadPoolExecutor(CLIENTS) as pool:
        list(pool.map(send, bodies[:CLIENTS]))  # warm-up, not counted
        phase.latencies.clear()
        phase.failed = 0
        started = time.perf_counter()
        list(pool.map(send, bodies))
        phase.seconds = time.perf_counter() - started
    client.close()
    return phase


def measure_loads(server: Process, names: list[str], references: list[str]) -> dict[str, Any]:
    """Load every task (1, then up to 32, then the rest): RSS at each step, bytes per task, cold-load times."""
    count = len(names)
    entry: dict[str, Any] = {"rss_start": server.memory()}
    cold = load_tasks(server, names[:1], references[:1])
    entry["rss_1"] = server.memory()
    cold += load_tasks(server, names[1:32], references[1:32])
    entry["rss_32"] = server.memory()
    cold += load_tasks(server, names[32:], references[32:])
    entry[f"rss_{count}"] = server.memory()
    listed = httpx.get(server.url + "/v1/tasks", timeout=60).json()["tasks"]
    entry["bytes_per_task"] = statistics.median(task["bytes"] for task in listed if task.get("resident"))
    ordered = sorted(cold)
    entry["cold_load_ms"] = {
        "p50": round(1000 * ordered[len(ordered) // 2], 3),
        "p99": round(1000 * ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))], 3),
    }
    entry["rss_growth_1_to_all"] = entry[f"rss_{count}"] - entry["rss_1"]
    return entry


def memory_only(family: str, work: Path, count: int, peer_results: dict[str, Any]) -> dict[str, Any]:
    """Our server alone: RSS growth and cold loads of ``count`` tasks, beside the LoRA server's
    growth from an earlier full run (``peer_results``; memory, unlike time, barely varies between runs)."""
    home = work / f"{family}-home"
    setup = prepare(work, family, count, home)
    server = start_servers(setup, home, peer=False)["unisub-hub"]
    try:
        entry = measure_loads(server, [f"t{i}" for i in range(count)], [f"{family}-t{i}" for i in range(count)])
    finally:
        server.stop()
    earlier = peer_results[family]["servers"]
    entry["peer_growth_earlier_run"] = earlier["peft LoRA"]["rss_growth_1_to_all"]
    entry["ours_growth_earlier_run"] = earlier["unisub-hub"]["rss_growth_1_to_all"]
    entry["growth_ratio"] = entry["rss_growth_1_to_all"] / entry["peer_growth_earlier_run"]
    return entry


def bench_family(family: str, work: Path, count: int, requests: int) -> dict[str, Any]:
    home = work / f"{family}-home"
    t0 = time.perf_counter()
    setup = prepare(work, family, count, home)
    print(f"{family}: {count} tasks ready in {time.perf_counter() - t0:.0f} s", flush=True)
    servers = start_servers(setup, home)
    names = [f"t{i}" for i in range(count)]
    result: dict[str, Any] = {"tasks": count, "servers": {}}
    try:
        for label, server in servers.items():
            references = (
                [f"{family}-t{i}" for i in range(count)]
                if label == "unisub-hub"
                else [str(a) for a in setup["adapters"]]
            )
            entry = measure_loads(server, names, references)
            result["servers"][label] = entry
            print(f"  {label}: loaded {count} tasks, RSS {entry[f'rss_{count}'] / 2**20:.0f} MiB", flush=True)
        for phase_name, tasks in (("1 task", names[:1]), ("32 tasks", names[:32]), (f"{count} tasks", names)):
            rounds: dict[str, list[Phase]] = {label: [] for label in servers}
            for _ in range(ROUNDS):
                for label, server in servers.items():  # alternating: the machine's noise falls on both
                    rounds[label].append(run_phase(server, family, tasks, requests))
            for label, phases in rounds.items():
                summaries = [phase.summary() for phase in phases]
                merged = {key: statistics.median(s[key] for s in summaries) for key in summaries[0]}
                merged["failed"] = sum(s["failed"] for s in summaries)
                result["servers"][label].setdefault("phases", {})[phase_name] = merged
                print(f"  {label} {phase_name}: {merged}", flush=True)
        for label, server in servers.items():
            result["servers"][label]["peak_rss"] = server.memory("VmHWM")
    finally:
        for server in servers.values():
            server.stop()
    return result


def verdicts(family: str, result: dict[str, Any]) -> list[str]:
    ours, peer = result["servers"]["unisub-hub"], result["servers"]["peft LoRA"]
    count = result["tasks"]
    growth = ours["rss_growth_1_to_all"] / max(peer["rss_growth_1_to_all"], 1)
    mixed = ours["phases"]["32 tasks"]["throughput_rps"] / peer["phases"]["32 tasks"]["throughput_rps"]
    tail = ours["phases"]["32 tasks"]["p99_ms"] / ours["phases"]["1 task"]["p99_ms"]
    failed = sum(p["failed"] for s in (ours, peer) for p in s["phases"].values())
    return [
        f"{family}: RSS growth 1 -> {count} tasks: {growth:.3f} of the LoRA server's (goal <= 0.05): "
        f"{'met' if growth <= 0.05 else 'NOT met'}",
        f"{family}: throughput with 32 distinct tasks: {mixed:.2f}x the LoRA server's (goal >= 1.3): "
        f"{'met' if mixed >= 1.3 else 'NOT met'}",
        f"{family}: p99 of 32-task traffic / single-task traffic: {tail:.2f} (goal <= 1.15): "
        f"{'met' if tail <= 1.15 else 'NOT met'}",
        f"{family}: p99 cold load {ours['cold_load_ms']['p99']:.2f} ms (goal < 5): "
        f"{'met' if ours['cold_load_ms']['p99'] < 5 else 'NOT met'}",
        f"{family}: failed requests {failed} (goal 0): {'met' if failed == 0 else 'NOT met'}",
    ]


def markdown(results: dict[str, Any], lines: list[str], quick: bool) -> str:
    out = [f"# Serving benchmark ({datetime.date.today()}{', quick' if quick else ''})", ""]
    out += [
        f"2 cores, CPU, float32; {CLIENTS} concurrent clients on loopback; phases alternate between the servers, "
        f"{ROUNDS} rounds, medians shown. `python bench/serve_bench.py`.",
        "",
    ]
    for family, result in results.items():
        count = result["tasks"]
        out += [
            f"## {family} ({count} tasks)",
            "",
            "| server | phase | req/s | p50 ms | p99 ms | failed |",
            "|---|---|---|---|---|---|",
        ]
        for label, entry in result["servers"].items():
            for phase, numbers in entry["phases"].items():
                out.append(
                    f"| {label} | {phase} | {numbers['throughput_rps']:.1f} | {numbers['p50_ms']:.1f} | "
                    f"{numbers['p99_ms']:.1f} | {numbers['failed']} |"
                )
        out += ["", "| server | bytes per task | cold load p50 / p99 ms | RSS 1 task | RSS all | growth | peak RSS |"]
        out += ["|---|---|---|---|---|---|---|"]
        for label, entry in result["servers"].items():
            mib = 2**20
            out.append(
                f"| {label} | {entry['bytes_per_task']:,.0f} | {entry['cold_load_ms']['p50']:.2f} / "
                f"{entry['cold_load_ms']['p99']:.2f} | {entry['rss_1'] / mib:.0f} MiB | "
                f"{entry[f'rss_{count}'] / mib:.0f} MiB | "
                f"{entry['rss_growth_1_to_all'] / mib:.1f} MiB | {entry['peak_rss'] / mib:.0f} MiB |"
            )
        out.append("")
    out += ["## Goals", ""] + [f"- {line}" for line in lines] + [""]
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="40 tasks and few requests")
    parser.add_argument("--work", type=Path, default=None, help="where models and tasks are cached")
    parser.add_argument("--families", default="minilm,gpt2")
    parser.add_argument("--tasks", type=int, default=None, help="distinct tasks (default 1,000; --quick 40)")
    parser.add_argument("--out", type=Path, default=None, help="results stem (default bench/results/DATE-serve)")
    parser.add_argument(
        "--memory-only",
        type=Path,
        metavar="PEER_JSON",
        help="our server alone: RSS growth and cold loads, against the LoRA server's growth in PEER_JSON",
    )
    args = parser.parse_args()
    work = args.work or Path(tempfile.gettempdir()) / "unisub-serve-bench"
    count = args.tasks or (40 if args.quick else 1000)
    if args.memory_only:
        peer_results = json.loads(args.memory_only.read_text())
        found = {family: memory_only(family, work, count, peer_results) for family in args.families.split(",")}
        stem = args.out or RESULTS / f"{datetime.date.today()}-serve-memory"
        stem.parent.mkdir(parents=True, exist_ok=True)
        Path(f"{stem}.json").write_text(json.dumps({"peer_results": str(args.memory_only), **found}, indent=1) + "\n")
        for family, entry in found.items():
            print(
                f"{family}: RSS growth 1 -> {count} tasks {entry['rss_growth_1_to_all'] / 2**20:.1f} MiB "
                f"(earlier run: {entry['ours_growth_earlier_run'] / 2**20:.1f} MiB), "
                f"{entry['growth_ratio']:.3f} of the LoRA server's {entry['peer_growth_earlier_run'] / 2**20:.0f} MiB; "
                f"cold load p50 / p99 {entry['cold_load_ms']['p50']:.2f} / {entry['cold_load_ms']['p99']:.2f} ms"
            )
        return
    results, lines = {}, []
    for family in args.families.split(","):
        requests = 64 if args.quick else (320 if family == "minilm" else 160)
        results[family] = bench_family(family, work, count, requests)
        lines += verdicts(family, results[family])
    stem = args.out or RESULTS / f"{datetime.date.today()}-serve{'-quick' if args.quick else ''}"
    stem.parent.mkdir(parents=True, exist_ok=True)
    Path(f"{stem}.json").write_text(json.dumps(results, indent=1) + "\n")
    Path(f"{stem}.md").write_text(markdown(results, lines, args.quick))
    print("\n".join(lines))
    print(f"results: {stem}.json, {stem}.md")


if __name__ == "__main__":
    main()
