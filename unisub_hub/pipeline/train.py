"""``train``: a new sequence-classification task learned as coefficients on a frozen basis.

The base model is loaded with ``transformers`` (``AutoModelForSequenceClassification``), the
basis is attached (:mod:`unisub_hub.adapt`), and only the task's coefficients (and its
head, unless asked not to) are trained with AdamW. Everything the user gave is checked
before any training starts, and the coefficient set is written only at the end, atomically.
"""

from __future__ import annotations

import csv
import json
import math
import time
from collections.abc import Callable, Sequence
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
from .validate import check_base_model

__all__ = ["Example", "TrainOptions", "TrainOutcome", "read_examples", "train"]

_HEAD_NAMES = ("classifier", "score")
"""Where ``transformers`` sequence-classification models keep their head."""


@dataclass(frozen=True)
class Example:
    text: str
    pair: str | None
    label: int


@dataclass(frozen=True)
class TrainOptions:
    """How to train; every field is recorded in the task's manifest."""

    epochs: int = 1
    max_steps: int | None = None
    lr: float = 5e-3
    batch_size: int = 16
    seed: int = 0
    init: str = "zero"
    train_head: bool = True
    max_length: int = 128
    text_column: str = "text"
    pair_column: str = "text_pair"
    label_column: str = "label"


@dataclass
class TrainOutcome:
    coefficients: CoefficientSet
    steps: int
    final_loss: float
    eval_accuracy: list[float] = field(default_factory=list)
    """Per epoch, when evaluation data was given."""
    trainable_parameters: int = 0
    seconds: float = 0.0


class TrainProgress(Protocol):
    """Receives training progress (the CLI draws it); without one, nothing is shown."""

    def start(self, total_steps: int) -> None: ...

    def step(self, loss: float) -> None: ...

    def epoch(self, number: int, accuracy: float | None) -> None: ...


class _Silent:
    def start(self, total_steps: int) -> None:
        pass

    def step(self, loss: float) -> None:
        pass

    def epoch(self, number: int, accuracy: float | None) -> None:
        pass


def read_examples(
    path: str | Path,
    *,
    text_column: str = "text",
    pair_column: str = "text_pair",
    label_column: str = "label",
    label2id: dict[str, int] | None = None,
    num_labels: int | None = None,
) -> list[Example]:
    """Labelled examples from a JSONL (one object a line) or CSV/TSV file.

    A label is an integer class or one of the base config's label names (``label2id``).

    Raises:
        TrainingDataError: unreadable, empty, missing a column, or a label the head cannot take.
    """
    path = Path(path)
    rows = _rows(path)
    if not rows:
        raise TrainingDataError("holds no examples", path=path)
    examples = []
    for number, row in enumerate(rows, 1):
        for column in (text_column, label_column):
            if column not in row or row[column] is None:
                raise TrainingDataError(
                    f"example {number} has no column {column!r} (columns: {', '.join(map(str, row)) or 'none'})",
                    path=path,
                )
        label = _label(row[label_column], label2id or {}, path, number)
        if num_labels is not None and not 0 <= label < num_labels:
            raise TrainingDataError(
                f"example {number}: label {label} does not fit the head's {num_labels} labels (num_labels of the base "
                "model)",
                path=path,
            )
        pair = row.get(pair_column)
        examples.append(Example(str(row[text_column]), None if pair in (None, "") else str(pair), label))
    return examples


def _rows(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        raise TrainingDataError("no such data file", path=path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise TrainingDataError("is not UTF-8 text", path=path) from None
    if path.suffix.lower() in (".csv", ".tsv"):
        reader = csv.DictReader(text.splitlines(), delimiter="\t" if path.suffix.lower() == ".tsv" else ",")
        return [dict(row) for row in reader]
    rows = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError as error:  # JSONDecodeError, or an integer past Python's digit limit
            raise TrainingDataError(
                f"line {number} is not JSON ({getattr(error, 'msg', str(error)[:120])}); expected JSONL, or a "
                ".csv/.tsv file",
                path=path,
            ) from None
        if not isinstance(row, dict):
            raise TrainingDataError(f"line {number} is not a JSON object", path=path)
        rows.append(row)
    return rows


def _label(value: Any, label2id: dict[str, int], path: Path, number: int) -> int:
    if isinstance(value, bool):
        raise TrainingDataError(
            f"example {number}: label {value!r} is neither a class number nor a label name", path=path
        )
    if isinstance(value, int):
        return value
    text = str(value).strip()
    if text in label2id:
        return int(label2id[text])
    if text.lstrip("-").isdigit():
        return int(text)
    names = ", ".join(sorted(label2id)) or "none in the base config"
    raise TrainingDataError(
        f"example {number}: label {value!r} is neither a class number nor a label name ({names})", path=path
    )


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
    """Train a sequence-classification task on ``basis`` from ``base`` and write it to ``out``.

    Raises:
        TrainingDataError: a data file cannot be used (see :func:`read_examples`).
        IncompatibleSourcesError: the base model does not have the basis's layers.
        ArtifactExistsError: ``out`` exists (checked before anything else).
    """
    started = time.perf_counter()
    check_artifact_output(out, COEFFICIENTS_FORMAT)
    _check_options(options)
    progress = progress or _Silent()
    check_base_model(basis.manifest, str(base))
    config = _config(base)
    label2id = {str(k): int(v) for k, v in (getattr(config, "label2id", None) or {}).items()}

    def read(path):
        return read_examples(
            path,
            text_column=options.text_column,
            pair_column=options.pair_column,  # noqa: E731
            label_column=options.label_column,
            label2id=label2id,
            num_labels=config.num_labels,
        )

    examples = read(data)
    evaluation = read(eval_data) if eval_data is not None else None

    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    torch.manual_seed(options.seed)
    model = AutoModelForSequenceClassification.from_pretrained(base)
    tokenizer = AutoTokenizer.from_pretrained(base)
    modules = dict(model.named_modules())
    heads = [head for head in _HEAD_NAMES if head in modules][:1] if options.train_head else []
    if options.train_head and not heads:
        raise TrainingDataError(
            f"the base model has no head named {' or '.join(_HEAD_NAMES)} to train; pass {option('train_head')}",
            path=base,
        )
    adapter = attach(model, basis, heads=heads)
    task = name or safe_name(Path(out).name)
    adapter.add_task(task, init=options.init, train_head=options.train_head)
    target = resolve_device(device)
    model.to(target)
    parameters = adapter.parameters(task)
    optimizer = torch.optim.AdamW(parameters, lr=options.lr)
    encode = _encoder(tokenizer, options.max_length, target)

    per_epoch = math.ceil(len(examples) / options.batch_size)
    total = min(options.max_steps, per_epoch * options.epochs) if options.max_steps else per_epoch * options.epochs
    epochs = math.ceil(total / per_epoch)
    progress.start(total)
    generator = torch.Generator().manual_seed(options.seed)
    steps, loss_value, accuracies = 0, float("nan"), []
    for epoch in range(1, epochs + 1):
        model.train()
        order = torch.randperm(len(examples), generator=generator).tolist()
        for start in range(0, len(order), options.batch_size):
            if steps >= total:
                break
            batch = [examples[i] for i in order[start : start + options.batch_size]]
            loss = model(**encode(batch), labels=torch.tensor([e.label for e in batch], device=target)).loss
            if not torch.isfinite(loss):
                raise TrainingDataError(
                    f"the loss became {float(loss)} at step {steps + 1}; lower {option('lr')}", path=data
                )
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            steps += 1
            loss_value = float(loss)
            progress.step(loss_value)
        accuracy = accuracy_of(model, evaluation, encode, options.batch_size) if evaluation else None
        if accuracy is not None:
            accuracies.append(accuracy)
        progress.epoch(epoch, accuracy)
    model.eval()
    metrics: dict[str, Any] = {"train_loss": loss_value}
    if accuracies:
        metrics["eval_accuracy"] = accuracies[-1]
    training = {
        "hyperparameters": {**asdict(options), "device": str(target)},
        "data_sha256": sha256_files([Path(data)]),
        "eval_sha256": sha256_files([Path(eval_data)]) if eval_data is not None else None,
        "steps": steps,
        "init": options.init,
        "base_model": str(base),
    }
    saved = adapter.save_task(out, task, training=training, metrics=metrics, task_type="SEQ_CLS", command=command)
    return TrainOutcome(
        saved, steps, loss_value, accuracies, sum(p.numel() for p in parameters), time.perf_counter() - started
    )


def accuracy_of(model: torch.nn.Module, examples: Sequence[Example], encode: Callable, batch_size: int) -> float:
    """Share of ``examples`` the model labels right."""
    model.eval()
    correct = 0
    with torch.no_grad():
        for start in range(0, len(examples), batch_size):
            batch = examples[start : start + batch_size]
            predicted = model(**encode(batch)).logits.argmax(-1).cpu()
            correct += int((predicted == torch.tensor([e.label for e in batch])).sum())
    return correct / len(examples)


def _encoder(
    tokenizer, max_length: int, device: torch.device
) -> Callable[[Sequence[Example]], dict[str, torch.Tensor]]:
    def encode(batch: Sequence[Example]) -> dict[str, torch.Tensor]:
        texts = [e.text for e in batch]
        pairs = [e.pair or "" for e in batch] if any(e.pair for e in batch) else None
        encoded = tokenizer(texts, pairs, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
        return {key: value.to(device) for key, value in encoded.items()}

    return encode


def _config(base: str | Path):
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(base)
    except (OSError, ValueError) as error:
        raise TrainingDataError(
            f"cannot read the base model's config ({str(error).splitlines()[0]})", path=base
        ) from None


def _check_options(options: TrainOptions) -> None:
    checks = (
        (options.epochs >= 1, f"epochs must be at least 1, got {options.epochs}"),
        (options.max_steps is None or options.max_steps >= 1, f"max steps must be at least 1, got {options.max_steps}"),
        (options.batch_size >= 1, f"batch size must be at least 1, got {options.batch_size}"),
        (math.isfinite(options.lr) and options.lr > 0, f"learning rate must be a positive number, got {options.lr}"),
        (options.max_length >= 2, f"max length must be at least 2 tokens, got {options.max_length}"),
    )
    for ok, message in checks:
        if not ok:
            raise TrainingDataError(message)
