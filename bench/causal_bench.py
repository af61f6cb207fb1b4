"""Generation tasks on a small causal LM: training step and eval throughput (issue #26's numbers).

    python bench/causal_bench.py [--out bench/results/DATE-causal] [--repeats 3]

The model is a LLaMA-style causal LM made here (4 layers, width 256, a byte-level BPE of 2,000
tokens trained on generated text; no causal LM can be downloaded offline), with the loading
code of a real checkpoint. Sections, each contender in its own process, alternating, medians:

- ``step``: one training step (forward, backward, AdamW) on 8 sequences of 64 tokens:
  coefficient training on a basis of rank k=8 on ``q_proj``/``v_proj`` against peft LoRA r=8
  on the same modules; trainable parameters and the process's peak RSS. The basis has random
  orthonormal directions: a step's cost does not depend on what they are.
- ``eval``: the whole ``unisub-hub eval TASK --base MODEL --data FILE`` process against a plain
  transformers loop (a script that loads the same task materialized as a merged model and sums
  the completion-only cross entropy in batches of the same size): wall seconds and tokens per
  second, and the two losses side by side.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import subprocess
import sys
import time
from datetime import date
from pathlib import Path
from typing import Any

import torch

K, RANK, BATCH, LENGTH, EVAL_BATCH, EVAL_EXAMPLES = 8, 8, 8, 64, 16, 512
TARGETS = ("q_proj", "v_proj")
WORDS = "the a cat dog sat ran on in market opened time once upon quiet slow film food river stone light".split()


def _peak_rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def prepare(work: Path) -> dict[str, Path]:
    """The model, a basis, a task on it, the task merged into a full model, and eval data (cached)."""
    from unisub_hub.examples.causal import make_llama, train_tokenizer

    work.mkdir(parents=True, exist_ok=True)
    rng = random.Random(0)
    model = work / "llama"
    if not (model / "model.safetensors").is_file():
        texts = [" ".join(rng.choice(WORDS) for _ in range(16)) for _ in range(4000)]
        tokenizer = train_tokenizer(texts, work / "tokenizer", vocab_size=2000)
        make_llama(model, tokenizer, layers=4, width=256, heads=4, positions=256)
    data = work / "eval.jsonl"
    if not data.is_file():
        with data.open("w") as handle:
            for _ in range(EVAL_EXAMPLES):
                prompt = " ".join(rng.choice(WORDS) for _ in range(rng.randint(8, 24)))
                completion = " ".join(rng.choice(WORDS) for _ in range(rng.randint(8, 24)))
                handle.write(json.dumps({"prompt": prompt, "completion": completion}) + "\n")
    basis = work / "basis"
    task = work / "task"
    if not (task / "unisub_coefficients.json").is_file():
        _basis(basis, _load(model))
        _task(task, basis, model)
    from unisub_hub.registry import Registry

    Registry(work / "home").add(basis)  # eval finds a task's basis in the registry
    merged = work / "merged"
    if not (merged / "config.json").is_file():
        subprocess.run(
            [
                sys.executable,
                "-m",
                "unisub_hub",
                "--home",
                str(work / "home"),
                "materialize",
                str(task),
                "--basis",
                str(basis),
                "--base",
                str(model),
                "--format",
                "merged",
                "--out",
                str(merged),
                "--device",
                "cpu",
            ],
            check=True,
        )
    return {"model": model, "data": data, "basis": basis, "task": task, "merged": merged}


def _load(folder: Path):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(folder)


def _basis(folder: Path, model) -> Path:
    from unisub_hub.engine import LayerBasis
    from unisub_hub.format import save_basis

    gen = torch.Generator().manual_seed(0)
    layers = {}
    for name, module in model.named_modules():
        if name.endswith(TARGETS):
            p, q = module.weight.shape
            left = torch.linalg.qr(torch.randn(p, K, generator=gen))[0]
            right = torch.linalg.qr(torch.randn(q, K, generator=gen))[0]
            layers[f"{name}.weight"] = LayerBasis(f"{name}.weight", (p, q), (2, 3), left=left, right=right)
    sources = [{"id": f"random-directions-{i}", "kind": "lora", "role": "train"} for i in range(2)]
    save_basis(
        folder, layers, name="causal-bench", architecture_name="llama-bench", source_kind="lora", sources=sources
    )
    return folder


def _task(folder: Path, basis: Path, model_folder: Path) -> None:
    """A task with random coefficients (its loss is what it is; both contenders score the same one)."""
    from unisub_hub.adapt import attach

    model = _load(model_folder)
    adapter = attach(model, basis)
    adapter.add_task("bench-task")
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for parameter in adapter.parameters():
            parameter.copy_(0.5 * torch.randn(parameter.shape, generator=gen))
    adapter.save_task(folder, task_type="CAUSAL_LM")


def _batch(vocabulary: int) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(3, vocabulary, (BATCH, LENGTH), generator=gen)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids.clone()}


def step_contender(name: str, paths: dict[str, Path]) -> dict[str, Any]:
    torch.manual_seed(0)
    model = _load(paths["model"])
    if name == "coefficients":
        from unisub_hub.adapt import attach

        adapter = attach(model, paths["basis"])
        adapter.add_task("t")
        parameters = adapter.parameters()
    else:
        from peft import LoraConfig, get_peft_model

        config = LoraConfig(r=RANK, lora_alpha=RANK, target_modules=list(TARGETS), task_type="CAUSAL_LM")
        model = get_peft_model(model, config)
        parameters = [p for p in model.parameters() if p.requires_grad]
    model.train()
    optimizer = torch.optim.AdamW(parameters, lr=1e-3)
    batch = _batch(model.config.vocab_size)

    def step() -> None:
        loss = model(**batch).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    for _ in range(3):
        step()
    times = []
    for _ in range(20):
        start = time.perf_counter()
        step()
        times.append(1000 * (time.perf_counter() - start))
    return {
        "step_ms": statistics.median(times),
        "trainable": sum(p.numel() for p in parameters),
        "peak_rss_mib": _peak_rss_mib(),
    }


def plain_eval(merged: Path, data: Path) -> dict[str, Any]:
    """What a user writes with transformers alone: completion-only loss, summed over tokens, batched."""
    import torch.nn.functional as F
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(merged)
    model = AutoModelForCausalLM.from_pretrained(merged).eval()
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    rows = [json.loads(line) for line in data.read_text().splitlines()]
    total, tokens = 0.0, 0
    with torch.inference_mode():
        for start in range(0, len(rows), EVAL_BATCH):
            chunk = rows[start : start + EVAL_BATCH]
            encoded = []
            for row in chunk:
                prompt = tokenizer(row["prompt"])["input_ids"]
                completion = tokenizer(row["completion"], add_special_tokens=False)["input_ids"] + [
                    tokenizer.eos_token_id
                ]
                encoded.append((prompt + completion, [-100] * len(prompt) + completion))
            width = max(len(ids) for ids, _ in encoded)
            ids = torch.tensor([i + [pad] * (width - len(i)) for i, _ in encoded])
            labels = torch.tensor([lab + [-100] * (width - len(lab)) for _, lab in encoded])
            mask = torch.tensor([[1] * len(i) + [0] * (width - len(i)) for i, _ in encoded])
            logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1]
            target = labels[:, 1:]
            total += float(
                F.cross_entropy(
                    logits.reshape(-1, logits.shape[-1]), target.reshape(-1), ignore_index=-100, reduction="sum"
                )
            )
            tokens += int((target != -100).sum())
    return {"loss": total / tokens, "tokens": tokens}


def _timed(command: list[str]) -> tuple[float, dict[str, Any]]:
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    seconds = time.perf_counter() - start
    return seconds, json.loads(done.stdout[done.stdout.index("{") :])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(f"bench/results/{date.today()}-causal"))
    parser.add_argument("--work", type=Path, default=Path("/tmp/unisub-causal-bench"))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--contender", help=argparse.SUPPRESS)
    parser.add_argument("--plain-eval", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    import os

    os.environ["TRANSFORMERS_VERBOSITY"] = "error"
    paths = prepare(args.work)
    if args.contender:
        print(json.dumps(step_contender(args.contender, paths)))
        return
    if args.plain_eval:
        print(json.dumps(plain_eval(paths["merged"], paths["data"])))
        return
    me = [sys.executable, __file__, "--work", str(args.work)]
    steps: dict[str, list[dict[str, Any]]] = {"coefficients": [], "lora": []}
    for _ in range(args.repeats):
        for name in steps:
            steps[name].append(_timed([*me, "--contender", name])[1])
    ours_cli = [
        sys.executable,
        "-m",
        "unisub_hub",
        "--home",
        str(args.work / "home"),
        "eval",
        str(paths["task"]),
        "--base",
        str(paths["model"]),
        "--data",
        str(paths["data"]),
        "--batch-size",
        str(EVAL_BATCH),
        "--device",
        "cpu",
        "--no-record",
        "--json",
    ]
    evals: dict[str, list[tuple[float, dict[str, Any]]]] = {"unisub-hub eval": [], "transformers loop": []}
    for _ in range(args.repeats):
        evals["unisub-hub eval"].append(_timed(ours_cli))
        evals["transformers loop"].append(_timed([*me, "--plain-eval"]))
    result: dict[str, Any] = {"date": str(date.today()), "step": {}, "eval": {}}
    for name, runs in steps.items():
        result["step"][name] = {
            "step_ms": statistics.median(r["step_ms"] for r in runs),
            "trainable": runs[0]["trainable"],
            "peak_rss_mib": statistics.median(r["peak_rss_mib"] for r in runs),
        }
    for name, runs in evals.items():
        answer = runs[0][1]
        metrics = answer["results"][0] if "results" in answer else answer
        wall = statistics.median(seconds for seconds, _ in runs)
        result["eval"][name] = {
            "wall_s": wall,
            "loss": metrics["loss"],
            "tokens": metrics["tokens"],
            "tokens_per_s": metrics["tokens"] / wall,
        }
    ours, peer = result["step"]["coefficients"], result["step"]["lora"]
    result["ratios"] = {
        "step_time_coefficients_over_lora": ours["step_ms"] / peer["step_ms"],
        "trainable_lora_over_coefficients": peer["trainable"] / ours["trainable"],
        "eval_wall_ours_over_plain": result["eval"]["unisub-hub eval"]["wall_s"]
        / result["eval"]["transformers loop"]["wall_s"],
    }
    lines = [
        f"# Causal-LM training step and eval ({result['date']})",
        "",
        f"LLaMA-style model made here (4 layers, width 256), 2 cores, CPU, float32; medians of {args.repeats} "
        "alternating processes. `python bench/causal_bench.py`.",
        "",
        f"| training step ({BATCH} x {LENGTH} tokens) | ms | trainable | peak RSS MiB |",
        "|---|---:|---:|---:|",
        *(
            f"| {n} | {r['step_ms']:.1f} | {r['trainable']:,} | {r['peak_rss_mib']:.0f} |"
            for n, r in result["step"].items()
        ),
        "",
        f"| eval ({EVAL_EXAMPLES} prompt/completion rows, batch {EVAL_BATCH}), whole process "
        "| wall s | tokens/s | loss |",
        "|---|---:|---:|---:|",
        *(
            f"| {n} | {r['wall_s']:.2f} | {r['tokens_per_s']:.0f} | {r['loss']:.5f} |"
            for n, r in result["eval"].items()
        ),
        "",
        f"Step time coefficients / LoRA: {result['ratios']['step_time_coefficients_over_lora']:.2f} "
        f"(goal <= 1); LoRA trains {result['ratios']['trainable_lora_over_coefficients']:.0f}x the parameters. "
        f"`unisub-hub eval` wall / plain loop: {result['ratios']['eval_wall_ours_over_plain']:.2f} (goal <= 1.1).",
    ]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
