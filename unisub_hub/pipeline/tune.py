"""Merge weights chosen on a few labelled examples, without gradients (the LoraHub recipe).

LoraHub (Huang et al. 2023) composes LoRA modules with weights found by a gradient-free search
on a handful of examples of the new task, minimising the loss plus a small L1 penalty on the
weights. On a shared basis one candidate costs a weighted sum of ``k x k`` cores, made in
memory on one attached model (:meth:`~unisub_hub.adapt.SubspaceAdapter.merge_tasks`), and a
forward pass over the examples. The search is Nelder-Mead (``scipy.optimize``), started from
equal weights, within ``budget`` evaluations; it is deterministic.

On a centred basis the weights must sum to 1 (the tasks share the basis's mean), so the search
moves in the ``T - 1`` free weights and the last is one minus their sum.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..adapt import attach
from ..engine import resolve_device
from ..errors import MergeError, option
from ..extras import require
from ..format import BasisArtifact, CoefficientSet
from .objectives import load_base, scores

__all__ = ["TunedWeights", "tune_weights"]

PENALTY = 0.05
"""LoraHub's L1 weight on the mean absolute merge weight: keeps the search near small weights."""


@dataclass
class TunedWeights:
    """The weights found, what they score on the examples, and what equal weights scored."""

    weights: list[float]
    metrics: dict[str, Any]
    equal_metrics: dict[str, Any]
    evaluations: int
    data_sha256: str
    examples: int

    def record(self) -> dict[str, Any]:
        """What the merged set's manifest keeps of the search."""
        return {
            "method": "nelder-mead",
            "penalty": PENALTY,
            "data_sha256": self.data_sha256,
            "examples": self.examples,
            "evaluations": self.evaluations,
            "loss": self.metrics["loss"],
            "equal_weights_loss": self.equal_metrics["loss"],
        }


def tune_weights(
    tasks: Sequence[CoefficientSet],
    basis: BasisArtifact,
    base: str | Path,
    data: str | Path,
    *,
    method: str = "linear",
    density: float | None = None,
    seed: int | None = None,
    heads: str = "none",
    budget: int = 40,
    batch_size: int = 16,
    max_length: int = 128,
    device: str = "auto",
) -> TunedWeights:
    """Choose merge weights for ``tasks`` on the labelled examples in ``data`` (see the module docstring).

    Raises:
        MissingDependencyError: scipy (or transformers) is not installed.
        TrainingDataError: the base model or the data cannot be used.
        MergeError: a budget below 1.
    """
    require("scipy", f"merge {option('tune_on')}")
    import numpy as np  # scipy's own dependency
    from scipy.optimize import minimize  # type: ignore[import-untyped]

    if budget < 1:
        raise MergeError(f"{option('tune_budget')} {budget}: give at least 1 evaluation")
    opened = load_base(base, max_length=max_length)
    examples = opened.family.read(data, opened, {}, opened.max_length)
    model = opened.load_model()
    adapter = attach(model, basis, heads=opened.family.heads(model))
    names = [adapter.load_task(task, f"tune-{number}", frozen=True) for number, task in enumerate(tasks)]
    target = resolve_device(device)
    model.to(target)
    centered = bool(basis.manifest["centered"])
    count = len(tasks)

    def weights_of(free: Any) -> list[float]:
        values = [float(v) for v in free]
        return [*values, 1.0 - sum(values)] if centered else values

    seen: dict[tuple[float, ...], dict[str, Any]] = {}

    def measure(weights: list[float]) -> dict[str, Any]:
        key = tuple(round(w, 12) for w in weights)
        if key not in seen:
            merged = adapter.merge_tasks(names, weights, method=method, density=density, seed=seed, heads=heads)
            seen[key] = scores(model, opened, examples, batch_size=batch_size, device=target)
            adapter.remove_task(merged)
        return seen[key]

    def objective(free: Any) -> float:
        weights = weights_of(free)
        return float(measure(weights)["loss"]) + PENALTY * sum(abs(w) for w in weights) / count

    start = np.full(count - 1 if centered else count, 1.0 / count)
    simplex = np.vstack([start, *(start + 0.5 * np.eye(len(start))[i] for i in range(len(start)))])
    if len(start):
        found = minimize(
            objective,
            start,
            method="Nelder-Mead",
            options={"maxfev": budget, "initial_simplex": simplex, "xatol": 1e-3, "fatol": 1e-5},
        )
        best = found.x if objective(found.x) <= objective(start) else start
    else:  # one task on a centred basis: its weight is 1
        best = start
    weights = weights_of(best)
    return TunedWeights(
        weights=weights,
        metrics=measure(weights),
        equal_metrics=measure(weights_of(start)),
        evaluations=len(seen),
        data_sha256=hashlib.sha256(Path(data).read_bytes()).hexdigest(),
        examples=len(examples),
    )
