"""The demo's answer to the paper's claim: held-out tasks *learned* as coefficients on the basis.

For each held-out member of a collection, the same task is learned from its training data,
with the same steps, batch and learning rate, four ways, and compared with its original:

- ``trained universal``: coefficients (and, for text, the task's head) on the universal basis;
- ``trained random``: the same on random orthonormal directions of the same shape (the
  VeRA/NOLA-style control: how much comes from the subspace, how much from free numbers);
- ``head only``: the task's head alone, everything else frozen at the base (or the mean);
- ``projected``: the original projected onto the basis (no training: today's figure).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors import safe_open

from ..adapt import attach, random_basis_like
from ..format import load_basis

__all__ = ["TRAINED_VARIANTS", "digits_trained", "minilm_trained", "parameter_count"]

TRAINED_VARIANTS = ("trained universal", "trained random", "head only")

Log = Callable[[str], None]
Scores = dict[str, dict[str, float]]
"""Per variant: ``accuracy`` (mean over held-out members), ``parameters`` (trainable per task)
and ``examples`` (test examples scored, over all held-out members: what an interval rests on)."""


def _summary(per_task: dict[str, list[float]], parameters: dict[str, int], examples: int) -> Scores:
    return {
        variant: {
            "accuracy": sum(values) / len(values),
            "parameters": float(parameters[variant]),
            "examples": float(examples),
        }
        for variant, values in per_task.items()
    }


def minilm_trained(
    base: Path,
    held: list[Path],
    basis_folder: Path,
    work: Path,
    log: Log,
    *,
    steps: int,
    lr: float = 5e-3,
    batch: int = 16,
) -> Scores:
    """Train each held-out text task three ways on all-MiniLM-L6-v2 (see the module docstring)."""
    from transformers import AutoTokenizer

    from .minilm import accuracy, fit, load_task_model
    from .text_tasks import make_task

    basis = load_basis(basis_folder)
    control = random_basis_like(basis, work / "minilm-random-basis", seed=0)
    tokenizer = AutoTokenizer.from_pretrained(base)
    scores: dict[str, list[float]] = {variant: [] for variant in TRAINED_VARIANTS}
    parameters: dict[str, int] = {}
    examples = 0
    for number, folder in enumerate(held):
        task = make_task(folder.name.removeprefix("lora-"))
        examples += len(task.test)
        for variant in TRAINED_VARIANTS:
            torch.manual_seed(number)
            model = load_task_model(base)
            adapter = attach(model, control if variant == "trained random" else basis, heads=["classifier"])
            adapter.add_task(task.name, train_coefficients=variant != "head only")
            trainable = adapter.parameters()
            parameters[variant] = sum(p.numel() for p in trainable)
            fit(model, trainable, tokenizer, task, steps=steps, batch=batch, lr=lr, seed=1000 + number)
            scores[variant].append(accuracy(model, tokenizer, task.test))
        log(
            f"  learned {task.name} on the frozen basis: universal {scores['trained universal'][-1]:.3f}, "
            f"random directions {scores['trained random'][-1]:.3f}, head only {scores['head only'][-1]:.3f}"
        )
    return _summary(scores, parameters, examples)


def digits_trained(
    train_folders: list[Path], held: list[Path], basis_folder: Path, work: Path, *, steps: int = 300, lr: float = 0.05
) -> Scores:
    """Train each held-out digits task three ways from the collection's mean network."""
    from .digits import digits_data, make_network, pair_of

    basis = load_basis(basis_folder)
    control = random_basis_like(basis, work / f"{basis_folder.name}-random", seed=0)
    mean_state = _mean_state(train_folders)
    scores: dict[str, list[float]] = {variant: [] for variant in TRAINED_VARIANTS}
    parameters: dict[str, int] = {}
    examples = 0
    for number, folder in enumerate(held):
        x, y, x_test, y_test = digits_data(pair_of(folder))
        examples += len(y_test)
        for variant in TRAINED_VARIANTS:
            torch.manual_seed(number)
            network = make_network()
            network.load_state_dict(mean_state)
            if variant == "head only":  # the last layer alone, the others at the collection's mean
                network.requires_grad_(False)
                trainable = list(network[-1].parameters())
                for parameter in trainable:
                    parameter.requires_grad_(True)
            else:
                adapter = attach(network, control if variant == "trained random" else basis)
                adapter.add_task(folder.name)
                trainable = adapter.parameters()
            parameters[variant] = sum(p.numel() for p in trainable)
            optimizer = torch.optim.Adam(trainable, lr=lr)
            for _ in range(steps):
                loss = torch.nn.functional.cross_entropy(network(x), y)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
            with torch.no_grad():
                scores[variant].append(float((network(x_test).argmax(-1) == y_test).float().mean()))
    return _summary(scores, parameters, examples)


def _mean_state(folders: list[Path]) -> dict[str, torch.Tensor]:
    """The training members' average weights and biases: where a new digits task starts."""
    total: dict[str, torch.Tensor] = {}
    for folder in folders:
        with safe_open(folder / "model.safetensors", "pt") as handle:
            for name in handle.keys():  # noqa: SIM118 (safe_open has no iterator)
                total[name] = total.get(name, 0) + handle.get_tensor(name).double()
    return {name: (value / len(folders)).float() for name, value in total.items()}


def parameter_count(path: Path) -> int:
    """Numbers in a safetensors file (an original adapter or model: what its training changed)."""
    with safe_open(path, "pt") as handle:
        return sum(math.prod(handle.get_slice(name).get_shape()) for name in handle.keys())  # noqa: SIM118
