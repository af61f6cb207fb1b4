"""The demo's causal-LM journey: generation tasks as coefficients, scored by ``eval``, served to ``openai``.

On the example GPT-2 (pretrained here, :mod:`.generation`) and its LoRA generation tasks: a
centred basis with two members held out; each held-out task projected onto it, and the first
one also *learned* from its training rows as coefficients (``train`` on causal-LM data); then
``eval`` scores, on that task's test rows, the base, the basis mean alone, the projection, the
learned task and the original LoRA (completion loss, as ``eval`` counts it); last,
``unisub-hub serve`` runs as a real process with the held-out tasks (projected) and the learned
one, and the official ``openai`` client asks each for a completion, checked against the
library's greedy next word.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from ..format import load_basis
from ..io.collection import open_sources
from ..pipeline.build import BuildSettings, build, holdout_warning
from ..pipeline.evaluate import BASE, evaluate
from ..pipeline.project import project
from ..pipeline.train import TrainOptions, train
from ..registry import Registry
from .generation import SEQUENCE_LENGTH, ensure_generation_base, ensure_generation_zoo, generation_rows, write_rows
from .served import running_server
from .text_tasks import TASKS

__all__ = ["generation_journey"]

Log = Callable[[str], None]
HOLDOUT = 2


def generation_journey(root: Path, work: Path, log: Log, *, quick: bool) -> dict[str, Any]:
    """Run the causal-LM part of the demo (see the module docstring); its numbers for the report."""
    tasks = TASKS[:4] if quick else TASKS
    started = time.perf_counter()
    zoo = root / ("generation-quick" if quick else "generation")
    if quick:  # a smaller base, pretrained briefly: what the quick run checks is the journey, not the scores
        ensure_generation_base(zoo / "base", steps=60, width=64, layers=2, log=log)
    base, adapters = ensure_generation_zoo(
        zoo,
        tasks=tasks,
        steps=40 if quick else 200,
        on_adapter=lambda r: log(f"  trained generation LoRA for {r['task']}: loss {r['loss']:.3f} in {r['seconds']}s"),
    )
    log(
        f"generation collection ready: {len(adapters)} LoRAs of the example GPT-2 "
        f"({time.perf_counter() - started:.0f}s)"
    )
    held = adapters[-HOLDOUT:]
    basis_folder = work / "generation-basis"
    outcome = build(
        [str(a) for a in adapters],
        basis_folder,
        BuildSettings(k=4 if quick else 8, center=True, holdout=HOLDOUT, name="gpt2-generation-basis", device="cpu"),
    )
    basis = load_basis(basis_folder)
    names = [a.name.removeprefix("lora-") for a in held]
    projected = {}
    for name, source in zip(names, open_sources([str(a) for a in held]), strict=True):
        projected[name] = work / f"generation-task-{name}"
        project(source, basis, projected[name], name=name, device="cpu")
    first = names[0]
    data = work / "generation-data"
    train_rows = write_rows(generation_rows(first, split="train"), data / f"{first}-train.jsonl")
    test_rows = write_rows(generation_rows(first, split="test"), data / f"{first}-test.jsonl")
    learned_folder = work / f"generation-learned-{first}"
    learned = train(
        basis,
        base,
        train_rows,
        learned_folder,
        options=TrainOptions(
            lr=2e-2, epochs=1 if quick else 5, max_steps=40 if quick else 150, max_length=SEQUENCE_LENGTH
        ),
        name=f"{first}-learned",
        device="cpu",
    )
    log(
        f"  learned {first} as coefficients: {learned.trainable_parameters:,} numbers, {learned.steps} steps, "
        f"final loss {learned.final_loss:.3f}"
    )
    models = {
        "base": BASE,
        "basis mean only": str(basis_folder),
        "projected": str(projected[first]),
        "learned as coefficients": str(learned_folder),
        "original LoRA": str(held[0]),
    }
    registry = Registry(work / "home-generation")
    try:
        scored = evaluate(list(models.values()), base, test_rows, registry=registry, record=False, device="cpu")
    finally:
        registry.close()
    evaluation = {
        label: {key: result.metrics[key] for key in ("loss", "perplexity", "tokens")}
        for label, result in zip(models, scored.results, strict=True)
    }
    log(
        f"  eval on {first}'s test rows (completion loss): "
        + ", ".join(f"{label} {scores['loss']:.3f}" for label, scores in evaluation.items())
    )
    return {
        "tasks": len(adapters),
        "heldout": names,
        "base": str(base),
        "basis": str(basis_folder),
        "heldout_warning": holdout_warning(outcome.report),
        "trainable_parameters": learned.trainable_parameters,
        "lora_parameters": _lora_parameters(held[0]),
        "eval_task": first,
        "eval": evaluation,
        "served": _serve_completions(work, base, basis_folder, {**projected, f"{first}-learned": learned_folder}, log),
    }


def _lora_parameters(folder: Path) -> int:
    from .trained import parameter_count

    return parameter_count(folder / "adapter_model.safetensors")


def _serve_completions(work: Path, base: Path, basis: Path, tasks: dict[str, Path], log: Log) -> dict[str, Any]:
    """Serve ``tasks`` (the projected held-out tasks and the learned one); ask each, with the ``openai``
    client, for the next word of one of its task's test prompts."""
    from openai import OpenAI

    prompts = {name: generation_rows(name.removesuffix("-learned"), split="test", count=1)[0] for name in tasks}
    answers = []
    with running_server(work / "home-serve-generation", basis, base, tasks) as (url, command):
        client = OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0, timeout=120)
        listed = [model.id for model in client.models.list().data]
        for name, row in prompts.items():
            completion = client.completions.create(model=name, prompt=row["prompt"], max_tokens=1, temperature=0)
            answers.append(
                {
                    "task": name,
                    "prompt": row["prompt"],
                    "expected": row["completion"].strip(),
                    "served": completion.choices[0].text.strip(),
                }
            )
    local = _local_next_words(base, basis, tasks, prompts)
    for answer in answers:
        answer["library"] = local[answer["task"]]
    same = all(a["served"] == a["library"] for a in answers)
    log(
        f"served {len(tasks)} generation tasks; the openai client's completions "
        + ", ".join(f"{a['task']}: {a['served']!r}" for a in answers)
        + f" ({'the same as' if same else 'NOT the same as'} the library's greedy next words)"
    )
    return {
        "command": command,
        "models": listed,
        "completions": answers,
        "same_as_library": same,
    }


def _local_next_words(
    base: Path, basis: Path, tasks: dict[str, Path], prompts: dict[str, dict[str, str]]
) -> dict[str, str]:
    """Each task's greedy next word after its prompt, from the attached model in this process."""
    from ..adapt import attach
    from ..pipeline.objectives import load_base

    opened = load_base(base)
    model, tokenizer = opened.load_model(), opened.tokenizer
    adapter = attach(model, basis)
    out = {}
    with torch.no_grad():
        for name, folder in tasks.items():
            adapter.load_task(folder, name, frozen=True)
            adapter.set_task(name)
            ids = tokenizer(prompts[name]["prompt"], return_tensors="pt")["input_ids"]
            word = int(model(input_ids=ids).logits[0, -1].argmax())
            out[name] = str(tokenizer.decode([word], skip_special_tokens=True)).strip()
    return out
