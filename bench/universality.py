"""Is the universal subspace worth anything for a *new* task? Leave-one-out, seeds, intervals (issue #26).

    python bench/universality.py [--collections minilm,generation] [--seeds 3] [--quick]

Two collections of 24 tasks each (the example text tasks, :mod:`unisub_hub.examples.text_tasks`):

- ``minilm``: PEFT LoRAs (r=8, query/value, own trained head) of all-MiniLM-L6-v2 for 24
  binary classification tasks; the score is test accuracy;
- ``generation``: PEFT LoRAs (r=4, ``c_attn``) of a small GPT-2 pretrained here on the tasks'
  plain text, each task asked as a completion (``<sentence> =>`` answered by its label's word,
  then EOS); the score is the completion loss (nats per token, lower is better), as ``eval``
  counts it.

Each seed is a whole collection: the tasks' examples and every adapter's initialisation drawn
anew. Under seed ``s`` the tasks numbered ``s, s+3, s+6, ...`` are held out one at a time: a
centred basis (Tucker, ``k`` 16) is built from the other 23 adapters, and the held-out task is
scored as

- ``base``: the base model as it is (for classification, with the base's untrained head);
- ``mean only``: the base plus the basis mean (classification: with the task's own head);
- ``projected k=1/4/16``: the original update projected onto the top ``k`` directions (plus the mean);
- ``trained universal``: learned from its training data as coefficients on the basis (and its
  head), the same steps, batch and learning rate for every trained row;
- ``trained random``: the same on random orthonormal directions of the same shape;
- ``head only`` (classification): its head alone on the base;
- ``original``: its own LoRA.

Two training members of every basis (the next tasks in order) are scored as well (``mean
only``, ``projected``, ``original``): the basis has seen those, so they show what in-sample
numbers look like beside held-out ones. Every score is appended to
``<work>/rows.jsonl`` as it is made, so a stopped run resumes where it was; the summary
(means with 95 % t-intervals over tasks and seeds) is written to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Any

import torch

KS = (1, 4, 16)
SEEDS_APART = 3
"""Held-out tasks of seed ``s``: numbers ``s, s+3, ...``; over three seeds every task once."""
TRAINING_SCORED = 2


def _quiet() -> None:
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import warnings

    warnings.filterwarnings("ignore")
    from transformers.utils import logging

    logging.set_verbosity_error()
    logging.disable_progress_bar()


def interval(values: list[float]) -> tuple[float, float]:
    """Mean and half-width of its 95 % t-interval (0 for a single value)."""
    from scipy.stats import t

    mean = statistics.fmean(values)
    if len(values) < 2:
        return mean, 0.0
    return mean, float(t.ppf(0.975, len(values) - 1)) * statistics.stdev(values) / math.sqrt(len(values))


class _Collection:
    """One collection's adapters, scoring and training (see the module docstring)."""

    name: str
    metric: str
    higher_is_better: bool
    tasks: tuple[str, ...] = ()

    def adapters(self, seed: int) -> tuple[Path, list[Path]]:
        raise NotImplementedError

    def open(self, base: Path, task: str, seed: int) -> None:
        """Load what scoring ``task`` of collection ``seed`` needs (model, data)."""
        raise NotImplementedError

    def score(self, deltas: dict[str, torch.Tensor], head: dict[str, torch.Tensor] | None) -> float:
        raise NotImplementedError

    def trained(self, basis: Any, variant: str, seed: int) -> float:
        raise NotImplementedError


class _MiniLM(_Collection):
    name, metric, higher_is_better = "minilm", "accuracy", True

    def __init__(self, cache: Path, quick: bool) -> None:
        self.cache, self.quick = cache, quick

    def adapters(self, seed: int) -> tuple[Path, list[Path]]:
        from unisub_hub.examples.minilm import ensure_lora_zoo

        root = self.cache / ("minilm" if seed == 0 else f"minilm-seed-{seed}")
        return ensure_lora_zoo(root, tasks=self.tasks, steps=20 if self.quick else 80, seed=seed, on_adapter=_said)

    def open(self, base: Path, task: str, seed: int) -> None:
        from transformers import AutoTokenizer

        from unisub_hub.examples.minilm import load_task_model
        from unisub_hub.examples.text_tasks import make_task

        self.base, self.task = base, make_task(task, seed=seed)
        self.tokenizer = AutoTokenizer.from_pretrained(base)
        self.model = load_task_model(base)
        self.base_state = {n: v.clone() for n, v in self.model.state_dict().items()}

    def score(self, deltas: dict[str, torch.Tensor], head: dict[str, torch.Tensor] | None) -> float:
        from unisub_hub.examples.minilm import accuracy

        _set(self.model, self.base_state, deltas, head)
        return accuracy(self.model, self.tokenizer, self.task.test)

    def trained(self, basis: Any, variant: str, seed: int) -> float:
        from unisub_hub.adapt import attach
        from unisub_hub.examples.minilm import accuracy, fit, load_task_model

        torch.manual_seed(seed)
        model = load_task_model(self.base)
        adapter = attach(model, basis, heads=["classifier"])
        adapter.add_task(self.task.name, train_coefficients=variant != "head only")
        parameters = adapter.parameters()
        fit(model, parameters, self.tokenizer, self.task, steps=20 if self.quick else 60, batch=16, lr=5e-3, seed=seed)
        return accuracy(model, self.tokenizer, self.task.test)


class _Generation(_Collection):
    name, metric, higher_is_better = "generation", "loss", False

    def __init__(self, cache: Path, quick: bool) -> None:
        self.cache, self.quick = cache, quick

    def adapters(self, seed: int) -> tuple[Path, list[Path]]:
        from unisub_hub.examples.generation import ensure_generation_zoo

        return ensure_generation_zoo(
            self.cache / "generation", tasks=self.tasks, seed=seed, steps=40 if self.quick else 200, on_adapter=_said
        )

    def open(self, base: Path, task: str, seed: int) -> None:
        from unisub_hub.examples.generation import SEQUENCE_LENGTH, generation_rows, write_rows
        from unisub_hub.pipeline.objectives import load_base

        self.opened = load_base(base, max_length=SEQUENCE_LENGTH)
        data = self.cache / "generation" / f"seed-{seed}" / "data"
        read = self.opened.family.read
        self.train = read(
            write_rows(generation_rows(task, split="train", seed=seed), data / f"{task}-{seed}.jsonl"),
            self.opened,
            {},
            SEQUENCE_LENGTH,
        )
        self.test = read(
            write_rows(generation_rows(task, split="test", seed=seed), data / f"{task}-{seed}-test.jsonl"),
            self.opened,
            {},
            SEQUENCE_LENGTH,
        )
        self.model = self.opened.load_model()
        self.base_state = {n: v.clone() for n, v in self.model.state_dict().items()}
        self.task = task

    def _loss(self, model: torch.nn.Module) -> float:
        from unisub_hub.pipeline.objectives import scores

        return float(scores(model, self.opened, self.test, batch_size=64, device=torch.device("cpu"))["loss"])

    def score(self, deltas: dict[str, torch.Tensor], head: dict[str, torch.Tensor] | None) -> float:
        _set(self.model, self.base_state, deltas, head)
        return self._loss(self.model)

    def trained(self, basis: Any, variant: str, seed: int) -> float:
        from unisub_hub.adapt import attach
        from unisub_hub.examples.generation import fit_causal

        torch.manual_seed(seed)
        model = self.opened.load_model()
        adapter = attach(model, basis)
        adapter.add_task(self.task)
        steps = 40 if self.quick else 200
        fit_causal(model, adapter.parameters(), self.opened, self.train.examples, steps=steps, lr=2e-2, seed=seed)
        return self._loss(model)


def _said(result: dict[str, Any]) -> None:
    print(f"    adapter {result['task']} (seed {result['seed']}): {result}", flush=True)


def _set(
    model: torch.nn.Module,
    base_state: dict[str, torch.Tensor],
    deltas: dict[str, torch.Tensor],
    head: dict[str, torch.Tensor] | None,
) -> None:
    """The base's weights plus ``deltas`` (and ``head``'s, when given), in place."""
    own = model.state_dict()
    with torch.no_grad():
        for name, value in base_state.items():
            if name in deltas:
                if deltas[name].shape != value.shape:
                    raise ValueError(f"{name}: update {tuple(deltas[name].shape)} vs weight {tuple(value.shape)}")
                own[name].copy_(value.double() + deltas[name])
            elif head is not None and name in head:
                own[name].copy_(head[name])
            else:
                own[name].copy_(value)


def _rows(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def run_collection(collection: _Collection, seeds: int, work: Path, rows_path: Path, *, quick: bool) -> None:
    from unisub_hub.adapt import random_basis_like
    from unisub_hub.examples.subspace import rebuilt_updates
    from unisub_hub.format import load_basis
    from unisub_hub.format.kinds import PEFT_KEY_PREFIX
    from unisub_hub.io.collection import open_sources
    from unisub_hub.pipeline.build import BuildSettings, build

    done = {(r["collection"], r["seed"], r["task"], r["role"], r.get("heldout")) for r in _rows(rows_path)}

    def record(row: dict[str, Any]) -> None:
        with rows_path.open("a") as handle:
            handle.write(json.dumps(row) + "\n")
        print(f"  {row}", flush=True)

    tasks = collection.tasks
    for seed in range(seeds):
        started = time.perf_counter()
        base, adapters = collection.adapters(seed)
        print(f"{collection.name} seed {seed}: {len(adapters)} adapters ready ({time.perf_counter() - started:.0f}s)")
        sources = {s.path.name: s for s in open_sources([str(a) for a in adapters])}  # once per collection
        held_numbers = range(seed % SEEDS_APART, len(tasks), SEEDS_APART)
        if quick:
            held_numbers = list(held_numbers)[:2]
        for number in held_numbers:
            task = tasks[number]
            training = [tasks[(number + step) % len(tasks)] for step in range(1, TRAINING_SCORED + 1)]
            key = (collection.name, seed, task, "heldout", None)
            if key in done and all((collection.name, seed, t, "training", task) in done for t in training):
                continue
            folder = work / collection.name / f"seed-{seed}" / f"without-{task}"
            basis_folder = folder / "basis"
            if not basis_folder.is_dir():  # a build writes elsewhere, then renames: a folder here is whole
                others = [str(a) for i, a in enumerate(adapters) if i != number]
                build(others, basis_folder, BuildSettings(k=max(KS), center=True, name=f"without-{task}", device="cpu"))
            basis = load_basis(basis_folder)
            layers = {name: basis.layer(name, dtype=torch.float64) for name in basis.layer_names}
            for role, member in [("heldout", task), *[("training", t) for t in training]]:
                if (collection.name, seed, member, role, None if role == "heldout" else task) in done:
                    continue
                source = sources[f"lora-{member}"]
                matrices = {n: m.to(torch.device("cpu"), torch.float64) for n, m in source.load(list(layers)).items()}
                head = {n.removeprefix(PEFT_KEY_PREFIX): source.raw_tensor(n) for n in source.passthrough_names}
                collection.open(base, member, seed)
                scores: dict[str, float] = {}
                start = time.perf_counter()
                if role == "heldout":
                    scores["base"] = collection.score({}, None)
                scores["mean only"] = collection.score(
                    {n: layer.mean.reshape(layer.tensor_shape) for n, layer in layers.items()}, head
                )
                for k in KS:
                    scores[f"projected k={k}"] = collection.score(rebuilt_updates(layers, matrices, 0, k), head)
                scores["original"] = collection.score({n: m.dense() for n, m in matrices.items()}, head)
                if role == "heldout":
                    control = (
                        load_basis(folder / "random")
                        if (folder / "random").is_dir()
                        else random_basis_like(basis, folder / "random", seed=seed)
                    )
                    scores["trained universal"] = collection.trained(basis, "trained universal", 1000 + number)
                    scores["trained random"] = collection.trained(control, "trained random", 1000 + number)
                    if collection.higher_is_better:  # classification: a head alone
                        scores["head only"] = collection.trained(basis, "head only", 1000 + number)
                record(
                    {
                        "collection": collection.name,
                        "metric": collection.metric,
                        "seed": seed,
                        "task": member,
                        "role": role,
                        "heldout": None if role == "heldout" else task,
                        "scores": scores,
                        "seconds": round(time.perf_counter() - start, 1),
                    }
                )


ROW_ORDER = (
    "base",
    "mean only",
    *(f"projected k={k}" for k in KS),
    "trained universal",
    "trained random",
    "head only",
    "original",
)


def summarise(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Per collection and role: every row's mean, 95 % half-width and count, and paired differences."""
    out: dict[str, Any] = {}
    for collection in dict.fromkeys(r["collection"] for r in rows):
        mine = [r for r in rows if r["collection"] == collection]
        entry: dict[str, Any] = {"metric": mine[0]["metric"], "seeds": sorted({r["seed"] for r in mine})}
        for role in ("heldout", "training"):
            members = [r for r in mine if r["role"] == role]
            if not members:
                continue
            table = {}
            for row in ROW_ORDER:
                values = [r["scores"][row] for r in members if row in r["scores"]]
                if values:
                    mean, half = interval(values)
                    table[row] = {"mean": mean, "ci95": half, "n": len(values)}
            entry[role] = table
            pairs = {}
            for a, b in (
                ("projected k=16", "mean only"),
                ("trained universal", "trained random"),
                ("trained universal", "head only"),
                ("trained universal", "mean only"),
                ("trained universal", "original"),
            ):
                diffs = [r["scores"][a] - r["scores"][b] for r in members if a in r["scores"] and b in r["scores"]]
                if diffs:
                    mean, half = interval(diffs)
                    pairs[f"{a} - {b}"] = {"mean": mean, "ci95": half, "n": len(diffs)}
            entry[f"{role}_differences"] = pairs
        out[collection] = entry
    return out


def markdown(summary: dict[str, Any], seconds: float) -> str:
    lines = [f"# Universality benchmark ({date.today().isoformat()})", ""]
    lines.append(
        "Leave-one-out: each held-out task scored against a centred basis (k 16) of the other 23 adapters; "
        "3 seeds (whole collections drawn anew); mean and 95 % t-interval over tasks x seeds. "
        f"`python bench/universality.py`: the rows' scoring and training took {seconds / 60:.0f} min on 2 cores "
        "(the adapters, trained once and cached, not counted)."
    )
    for collection, entry in summary.items():
        direction = "higher is better" if entry["metric"] == "accuracy" else "nats per answer token, lower is better"
        lines += ["", f"## {collection} ({entry['metric']}, {direction})", ""]
        lines += ["| row | held-out | training members |", "|---|---|---|"]
        for row in ROW_ORDER:
            cells = []
            for role in ("heldout", "training"):
                cell = entry.get(role, {}).get(row)
                cells.append(f"{cell['mean']:.3f} ± {cell['ci95']:.3f} (n={cell['n']})" if cell else "")
            if any(cells):
                lines.append(f"| {row} | {cells[0]} | {cells[1]} |")
        lines += ["", "Paired differences (held-out):", ""]
        for label, cell in entry.get("heldout_differences", {}).items():
            lines.append(f"- {label}: {cell['mean']:+.3f} ± {cell['ci95']:.3f} (n={cell['n']})")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--collections", default="minilm,generation")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "unisub-hub" / "examples")
    parser.add_argument("--work", type=Path, default=Path("/tmp/unisub-universality"))
    parser.add_argument("--out", type=Path, default=Path(f"bench/results/{date.today().isoformat()}-universality"))
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="torch threads")
    parser.add_argument("--quick", action="store_true", help="6 tasks, 1 seed, 2 held out, few steps (a smoke run)")
    args = parser.parse_args(argv)
    _quiet()
    torch.set_num_threads(max(1, args.threads))
    from unisub_hub.examples.text_tasks import ALL_TASKS

    if args.quick:
        args.seeds, args.work = 1, args.work / "quick"
        args.cache, pretrained = args.work / "cache", args.cache / "generation" / "base"
        if pretrained.is_dir() and not (args.cache / "generation" / "base").exists():
            (args.cache / "generation").mkdir(parents=True, exist_ok=True)
            (args.cache / "generation" / "base").symlink_to(pretrained)
    args.work.mkdir(parents=True, exist_ok=True)
    rows_path = args.work / "rows.jsonl"
    makers: dict[str, Callable[[], _Collection]] = {
        "minilm": lambda: _MiniLM(args.cache, args.quick),
        "generation": lambda: _Generation(args.cache, args.quick),
    }
    for name in args.collections.split(","):
        collection = makers[name]()
        collection.tasks = ALL_TASKS[:6] if args.quick else ALL_TASKS
        run_collection(collection, args.seeds, args.work, rows_path, quick=args.quick)
    rows = [r for r in _rows(rows_path) if r["collection"] in args.collections.split(",")]
    summary = summarise(rows)
    seconds = sum(r["seconds"] for r in rows)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    Path(f"{args.out}.json").write_text(json.dumps({"summary": summary, "rows": rows}, indent=1) + "\n")
    Path(f"{args.out}.md").write_text(markdown(summary, seconds))
    print(markdown(summary, seconds))
    return 0


if __name__ == "__main__":
    sys.exit(main())
