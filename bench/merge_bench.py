"""Merging tasks: normalized accuracy, time and peak memory, against peft and mergekit (issue #28's numbers).

    python bench/merge_bench.py [--out bench/results/DATE-merge] [--quick] [--no-mergekit]

The demo's ten all-MiniLM-L6-v2 LoRA tasks (three sentiment, seven topic tasks; each LoRA
r=8 on query/value with its own trained head) are merged in groups: disjoint pairs, groups of
four and of eight, drawn with a fixed seed. Following the merging literature's multi-task
protocol the merged *encoder* is scored on each task of its group with that task's own head;
the score is normalized by the task's own original LoRA (merged accuracy / own accuracy).

The ``generation`` section does the same on the demo's ten generation tasks of the example
GPT-2 (pretrained here; LoRA r=4 on ``c_attn``), scoring two-way label accuracy: after a
task's prompt the merged model must give its label's word a higher logit than the other
label's word (no heads: the unmerged row is the base itself).

Rows (``accuracy`` section, one process, every contender on the same groups):
- ``head only``: the base encoder and the task's head: what no merge at all scores (on this
  uncentred LoRA basis it is also the basis mean; a merge that does not beat it adds nothing);
- ``projected (own)``: the task alone on the basis: the ceiling a coefficient-space merge starts from;
- ours: ``linear``, ``ties``, ``dare-linear``, ``dare-ties``, ``iso`` on the coefficient tensors
  of each basis of ``--bases`` built from the ten adapters: rank 16 (a kilobyte basis) and the
  exact one (the smallest k that holds every adapter: the largest summed LoRA rank of a layer,
  80 for MiniLM, 40 for the GPT-2), where our linear merge is peft's ``cat`` (the exact sum);
- peft ``add_weighted_adapter`` on the original LoRAs: ``linear``, ``cat``, ``svd``, ``ties``,
  ``dare_ties``;
- mergekit ``ties`` on the materialized full models (base + update + head), base model given.

Every weighted method runs with equal weights ``1/T`` (an average) and ``1`` (task arithmetic's
sum); both are reported and a method's best is the better of the two (chosen on the test
sets, for every contender alike). Density 0.5 for TIES and DARE; DARE's seed 0.

The ``speed`` section merges eight tasks, each contender in its own process, three times
alternating; medians of the whole process's wall time and its peak RSS (the process's own
``ru_maxrss``), and of the merge call alone inside it:
``unisub-hub merge`` (coefficient sets of the basis), peft ``add_weighted_adapter`` per
combination type (load base + 8 adapters, merge, save the adapter), ``mergekit-yaml`` TIES
on eight materialized models.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import time
from datetime import date
from pathlib import Path
from typing import Any

import torch

OURS = ("linear", "ties", "dare-linear", "dare-ties", "iso")
PEFT = ("linear", "cat", "svd", "ties", "dare_ties")
DENSITY, SEED = 0.5, 0
SCALES = ("1/T", "1")
PEFT_PREFIX = "base_model.model."


def _quiet() -> None:
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers.utils import logging

    logging.set_verbosity_error()
    logging.disable_progress_bar()


def _zoo(home: Path) -> tuple[Path, list[Path]]:
    from unisub_hub.examples.minilm import ensure_lora_zoo
    from unisub_hub.examples.text_tasks import TASKS

    return ensure_lora_zoo(home / "examples" / "minilm", tasks=TASKS, steps=80)  # the demo's collection


def _groups(count: int, size: int, groups: int, seed: int = 0) -> list[list[int]]:
    """``groups`` groups of ``size`` task indices: disjoint within one shuffle, reshuffled as needed."""
    rng = random.Random(f"{size}-{seed}")
    out: list[list[int]] = []
    while len(out) < groups:
        order = list(range(count))
        rng.shuffle(order)
        out += [sorted(order[i : i + size]) for i in range(0, count - size + 1, size)]
    return out[:groups]


def _merger(method: str):
    from unisub_hub.merge import method_named

    return method_named(
        method,
        density=DENSITY if method == "ties" or method.startswith("dare") else None,
        seed=SEED if method.startswith("dare") else None,
    )


def _weights(scale: str, count: int) -> list[float]:
    return [1.0 / count if scale == "1/T" else 1.0] * count


class Scorer:
    """Accuracy of the base encoder plus weight updates, with one task's own head, set in place on one model."""

    def __init__(self, base: Path, adapters: list[Path]) -> None:
        from transformers import AutoTokenizer

        from unisub_hub.examples.minilm import load_task_model
        from unisub_hub.examples.text_tasks import make_task
        from unisub_hub.format.kinds import PEFT_KEY_PREFIX
        from unisub_hub.io.peft_adapter import LoraSource

        self.tokenizer = AutoTokenizer.from_pretrained(base)
        self.model = load_task_model(base)
        self.base_state = {n: v.clone() for n, v in self.model.state_dict().items()}
        self.sources = [LoraSource(a) for a in adapters]
        self.tasks = [make_task(a.name.removeprefix("lora-")) for a in adapters]
        self.heads = [
            {n.removeprefix(PEFT_KEY_PREFIX): s.raw_tensor(n) for n in s.passthrough_names} for s in self.sources
        ]
        self.calls = 0

    def __call__(self, deltas: dict[str, torch.Tensor], task: int) -> float:
        from unisub_hub.examples.minilm import accuracy

        own = self.model.state_dict()
        with torch.no_grad():
            for name, value in self.base_state.items():
                if name in deltas:
                    own[name].copy_(value.double() + deltas[name].double())
                elif name not in self.heads[task]:
                    own[name].copy_(value)
            for name, value in self.heads[task].items():
                own[name].copy_(value)
        self.calls += 1
        return accuracy(self.model, self.tokenizer, self.tasks[task].test)


class GenerationScorer:
    """Two-way label accuracy of the example GPT-2 plus weight updates on its generation tasks.

    A row is right when, after its prompt (``<sentence> =>``), the model gives its label's word a
    higher logit than the other label's word: a merged model is scored on what each task asks.
    """

    def __init__(self, base: Path, adapters: list[Path]) -> None:
        from unisub_hub.examples.generation import generation_rows
        from unisub_hub.examples.text_tasks import label_words
        from unisub_hub.io.peft_adapter import LoraSource

        self.model = self.load_model(base)
        self.tokenizer = _tokenizer(base)
        self.base_state = {n: v.clone() for n, v in self.model.state_dict().items()}
        self.sources = [LoraSource(a) for a in adapters]
        names = [a.name.removeprefix("lora-") for a in adapters]
        self.tasks = names
        self.heads: list[dict[str, torch.Tensor]] = [{} for _ in adapters]
        self.rows = [generation_rows(name, split="test") for name in names]
        self.words = [[self.tokenizer.convert_tokens_to_ids(w) for w in label_words(name)] for name in names]
        self.calls = 0

    @staticmethod
    def load_model(base: Path):
        from transformers import AutoModelForCausalLM

        return AutoModelForCausalLM.from_pretrained(base).eval()

    def __call__(self, deltas: dict[str, torch.Tensor], task: int) -> float:
        own = self.model.state_dict()
        with torch.no_grad():
            for name, value in self.base_state.items():
                own[name].copy_(value.double() + deltas[name].double() if name in deltas else value)
            right = 0
            rows = self.rows[task]
            for start in range(0, len(rows), 64):
                chunk = rows[start : start + 64]
                encoded = self.tokenizer([r["prompt"] for r in chunk], padding=True, return_tensors="pt")
                logits = self.model(**encoded).logits
                last = encoded["attention_mask"].sum(1) - 1
                answer = logits[torch.arange(len(chunk)), last][:, self.words[task]]
                truth = torch.tensor([self.words[task].index(_word_id(self.tokenizer, r)) for r in chunk])
                right += int((answer.argmax(-1) == truth).sum())
        self.calls += 1
        return right / len(rows)


def _tokenizer(base: Path):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(base)
    tokenizer.padding_side = "right"
    return tokenizer


def _word_id(tokenizer, row: dict[str, str]) -> int:
    return tokenizer.convert_tokens_to_ids(row["completion"].strip())


def _ours(scorer: Scorer, k: int):
    """The basis of the ten adapters and each task's coefficients; a merge function over task indices."""
    from unisub_hub.engine import BuildOptions, RankRule, build_basis, project_layer, reconstruct_layer
    from unisub_hub.merge import merge_coefficients
    from unisub_hub.pipeline.selection import select_layers

    specs = select_layers([s.tensors for s in scorer.sources]).layers
    layers = build_basis(
        specs, scorer.sources, options=BuildOptions(rank=RankRule(k=k), center=False, null_baseline=False)
    ).layers
    names = [spec.name for spec in specs]
    dense = []
    coefficients = []
    for source in scorer.sources:
        matrices = {n: m.to(torch.device("cpu"), torch.float64) for n, m in source.load(names).items()}
        dense.append({n: m.dense() for n, m in matrices.items()})
        coefficients.append({n: project_layer(layers[n], matrices[n]) for n in names})

    def rebuild(merged: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {n: reconstruct_layer(layers[n], c).reshape(layers[n].tensor_shape) for n, c in merged.items()}

    def merge(group: list[int], method: str, weights: list[float]) -> tuple[dict[str, torch.Tensor], float]:
        merger = _merger(method)
        start = time.perf_counter()
        merged = merge_coefficients([coefficients[t] for t in group], weights, merger, centered=False)
        seconds = time.perf_counter() - start
        return rebuild(merged), seconds

    return dense, (lambda t: rebuild(coefficients[t])), merge


def _encoder_only(adapters: list[Path], folder: Path) -> list[Path]:
    """Copies of the adapters without their heads (``modules_to_save``).

    peft's ``add_weighted_adapter`` refuses adapters that each save the same module; the heads
    are not merged here anyway (every task is scored with its own).
    """
    from safetensors.torch import load_file, save_file

    out = []
    for adapter in adapters:
        target = folder / adapter.name
        out.append(target)
        if (target / "adapter_model.safetensors").is_file():
            continue
        target.mkdir(parents=True, exist_ok=True)
        config = json.loads((adapter / "adapter_config.json").read_text())
        config["modules_to_save"] = None
        config["task_type"] = None  # SEQ_CLS would add the classifier back
        tensors = load_file(adapter / "adapter_model.safetensors")
        kept = {n: v for n, v in tensors.items() if "lora_" in n}

        save_file(kept, target / "adapter_model.safetensors")
        (target / "adapter_config.json").write_text(json.dumps(config, indent=2))
    return out


def _peft(base: Path, adapters: list[Path], load_model):
    """peft with the ten adapters loaded; a merge function returning the merged adapter's dense updates."""
    from peft import PeftModel
    from peft.tuners.lora import LoraLayer

    model = PeftModel.from_pretrained(load_model(base), str(adapters[0]), adapter_name="t0")
    for number, folder in enumerate(adapters[1:], start=1):
        model.load_adapter(str(folder), adapter_name=f"t{number}")
    lora_layers = {
        name.removeprefix(PEFT_PREFIX) + ".weight": module
        for name, module in model.named_modules()
        if isinstance(module, LoraLayer)
    }

    def merge(group: list[int], combination: str, weights: list[float]) -> tuple[dict[str, torch.Tensor], float]:
        extra = {"density": DENSITY} if combination in ("ties", "dare_ties") else {}
        start = time.perf_counter()
        model.add_weighted_adapter(
            [f"t{t}" for t in group], weights, adapter_name="merged", combination_type=combination, **extra
        )
        seconds = time.perf_counter() - start
        with torch.no_grad():
            deltas = {
                name: _as_weight(module, module.get_delta_weight("merged")) for name, module in lora_layers.items()
            }
        model.delete_adapter("merged")
        return deltas, seconds

    return merge


def _as_weight(module, delta: torch.Tensor) -> torch.Tensor:
    """peft's delta in the layout of the module's weight (GPT-2's ``Conv1D`` stores it transposed)."""
    weight = module.get_base_layer().weight
    delta = delta.double()
    return delta if tuple(delta.shape) == tuple(weight.shape) else delta.T


def _materialize(scorer: Scorer, base: Path, dense: list[dict[str, torch.Tensor]], folder: Path) -> list[Path]:
    """Each task as a full model folder (base + update + own head), for mergekit."""
    from safetensors.torch import save_file

    out = []
    for number, (task, deltas) in enumerate(zip(scorer.tasks, dense, strict=True)):
        target = folder / f"task-{number}"
        out.append(target)
        if (target / "model.safetensors").is_file():
            continue
        target.mkdir(parents=True, exist_ok=True)
        state = {n: v.clone() for n, v in scorer.base_state.items()}
        for name, value in deltas.items():
            state[name] = (state[name].double() + value).float()
        state.update(scorer.heads[number])
        save_file({n: v.contiguous() for n, v in state.items()}, target / "model.safetensors")
        for name in ("config.json", "tokenizer.json", "tokenizer_config.json"):
            shutil.copy(base / name, target / name)
        del task
    return out


def _mergekit_config(base: Path, models: list[Path], out: Path, density: float = DENSITY) -> Path:
    lines = [
        "merge_method: ties",
        f"base_model: {base}",
        "dtype: float32",
        "parameters:",
        "  normalize: true",
        "models:",
    ]
    for model in models:
        lines += [f"  - model: {model}", "    parameters:", "      weight: 1.0", f"      density: {density}"]
    out.write_text("\n".join(lines) + "\n")
    return out


def _run_mergekit(config: Path, out: Path) -> float:
    shutil.rmtree(out, ignore_errors=True)
    start = time.perf_counter()
    subprocess.run(
        [shutil.which("mergekit-yaml") or "mergekit-yaml", str(config), str(out), "--lazy-unpickle", "--quiet"],
        check=True,
        stdout=subprocess.DEVNULL,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    return time.perf_counter() - start


def _mergekit_deltas(scorer: Scorer, folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    merged: dict[str, torch.Tensor] = {}
    for file in sorted(folder.glob("*.safetensors")):
        merged.update(load_file(file))
    return {
        name: merged[name].double() - value.double()
        for name, value in scorer.base_state.items()
        if name in merged and not name.startswith("classifier.") and not torch.equal(merged[name], value)
    }


def _generation_zoo(home: Path) -> tuple[Path, list[Path]]:
    from unisub_hub.examples.generation import ensure_generation_zoo
    from unisub_hub.examples.text_tasks import TASKS

    return ensure_generation_zoo(home / "examples" / "generation", tasks=TASKS)  # the demo's collection


def _exact_rank(dense: list[dict[str, torch.Tensor]]) -> int:
    """The smallest k whose basis holds every update exactly: the largest summed rank of a layer's updates."""
    return max(sum(int(torch.linalg.matrix_rank(task[layer])) for task in dense) for layer in dense[0])


def accuracy_section(
    home: Path,
    work: Path,
    *,
    bases: list[str],
    quick: bool,
    mergekit: bool,
    log,
    collection: str = "minilm",
) -> dict[str, Any]:
    torch.set_num_threads(max(1, torch.get_num_threads()))
    if collection == "generation":
        base, adapters = _generation_zoo(home)
        scorer: Any = GenerationScorer(base, adapters)
        peft_merge = _peft(base, adapters, GenerationScorer.load_model)
        work = work / "generation"
    else:
        from unisub_hub.examples.minilm import load_task_model

        base, adapters = _zoo(home)
        scorer = Scorer(base, adapters)
        peft_merge = _peft(base, _encoder_only(adapters, work / "encoder-only"), load_task_model)
    dense, _, _ = _ours(scorer, 1)
    unmerged = "base" if collection == "generation" else "head only"  # what no merge at all scores
    count = len(adapters)
    sizes = {2: 5, 4: 3, 8: 2} if not quick else {2: 2, 4: 1}
    own = [scorer(dense[t], t) for t in range(count)]
    head_only = [scorer({}, t) for t in range(count)]
    variants = {}  # one basis per entry of ``bases``: its k, its projections' scores, its merge function
    for wanted in bases:
        k = _exact_rank(dense) if wanted == "exact" else int(wanted)
        tag = f"k={k}" + (", exact" if wanted == "exact" else "")
        _, projected, ours = _ours(scorer, k)
        scores = [scorer(projected(t), t) for t in range(count)]
        variants[tag] = {"k": k, "projected": scores, "merge": ours}
        log(f"basis {tag}: projected {statistics.mean(scores):.3f}")
    log(f"own accuracy {statistics.mean(own):.3f}, {unmerged} {statistics.mean(head_only):.3f}")
    models = _materialize(scorer, base, dense, work / "models") if mergekit else []
    rows: dict[str, dict[str, Any]] = {}

    def record(label: str, size: int, scores: list[float], seconds: list[float]) -> None:
        row = rows.setdefault(label, {"by_size": {}, "merge_seconds": []})
        row["by_size"].setdefault(str(size), []).extend(scores)
        row["merge_seconds"].extend(seconds)

    for size, how_many in sizes.items():
        for group in _groups(count, size, how_many):
            normalized = lambda deltas, group=group: [scorer(deltas, t) / own[t] for t in group]  # noqa: E731
            record(unmerged, size, [head_only[t] / own[t] for t in group], [])
            for tag, variant in variants.items():
                record(f"projected (own, {tag})", size, [variant["projected"][t] / own[t] for t in group], [])
            for scale in SCALES:
                weights = _weights(scale, size)
                for tag, variant in variants.items():
                    for method in OURS:
                        deltas, seconds = variant["merge"](group, method, weights)
                        record(f"ours {method} ({tag}) w={scale}", size, normalized(deltas), [seconds])
                for combination in PEFT:
                    deltas, seconds = peft_merge(group, combination, weights)
                    record(f"peft {combination} w={scale}", size, normalized(deltas), [seconds])
            if mergekit:
                config = _mergekit_config(base, [models[t] for t in group], work / "mergekit.yml")
                try:
                    seconds = _run_mergekit(config, work / "mergekit-out")
                except subprocess.CalledProcessError as error:  # an architecture it does not know: say so, go on
                    log(f"  mergekit failed on this collection ({error}); its row is left out")
                    mergekit = False
                else:
                    deltas = _mergekit_deltas(scorer, work / "mergekit-out")
                    record("mergekit ties", size, normalized(deltas), [seconds])
            log(f"  group {group} done ({scorer.calls} evaluations)")
    summary = {}
    for label, row in rows.items():
        summary[label] = {
            "normalized": {size: statistics.mean(v) for size, v in row["by_size"].items()},
            "tasks": {size: len(v) for size, v in row["by_size"].items()},
            "merge_ms_median": statistics.median(row["merge_seconds"]) * 1000 if row["merge_seconds"] else None,
        }
    return {
        "bases": {tag: {"k": v["k"], "projected_accuracy": v["projected"]} for tag, v in variants.items()},
        "collection": collection,
        "tasks": [a.name.removeprefix("lora-") for a in adapters],
        "own_accuracy": own,
        "head_only_accuracy": head_only,
        "groups": {size: _groups(count, size, n) for size, n in sizes.items()},
        "rows": summary,
    }


def _best(rows: dict[str, Any]) -> dict[str, dict[str, float]]:
    """Each method's better scale per group size."""
    best: dict[str, dict[str, float]] = {}
    for label, row in rows.items():
        method = label.split(" w=")[0]
        for size, value in row["normalized"].items():
            best.setdefault(method, {})[size] = max(best.get(method, {}).get(size, float("-inf")), value)
    return best


# --- speed: each contender as a whole process -----------------------------------------------------


def _contender(name: str, work: Path) -> None:
    """Run inside its own process: one merge of eight tasks; prints the merge call's seconds."""
    _quiet()
    spec = json.loads((work / "speed.json").read_text())
    if name.startswith("peft-"):
        from peft import PeftModel

        from unisub_hub.examples.minilm import load_task_model

        adapters = spec["adapters"]
        model = PeftModel.from_pretrained(load_task_model(Path(spec["base"])), adapters[0], adapter_name="t0")
        for number, folder in enumerate(adapters[1:], start=1):
            model.load_adapter(folder, adapter_name=f"t{number}")
        combination = name.removeprefix("peft-")
        extra = {"density": DENSITY} if combination in ("ties", "dare_ties") else {}
        start = time.perf_counter()
        model.add_weighted_adapter(
            [f"t{t}" for t in range(len(adapters))],
            [1.0 / len(adapters)] * len(adapters),
            adapter_name="merged",
            combination_type=combination,
            **extra,
        )
        seconds = time.perf_counter() - start
        out = work / f"out-{name}"
        shutil.rmtree(out, ignore_errors=True)
        model.save_pretrained(str(out), selected_adapters=["merged"])
        print(json.dumps({"merge_seconds": seconds}))
    else:
        raise SystemExit(f"unknown contender {name}")


def _whole(command: list[str]) -> dict[str, float]:
    """Wall seconds and peak RSS of ``command`` run in a fresh process (through a small wrapper)."""
    wrapper = (
        "import json,resource,subprocess,sys,time;s=time.perf_counter();"
        "p=subprocess.run(sys.argv[1:],capture_output=True,text=True);w=time.perf_counter()-s;"
        "sys.stderr.write(p.stderr[-2000:]) if p.returncode else None;"
        "print(json.dumps({'rc':p.returncode,'wall':w,'rss':resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss/1024,"
        "'out':p.stdout[-400:]}))"
    )
    done = subprocess.run([sys.executable, "-c", wrapper, *command], capture_output=True, text=True, check=True)
    result = json.loads(done.stdout.strip().splitlines()[-1])
    if result["rc"]:
        raise RuntimeError(f"{command[:4]} failed: {done.stderr[-800:]}")
    inner = [line for line in result["out"].splitlines() if line.startswith("{")]
    merge = json.loads(inner[-1]).get("merge_seconds") if inner else None
    return {"wall_s": result["wall"], "peak_rss_mib": result["rss"], "merge_s": merge}


def speed_section(home: Path, work: Path, *, k: int, repeats: int, mergekit: bool, log) -> dict[str, Any]:
    from unisub_hub.pipeline.build import BuildSettings, build
    from unisub_hub.pipeline.project import project

    base, adapters = _zoo(home)
    eight = adapters[:8]
    basis_dir = work / "speed-basis"
    if not basis_dir.exists():
        build([str(a) for a in adapters], basis_dir, BuildSettings(k=k, holdout=0, name="merge-bench", device="cpu"))
    from unisub_hub.format import load_basis

    basis = load_basis(basis_dir)
    tasks = []
    for folder in eight:
        target = work / f"speed-task-{folder.name}"
        if not target.exists():
            project(str(folder), basis, target, name=folder.name, device="cpu")
        tasks.append(str(target))
    stripped = _encoder_only(eight, work / "encoder-only")
    (work / "speed.json").write_text(json.dumps({"base": str(base), "adapters": [str(a) for a in stripped]}))
    cli = [sys.executable, "-m", "unisub_hub", "--home", str(work / "home")]
    contenders: dict[str, list[str]] = {}
    for method in OURS:
        merger = _merger(method)  # the parameters it takes, as the accuracy sections run it
        extra = [f"--{key}={value}" for key, value in merger.parameters().items() if key != "method"]
        contenders[f"unisub-hub merge {method}"] = [
            *cli,
            "merge",
            *tasks,
            "--basis",
            str(basis_dir),
            "--out",
            "OUT",
            "--method",
            method,
            *extra,
        ]
    for combination in PEFT:
        contenders[f"peft {combination}"] = [
            sys.executable,
            __file__,
            "--contender",
            f"peft-{combination}",
            "--work",
            str(work),
        ]
    if mergekit:
        models = _materialize(Scorer(base, adapters), base, _ours(Scorer(base, adapters), k)[0], work / "models")[:8]
        config = _mergekit_config(base, models, work / "mergekit-speed.yml")
        contenders["mergekit ties"] = [
            shutil.which("mergekit-yaml") or "mergekit-yaml",
            str(config),
            "OUT",
            "--lazy-unpickle",
            "--quiet",
        ]
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in contenders}
    for attempt in range(repeats):
        for name, command in contenders.items():
            out = work / f"out-{attempt}-{abs(hash(name))}"
            shutil.rmtree(out, ignore_errors=True)
            runs[name].append(_whole([str(out) if part == "OUT" else part for part in command]))
            shutil.rmtree(out, ignore_errors=True)
        log(f"  speed round {attempt + 1}/{repeats} done")
    # Our merge call alone, in process, on the same eight coefficient sets.
    from unisub_hub.format import load_coefficients
    from unisub_hub.merge import merge_coefficients

    loaded = [load_coefficients(t) for t in tasks]
    layers = loaded[0].layer_names
    coefficient_maps = [{layer: t.coefficient(layer) for layer in layers} for t in loaded]
    engine = {}
    for method in OURS:
        merger = _merger(method)
        times = []
        for _ in range(20):
            start = time.perf_counter()
            merge_coefficients(coefficient_maps, [1 / 8] * 8, merger, centered=False)
            times.append(time.perf_counter() - start)
        engine[f"unisub-hub merge {method}"] = statistics.median(times)
    summary = {}
    for name, values in runs.items():
        merge = [v["merge_s"] for v in values if v["merge_s"] is not None]
        summary[name] = {
            "wall_s": statistics.median(v["wall_s"] for v in values),
            "peak_rss_mib": statistics.median(v["peak_rss_mib"] for v in values),
            "merge_call_ms": (statistics.median(merge) * 1000)
            if merge
            else (engine[name] * 1000 if name in engine else None),
        }
    return {"tasks": 8, "repeats": repeats, "contenders": summary}


def _table(result: dict[str, Any]) -> str:
    lines = [f"# Merge benchmark ({result['date']})", ""]
    if "accuracy" in result:
        lines += _accuracy_table(
            result["accuracy"],
            f"{len(result['accuracy']['tasks'])} all-MiniLM-L6-v2 LoRA tasks (the demo's)",
            "merged encoder with the task's own head / the task's own LoRA",
            "head only",
        )
    if "generation" in result:
        lines += _accuracy_table(
            result["generation"],
            f"{len(result['generation']['tasks'])} generation LoRA tasks of the example GPT-2 (the demo's)",
            "two-way label accuracy of the merged model (the label's word over the other's, after the prompt) / the "
            "task's own LoRA's",
            "base",
        )
    lines += _speed_table(result)
    return "\n".join(lines) + "\n"


def _accuracy_table(acc: dict[str, Any], what: str, normalized: str, unmerged: str) -> list[str]:
    sizes = sorted({size for row in acc["rows"].values() for size in row["normalized"]}, key=int)
    lines = [
        f"## {what}",
        "",
        "Bases built from all of them: "
        + "; ".join(
            f"{tag} (projected alone {statistics.mean(b['projected_accuracy']):.3f})" for tag, b in acc["bases"].items()
        )
        + f". Normalized accuracy = {normalized}, mean over the tasks of every group. Own accuracy "
        f"{statistics.mean(acc['own_accuracy']):.3f}, {unmerged} {statistics.mean(acc['head_only_accuracy']):.3f}.",
        "",
        "### Normalized accuracy, each method at its better weight scale (1/T or 1)",
        "",
        "| method | " + " | ".join(f"{s} tasks" for s in sizes) + " |",
        "|---|" + "---:|" * len(sizes),
    ]
    for method, values in sorted(_best(acc["rows"]).items(), key=lambda kv: -statistics.mean(kv[1].values())):
        lines.append(f"| {method} | " + " | ".join(f"{values.get(s, float('nan')):.3f}" for s in sizes) + " |")
    lines += [
        "",
        "### Every row",
        "",
        "| row | " + " | ".join(f"{s} tasks" for s in sizes) + " | merge call ms |",
        "|---|" + "---:|" * (len(sizes) + 1),
    ]
    for label, row in acc["rows"].items():
        ms = row["merge_ms_median"]
        lines.append(
            f"| {label} | "
            + " | ".join(f"{row['normalized'].get(s, float('nan')):.3f}" for s in sizes)
            + f" | {'' if ms is None else f'{ms:.2f}'} |"
        )
    return [*lines, ""]


def _speed_table(result: dict[str, Any]) -> list[str]:
    lines: list[str] = []
    if "speed" in result:
        speed = result["speed"]
        lines += [
            "",
            f"## Merging {speed['tasks']} tasks, whole process (medians of {speed['repeats']})",
            "",
            "| contender | wall s | peak RSS MiB | merge call ms |",
            "|---|---:|---:|---:|",
        ]
        for name, row in speed["contenders"].items():
            call = row["merge_call_ms"]
            call_text = "" if call is None else f"{call:.2f}"
            lines.append(f"| {name} | {row['wall_s']:.2f} | {row['peak_rss_mib']:.0f} | {call_text} |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(f"bench/results/{date.today()}-merge"))
    parser.add_argument("--home", type=Path, default=Path.home() / ".cache" / "unisub-hub")
    parser.add_argument("--work", type=Path, default=Path("/tmp/unisub-merge-bench"))
    parser.add_argument("--k", type=int, default=16, help="the speed section's basis rank")
    parser.add_argument(
        "--bases",
        default="16,exact",
        help="the accuracy sections' bases: ranks, and 'exact' (the smallest k that holds every adapter exactly)",
    )
    parser.add_argument("--quick", action="store_true", help="pairs and one group of four; no speed section")
    parser.add_argument(
        "--sections",
        default="accuracy,generation,speed",
        help="accuracy (MiniLM), generation (causal LM), speed; each is saved as it ends",
    )
    parser.add_argument("--no-mergekit", action="store_true")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--contender", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.contender:
        _contender(args.contender, args.work)
        return
    _quiet()
    args.work.mkdir(parents=True, exist_ok=True)
    mergekit = not args.no_mergekit and shutil.which("mergekit-yaml") is not None
    log = lambda message: print(message, flush=True)  # noqa: E731
    saved = args.out.with_suffix(".json")
    result: dict[str, Any] = json.loads(saved.read_text()) if saved.is_file() else {}
    result.update({"date": str(date.today()), "mergekit": mergekit})
    sections = args.sections.split(",")

    def save() -> None:
        saved.parent.mkdir(parents=True, exist_ok=True)
        saved.write_text(json.dumps(result, indent=2) + "\n")
        if "accuracy" in result:
            result["best"] = _best(result["accuracy"]["rows"])
        if "generation" in result:
            result["best-generation"] = _best(result["generation"]["rows"])
        saved.write_text(json.dumps(result, indent=2) + "\n")
        args.out.with_suffix(".md").write_text(_table(result))

    if "accuracy" in sections:
        result["accuracy"] = accuracy_section(
            args.home, args.work, bases=args.bases.split(","), quick=args.quick, mergekit=mergekit, log=log
        )
        save()
    if "generation" in sections:
        result["generation"] = accuracy_section(
            args.home,
            args.work,
            bases=args.bases.split(","),
            quick=args.quick,
            mergekit=mergekit,
            log=log,
            collection="generation",
        )
        save()
    if "speed" in sections and not args.quick:
        result["speed"] = speed_section(
            args.home, args.work, k=args.k, repeats=args.repeats, mergekit=mergekit, log=log
        )
        save()
    print(_table(result))


if __name__ == "__main__":
    main()
