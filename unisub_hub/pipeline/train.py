"""``train``: a new task learned as coefficients on a frozen basis.

The base model is loaded with transformers, as its family asks (:mod:`.objectives`): a
sequence-classification model learns labels, a causal LM learns text (``text``,
``prompt``/``completion`` or ``messages`` data, see :mod:`.data`). The basis is attached
(:mod:`unisub_hub.adapt`) and only the task's coefficients (and a classifier's own head,
unless asked not to) are trained with AdamW. Everything the user gave is checked before any
training starts; a loss that becomes NaN or diverges ends the run with nothing written; the
coefficient set is written only at the end, atomically.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch

from ..adapt import attach
from ..constants import COEFFICIENTS_FORMAT
from ..engine import resolve_device
from ..errors import TrainingDataError, option
from ..format import BasisArtifact, CoefficientSet, check_artifact_output
from ..format.common import safe_name
from ..format.tensorfile import sha256_files
from .data import Example, read_examples
from .objectives import BaseModel, Data, check_base_folder, load_base, scores
from .settings import setting
from .validate import check_base_model

__all__ = ["Example", "TrainOptions", "TrainOutcome", "read_examples", "train"]

_MAX_SEED = 2**63 - 1
_DIVERGED = 4.0
"""A run whose last epoch's loss is this many times its first step's (and a nat above it) diverged."""


@dataclass(frozen=True)
class TrainOptions:
    """How to train; every field is recorded in the task's manifest (and is a flag of ``train``)."""

    epochs: int = setting(1, "Passes over the training data.", minimum=1)
    max_steps: int | None = setting(None, "Stop after this many optimizer steps.", number=int, minimum=1)
    lr: float = setting(
        5e-3, "AdamW learning rate (coefficient-only training takes 10-100x LoRA's).", minimum=0, minimum_open=True
    )
    batch_size: int = setting(16, "Examples per optimizer step.", minimum=1)
    seed: int = setting(
        0,
        "Seeds initialisation, shuffling and dropout: same seed, same coefficients.",
        minimum=0,
        maximum=_MAX_SEED,
    )
    init: str = setting("zero", "zero, mean, or a fine-tune (folder or Hub id) whose projection starts the task.")
    train_head: bool = setting(
        True,
        "Train the task's own classifier head (sequence classification).",
        flag="--train-head/--no-train-head",
        switch=True,
    )
    max_length: int = setting(128, "Tokens per example (longer ones are truncated).", minimum=2)
    text_column: str = setting("text", "Column of the text (classification).")
    pair_column: str = setting(
        "text_pair", "Column of the optional second text (classification).", flag="--text-pair-column"
    )
    label_column: str = setting("label", "Column of the label (classification).")

    def columns(self) -> dict[str, str]:
        return {"text_column": self.text_column, "pair_column": self.pair_column, "label_column": self.label_column}


@dataclass
class TrainOutcome:
    coefficients: CoefficientSet
    steps: int
    final_loss: float
    """Mean loss of the last epoch's steps (of the last steps, up to an epoch's worth)."""
    eval_metrics: list[dict[str, Any]] = field(default_factory=list)
    """Per epoch, when evaluation data was given (the family's metrics)."""
    trainable_parameters: int = 0
    seconds: float = 0.0
    objective: str = ""
    notes: list[str] = field(default_factory=list)

    @property
    def eval_accuracy(self) -> list[float]:
        return [m["accuracy"] for m in self.eval_metrics if "accuracy" in m]


class TrainProgress(Protocol):
    """Receives training progress (the CLI draws it); without one, nothing is shown."""

    def start(self, total_steps: int) -> None: ...

    def step(self, loss: float) -> None: ...

    def epoch(self, number: int, metrics: dict[str, Any] | None) -> None: ...


class _Silent:
    def start(self, total_steps: int) -> None:
        pass

    def step(self, loss: float) -> None:
        pass

    def epoch(self, number: int, metrics: dict[str, Any] | None) -> None:
        pass


def train(
    basis: BasisArtifact,
    base: str | Path,
    data: str | Path,
    out: str | Path,
    *,
    eval_data: str | Path | None = None,
    options: TrainOptions = TrainOptions(),
    name: str | None = None,
    device: str = "auto",
    progress: TrainProgress | None = None,
    command: str | None = None,
) -> TrainOutcome:
    """Train a task on ``basis`` from ``base`` on ``data`` and write its coefficient set to ``out``.

    Raises:
        TrainingDataError: a data file or the base model cannot be used, or the loss diverged.
        IncompatibleSourcesError: the base model does not have the basis's layers.
        ArtifactExistsError: ``out`` exists (checked before anything else).

    Example:
        >>> outcome = train(load_basis("basis"), "base", "train.jsonl", "task", options=TrainOptions(lr=0.02))
        >>> outcome.final_loss
    """
    started = time.perf_counter()
    check_artifact_output(out, COEFFICIENTS_FORMAT)
    _check_options(options)
    progress = progress or _Silent()
    check_base_folder(base)
    check_base_model(basis.manifest, str(base))
    opened = load_base(base, max_length=options.max_length)
    family = opened.family
    examples = family.read(data, opened, options.columns(), opened.max_length)
    evaluation = family.read(eval_data, opened, options.columns(), opened.max_length) if eval_data else None

    torch.manual_seed(options.seed)
    model = opened.load_model()
    heads = family.heads(model) if options.train_head else []
    if options.train_head and family.task_type == "SEQ_CLS" and not heads:
        raise TrainingDataError(
            f"the base model has no head named classifier or score to train; pass {option('train_head')}", path=base
        )
    adapter = attach(model, basis, heads=heads)
    task = name or safe_name(Path(out).name)
    adapter.add_task(task, init=options.init, train_head=options.train_head)
    target = resolve_device(device)
    model.to(target)
    parameters = adapter.parameters(task)
    run = _run(model, opened, examples, evaluation, parameters, options, target, progress)
    model.eval()
    metrics: dict[str, Any] = {"train_loss": run.final_loss}
    if run.evaluations:
        metrics.update({f"eval_{key}": value for key, value in run.evaluations[-1].items()})
    training = {
        "objective": examples.objective,
        "hyperparameters": {**asdict(options), "max_length": opened.max_length, "device": str(target)},
        "data_sha256": sha256_files([Path(data)]),
        "eval_sha256": sha256_files([Path(eval_data)]) if eval_data is not None else None,
        "steps": run.steps,
        "examples": len(examples),
        "init": options.init,
        "base_model": _model_name(base),
    }
    saved = adapter.save_task(
        out, task, training=training, metrics=metrics, task_type=family.task_type, command=command
    )
    return TrainOutcome(
        saved,
        run.steps,
        run.final_loss,
        run.evaluations,
        sum(p.numel() for p in parameters),
        time.perf_counter() - started,
        examples.objective,
        opened.notes,
    )


@dataclass
class _Run:
    steps: int
    final_loss: float
    evaluations: list[dict[str, Any]]


def _run(
    model: torch.nn.Module,
    base: BaseModel,
    data: Data,
    evaluation: Data | None,
    parameters: list[torch.nn.Parameter],
    options: TrainOptions,
    device: torch.device,
    progress: TrainProgress,
) -> _Run:
    """The optimization loop: AdamW over shuffled batches; the mean loss over each batch's units."""
    family = base.family
    optimizer = torch.optim.AdamW(parameters, lr=options.lr)
    per_epoch = math.ceil(len(data) / options.batch_size)
    total = min(options.max_steps, per_epoch * options.epochs) if options.max_steps else per_epoch * options.epochs
    progress.start(total)
    generator = torch.Generator().manual_seed(options.seed)
    losses: list[float] = []
    evaluations: list[dict[str, Any]] = []
    for epoch in range(1, math.ceil(total / per_epoch) + 1):
        model.train()
        order = torch.randperm(len(data), generator=generator).tolist()
        for start in range(0, len(order), options.batch_size):
            if len(losses) >= total:
                break
            chunk = [data.examples[i] for i in order[start : start + options.batch_size]]
            loss_sum, units, _ = family.loss(model, family.batch(base, chunk, device))
            if units == 0:  # every token of the batch truncated away: nothing to learn from it
                continue
            loss = loss_sum / units
            value = float(loss.detach())
            if not math.isfinite(value):
                raise TrainingDataError(
                    f"the loss became {value} at step {len(losses) + 1}; lower {option('lr')}; nothing written",
                    path=data.path,
                )
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(value)
            progress.step(value)
        if evaluation is not None:
            evaluations.append(scores(model, base, evaluation, batch_size=options.batch_size, device=device))
        progress.epoch(epoch, evaluations[-1] if evaluation is not None else None)
    if not losses:
        raise TrainingDataError("no batch carried any loss: nothing was trained", path=data.path)
    final = sum(losses[-per_epoch:]) / len(losses[-per_epoch:])
    if final > _DIVERGED * losses[0] and final > losses[0] + 1.0:
        raise TrainingDataError(
            f"the loss diverged (first step {losses[0]:.4g}, last epoch {final:.4g}); lower {option('lr')}; "
            "nothing written",
            path=data.path,
        )
    return _Run(len(losses), final, evaluations)


def _model_name(base: str | Path) -> str:
    """How a training record names its base: a Hub id as given, a local folder by its name only
    (nothing of the user's file system goes into an artifact that may be pushed)."""
    path = Path(base)
    return path.name if path.exists() else str(base)


def _check_options(options: TrainOptions) -> None:
    checks = (
        (options.epochs >= 1, f"epochs must be at least 1, got {options.epochs}"),
        (options.max_steps is None or options.max_steps >= 1, f"max steps must be at least 1, got {options.max_steps}"),
        (options.batch_size >= 1, f"batch size must be at least 1, got {options.batch_size}"),
        (math.isfinite(options.lr) and options.lr > 0, f"learning rate must be a positive number, got {options.lr}"),
        (options.max_length >= 2, f"max length must be at least 2 tokens, got {options.max_length}"),
        (0 <= options.seed <= _MAX_SEED, f"{option('seed')} must be between 0 and 2**63-1, got {options.seed}"),
    )
    for ok, message in checks:
        if not ok:
            raise TrainingDataError(message)
