"""``unisub-hub demo``: the whole journey on the built-in example collections.

For each collection: build a basis with held-out members, project the held-out ones,
evaluate their task accuracy as original, rebuilt from the universal subspace (top ``k``),
rebuilt from the next ``k`` directions (the paper's "secondary" control) and mean only;
then publish basis and tasks to a local Hub, pull one task into a fresh home, materialize
it and check that the pulled model scores what the local reconstruction scored.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import torch

from ..engine import (
    BuildOptions,
    LayerSpec,
    RankRule,
    build_basis,
)
from ..format import load_basis, load_coefficients
from ..format.kinds import PEFT_KEY_PREFIX
from ..hub.pull import pull
from ..hub.push import push_artifact
from ..io.checkpoint import CheckpointSource
from ..io.collection import open_sources
from ..io.peft_adapter import LoraSource
from ..pipeline.build import BuildSettings, build
from ..pipeline.materialize import materialize
from ..pipeline.project import project
from ..pipeline.selection import select_layers
from ..registry import Registry
from ..testing import LocalHub
from .generation_demo import generation_journey
from .report import write_report
from .results import CollectionResult, DemoResult
from .served import serve_round_trip
from .subspace import rebuilt_updates
from .trained import digits_trained, minilm_trained, parameter_count

__all__ = ["DemoResult", "run_demo"]

Log = Callable[[str], None]

SERVED_TEXTS = (
    "return the contents of the archive as a list of members.",
    "compute the hmac digest of a message with a secret key.",
    "parse an xml document from a file and return its root element.",
    "create a temporary file and return a file object for it.",
)
"""Rows of the demo's served request, each for the next held-out task in turn (in the full demo
archive-vs-xml, then crypto-vs-files)."""


_Kind = TypeVar("_Kind", LoraSource, CheckpointSource)


def _open_all(paths: Sequence[str], kind: type[_Kind]) -> list[_Kind]:
    """The demo's own collections, all of one kind."""
    sources = open_sources(paths)
    typed = [source for source in sources if isinstance(source, kind)]
    if len(typed) != len(sources):
        raise TypeError(f"expected {kind.__name__}s only among {paths[0]}, ...")
    return typed


def _adapter_rank(folder: Path) -> int:
    """A PEFT adapter's rank ``r``, from its config."""
    return int(json.loads((folder / "adapter_config.json").read_text())["r"])


def _sweep_ks(limit: int, main_k: int) -> list[int]:
    return sorted({k for k in (1, 2, 4, 8, 16, main_k) if k <= limit})


def _lora_collection(
    root: Path, work: Path, log: Log, *, quick: bool, main_k: int
) -> tuple[CollectionResult, list[Path], Path]:
    from ..examples.minilm import accuracy, ensure_lora_zoo, load_task_model
    from ..examples.text_tasks import TASKS, make_task

    tasks = TASKS[:4] if quick else TASKS
    start = time.perf_counter()
    base, adapters = ensure_lora_zoo(
        root / "minilm",
        tasks=tasks,
        steps=20 if quick else 80,
        on_adapter=lambda r: log(f"  trained LoRA for {r['task']}: accuracy {r['accuracy']:.3f} in {r['seconds']}s"),
    )
    log(f"LoRA collection ready: {len(adapters)} adapters of all-MiniLM-L6-v2 ({time.perf_counter() - start:.0f}s)")
    holdout = 2
    held = adapters[-holdout:]
    outcome = build(
        [str(a) for a in adapters],
        work / "minilm-basis",
        BuildSettings(k=main_k, holdout=holdout, name="minilm-lora-basis", device="cpu"),
    )
    result = CollectionResult(
        "minilm-lora",
        "lora",
        main_k,
        heldout=[a.name for a in held],
        note=(
            "Each adapter starts from its own random lora_A and learns an unrelated task, so a new adapter's update "
            "mostly "
            "lies outside the span of the others; its trained head (passthrough, kept whole) carries the mean-only "
            "score."
        ),
        null_label=f"random rank-{_adapter_rank(held[0])} updates",
    )
    _summarise_build(result, outcome.report)
    # In memory, a wider basis of the same training set gives every k of the sweep and the secondary directions.
    sources = _open_all([str(a) for a in adapters], LoraSource)
    specs = select_layers([s.tensors for s in sources]).layers
    wide = build_basis(
        specs, sources[:-holdout], options=BuildOptions(rank=RankRule(k=64), center=False, null_baseline=False)
    ).layers
    limit = min(min(layer.ranks.values()) for layer in wide.values())
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(base)
    model = load_task_model(base)
    base_state = {name: value.clone() for name, value in model.state_dict().items()}
    series: dict[str, dict[int, list[float]]] = {"universal": {}, "secondary": {}}
    originals, means, coefficient_sizes = [], [], []
    for folder, source in zip(held, sources[-holdout:], strict=True):
        task = make_task(folder.name.removeprefix("lora-"))
        head = {name.removeprefix(PEFT_KEY_PREFIX): source.raw_tensor(name) for name in source.passthrough_names}
        matrices = {
            n: m.to(torch.device("cpu"), torch.float64) for n, m in source.load([spec.name for spec in specs]).items()
        }

        def score(deltas: dict[str, torch.Tensor], matrices=matrices, head=head, task=task) -> float:
            """Accuracy of base + updates (+ the task's own head), set in place on one model."""
            own = model.state_dict()
            with torch.no_grad():
                for name in matrices:
                    own[name].copy_(base_state[name].double() + deltas[name] if name in deltas else base_state[name])
                for name, value in head.items():
                    own[name].copy_(value)
            return accuracy(model, tokenizer, task.test)

        originals.append(score({name: m.dense() for name, m in matrices.items()}))
        means.append(score({}))
        for k in _sweep_ks(limit, main_k):
            series["universal"].setdefault(k, []).append(score(rebuilt_updates(wide, matrices, 0, k)))
            if 2 * k <= limit:
                series["secondary"].setdefault(k, []).append(score(rebuilt_updates(wide, matrices, k, 2 * k)))
        projected = project(
            source, outcome.basis, work / f"task-{folder.name}", name=folder.name.removeprefix("lora-"), device="cpu"
        )
        coefficient_sizes.append(projected.sizes["coefficients_bytes"])
        result.per_task[task.name] = {
            "original": originals[-1],
            f"universal k={main_k}": series["universal"][main_k][-1],
            "mean only": means[-1],
        }
        log(
            f"  held-out {task.name}: original {originals[-1]:.3f}, universal k={main_k} "
            f"{series['universal'][main_k][-1]:.3f}, mean only {means[-1]:.3f}"
        )
    result.sweep = {label: {k: _mean(v) for k, v in points.items()} for label, points in series.items()}
    result.accuracy = {
        "original": _mean(originals),
        f"universal k={main_k}": result.sweep["universal"][main_k],
        f"secondary k={main_k}": result.sweep["secondary"].get(main_k, float("nan")),
        "mean only": _mean(means),
    }
    result.trained = {
        "original": {
            "accuracy": result.accuracy["original"],
            "parameters": float(parameter_count(held[0] / "adapter_model.safetensors")),
        },
        **minilm_trained(base, held, work / "minilm-basis", work, log, steps=20 if quick else 60),
        "projected": {
            "accuracy": result.accuracy[f"universal k={main_k}"],
            "parameters": float(parameter_count(work / f"task-{held[0].name}" / "coefficients.safetensors")),
        },
    }
    adapter_bytes = _mean([float((a / "adapter_model.safetensors").stat().st_size) for a in held])
    result.sizes = {
        "original_bytes": adapter_bytes,
        "coefficients_bytes": _mean(coefficient_sizes),
        "ratio": adapter_bytes / _mean(coefficient_sizes),
        "basis_bytes": float(outcome.sizes["basis_bytes"]),
    }
    return result, [work / f"task-{f.name}" for f in held], base


def _digits_collection(
    root: Path, work: Path, log: Log, *, shared: bool, main_k: int
) -> tuple[CollectionResult, list[Path]]:
    from ..examples.digits import accuracy, ensure_digits_zoo, pair_of

    label = "digits-shared-init" if shared else "digits-random-init"
    folders = ensure_digits_zoo(root / label, shared_init=shared)
    holdout = 4
    held = folders[-holdout:]
    outcome = build(
        [str(f) for f in folders],
        work / f"{label}-basis",
        BuildSettings(modes="1", k=main_k, holdout=holdout, name=label, device="cpu"),
    )
    result = CollectionResult(
        label,
        "checkpoint",
        main_k,
        heldout=[f.name for f in held],
        note=(
            "Every network starts from one initialisation: the shared subspace is real, and the secondary directions "
            "are not."
            if shared
            else "Every network starts from its own initialisation (the control): the spectrum sits near the Gaussian "
            "null and the basis carries little."
        ),
    )
    _summarise_build(result, outcome.report)
    sources = _open_all([str(f) for f in folders], CheckpointSource)
    specs = [LayerSpec(n, tuple(sources[0].tensors[n].shape)) for n in outcome.basis.layer_names]
    wide = build_basis(
        specs, sources[:-holdout], options=BuildOptions(modes=(1,), rank=RankRule(k=64), null_baseline=False)
    ).layers
    limit = min(layer.ranks[1] for layer in wide.values())
    series: dict[str, dict[int, list[float]]] = {"universal": {}, "secondary": {}}
    originals, means, coefficient_sizes = [], [], []
    for folder, source in zip(held, sources[-holdout:], strict=True):
        pair = pair_of(folder)
        own = {name: source.tensor(name) for name in source.tensors}
        matrices = {
            n: m.to(torch.device("cpu"), torch.float64) for n, m in source.load([s.name for s in specs]).items()
        }
        originals.append(accuracy(own, pair))
        means.append(
            accuracy(
                {
                    **own,
                    **{
                        n: layer.mean.reshape(layer.tensor_shape) for n, layer in wide.items() if layer.mean is not None
                    },
                },
                pair,
            )
        )
        for k in _sweep_ks(limit, main_k):
            rebuilt = rebuilt_updates(wide, matrices, 0, k)
            series["universal"].setdefault(k, []).append(accuracy({**own, **rebuilt}, pair))
            if 2 * k <= limit:
                series["secondary"].setdefault(k, []).append(
                    accuracy({**own, **rebuilt_updates(wide, matrices, k, 2 * k)}, pair)
                )
        projected = project(
            source, outcome.basis, work / f"task-{folder.name}-{label}", name=f"{label}-{folder.name}", device="cpu"
        )
        coefficient_sizes.append(projected.sizes["coefficients_bytes"])
    result.sweep = {name: {k: _mean(v) for k, v in points.items()} for name, points in series.items()}
    result.accuracy = {
        "original": _mean(originals),
        f"universal k={main_k}": result.sweep["universal"].get(main_k, float("nan")),
        f"secondary k={main_k}": result.sweep["secondary"].get(main_k, float("nan")),
        "mean only": _mean(means),
    }
    result.trained = {
        "original": {
            "accuracy": result.accuracy["original"],
            "parameters": float(parameter_count(held[0] / "model.safetensors")),
        },
        **digits_trained(folders[:-holdout], held, work / f"{label}-basis", work),
        "projected": {
            "accuracy": result.accuracy[f"universal k={main_k}"],
            "parameters": float(parameter_count(work / f"task-{held[0].name}-{label}" / "coefficients.safetensors")),
        },
    }
    model_bytes = _mean([float((f / "model.safetensors").stat().st_size) for f in held])
    result.sizes = {
        "original_bytes": model_bytes,
        "coefficients_bytes": _mean(coefficient_sizes),
        "ratio": model_bytes / _mean(coefficient_sizes),
        "basis_bytes": float(outcome.sizes["basis_bytes"]),
    }
    log(
        f"{label}: original {result.accuracy['original']:.3f}, universal k={main_k} "
        f"{result.accuracy[f'universal k={main_k}']:.3f}, mean only {result.accuracy['mean only']:.3f}; "
        f"learned: universal {result.trained['trained universal']['accuracy']:.3f}, random directions "
        f"{result.trained['trained random']['accuracy']:.3f}, "
        f"head only {result.trained['head only']['accuracy']:.3f}"
    )
    return result, [work / f"task-{f.name}-{label}" for f in held]


def _summarise_build(result: CollectionResult, report) -> None:  # noqa: ANN001
    modes: dict[str, list[float]] = {}
    nulls: dict[str, list[float]] = {}
    for layer in report.layers:
        for mode, data in layer.mode_reports.items():
            modes.setdefault(mode, []).append(data.explained_variance)
            if data.null_explained_variance is not None:
                nulls.setdefault(mode, []).append(data.null_explained_variance)
        result.scree.append(
            {
                "name": layer.name,
                "modes": {
                    m: {"explained_variance_curve": d.curve, "null_explained_variance_curve": d.null_curve}
                    for m, d in layer.mode_reports.items()
                },
            }
        )
    result.explained_variance = {m: _mean(v) for m, v in modes.items()}
    held = [layer.mean_error(holdout=True, centered=True) for layer in report.layers]
    result.heldout_error = _mean([h for h in held if h is not None])
    result.null_explained_variance = {m: _mean(v) for m, v in nulls.items()}


def _mean(values: Sequence[float]) -> float:
    values = list(values)
    return sum(values) / len(values) if values else float("nan")


def _hub_trip(work: Path, lora_tasks: list[Path], base: Path, log: Log) -> dict[str, Any]:
    """Publish the LoRA basis and tasks to a local Hub, pull one into a fresh home, materialize, evaluate."""
    from peft import PeftModel
    from transformers import AutoTokenizer

    from ..examples.minilm import accuracy, load_task_model
    from ..examples.text_tasks import make_task

    with LocalHub() as hub, hub.activate():
        publisher = Registry(work / "home-publisher")
        basis_folder = work / "minilm-basis"
        publisher.add(basis_folder)
        pushed = push_artifact(basis_folder, "demo/minilm-lora-basis")
        publisher.set_hub(load_basis(basis_folder).content_id, pushed.repo_id, pushed.commit)
        for task in lora_tasks:
            publisher.add(task)
            done = push_artifact(task, f"demo/{task.name}", basis_location=(pushed.repo_id, pushed.commit))
            publisher.set_hub(load_coefficients(task).content_id, done.repo_id, done.commit)
        log(f"pushed basis and {len(lora_tasks)} coefficient sets to the local Hub at {hub.url}")
        consumer = Registry(work / "home-consumer")
        before = hub.bytes_downloaded()
        first = pull(f"demo/{lora_tasks[0].name}", consumer)
        first_bytes = hub.bytes_downloaded() - before
        before = hub.bytes_downloaded()
        pull(f"demo/{lora_tasks[1].name}", consumer)
        second_bytes = hub.bytes_downloaded() - before
        coefficients = load_coefficients(first.path)
        out = work / "pulled-adapter"
        shutil.rmtree(out, ignore_errors=True)
        materialize(coefficients, load_basis(consumer.resolve(coefficients.basis_id, "basis").path), out, device="cpu")
        model = PeftModel.from_pretrained(load_task_model(base), out).eval()
        pulled_task = make_task(lora_tasks[0].name.removeprefix("task-lora-"))
        score = accuracy(model, AutoTokenizer.from_pretrained(base), pulled_task.test)
        publisher.close()
        consumer.close()
    log(
        f"pulled {first.name} into a fresh home ({first_bytes:,} bytes with its basis; a second task: "
        f"{second_bytes:,} bytes), materialized as a PEFT adapter: accuracy {score:.3f}"
    )
    return {
        "endpoint": "local",
        "task": first.name,
        "pulled_bytes_with_basis": first_bytes,
        "pulled_bytes_basis_stored": second_bytes,
        "materialized_accuracy": score,
        "adapter": str(out),
    }


def run_demo(home: Path, report_dir: Path, *, quick: bool = False, log: Log = print) -> DemoResult:
    """Run the demo; example collections are cached under ``home/examples`` for later runs."""
    torch.manual_seed(0)
    seconds: dict[str, float] = {}
    start = time.perf_counter()
    root = home / "examples"
    if report_dir.exists():
        shutil.rmtree(report_dir / "work", ignore_errors=True)
    work = report_dir / "work"
    work.mkdir(parents=True, exist_ok=True)
    lora, lora_tasks, base = _lora_collection(root, work, log, quick=quick, main_k=8)
    seconds["lora"] = time.perf_counter() - start
    shared, _ = _digits_collection(root, work, log, shared=True, main_k=4)
    random_init, _ = _digits_collection(root, work, log, shared=False, main_k=4)
    seconds["digits"] = time.perf_counter() - start - seconds["lora"]
    hub = _hub_trip(work, lora_tasks, base, log)
    hub["local_accuracy"] = lora.per_task[hub["task"]][f"universal k={lora.k}"]
    served = serve_round_trip(
        work, work / "minilm-basis", base, {t.name.removeprefix("task-lora-"): t for t in lora_tasks}, SERVED_TEXTS, log
    )
    generation_start = time.perf_counter()
    generation = generation_journey(root, work, log, quick=quick)
    seconds["generation"] = time.perf_counter() - generation_start
    seconds["total"] = time.perf_counter() - start
    places = {"base": str(base), "basis": str(work / "minilm-basis"), "task": str(lora_tasks[0]), "home": str(home)}
    result = DemoResult([lora, shared, random_init], hub, seconds, report_dir, places, served, generation)
    write_report(result)
    return result
