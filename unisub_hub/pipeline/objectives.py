"""What a base model is trained and scored on: one object per family of model head.

A sequence-classification base learns labels (cross entropy of the head's logits; accuracy);
a causal language model learns text (next-token cross entropy on the tokens that carry loss;
perplexity). ``train``, ``eval`` and ``serve`` ask the family (:func:`family_of`) how to load
the base, read data, batch it and score it, and never branch on the kind of model themselves.

Loading a base checks what transformers would let through silently: a folder without
tokenizer files (transformers then builds a near-empty tokenizer and training runs on
``[UNK]``), a tokenizer with ids beyond the model's embeddings, and weights that do not fit
the config (one line instead of transformers' size-mismatch report).
"""

from __future__ import annotations

import json
import math
import re
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..errors import TrainingDataError, UnisubError, option
from ..extras import require
from ..io.checkpoint import CheckpointSource
from .data import (
    Example,
    TokenExample,
    causal_batch,
    read_examples,
    read_rows,
    token_losses,
    tokenize_causal,
)

__all__ = [
    "CAUSAL_LM",
    "CLASSIFICATION",
    "BaseModel",
    "Family",
    "check_base_folder",
    "family_of",
    "load_base",
    "scores",
]

_TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "vocab.txt",
    "vocab.json",
    "spiece.model",
    "tokenizer.model",
    "sentencepiece.bpe.model",
)
_HEAD_NAMES = ("classifier", "score")
"""Where transformers' sequence-classification models keep their head."""
_HEAD_WEIGHT = re.compile(r"(?:^|\.)(?:classifier|score)(?:\.out_proj)?\.weight$")
"""The head's output layer: its rows are the labels (``classifier.out_proj`` in RoBERTa-style heads)."""


@dataclass
class Data:
    """A data file read for one family: its examples and what they ask (``objective``)."""

    objective: str
    examples: list[Any]
    path: str
    notes: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.examples)


class Family:
    """How one family of model is loaded, fed and scored (see the module docstring)."""

    name: str
    task_type: str
    """PEFT's ``task_type`` of the family's adapters."""
    metric: str
    """The metric a report leads with."""

    def model_class(self) -> Any:
        raise NotImplementedError

    def heads(self, model: torch.nn.Module) -> list[str]:
        """The modules each task keeps its own copy of (a classifier), if any."""
        raise NotImplementedError

    def read(self, path: str | Path, base: BaseModel, columns: dict[str, str], max_length: int) -> Data:
        raise NotImplementedError

    def batch(self, base: BaseModel, examples: Sequence[Any], device: torch.device) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def loss(self, model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, int, int]:
        """The summed loss of a batch, how many units (examples or tokens) it is over, and how many
        of those the model got right (classification) or 0."""
        raise NotImplementedError

    def metrics(self, loss_sum: float, units: int, right: int, examples: int) -> dict[str, Any]:
        raise NotImplementedError

    def check_weights(self, base: BaseModel, tensors: dict[str, tuple[int, ...]]) -> None:
        """Refuse weights the config does not describe (by their shapes), before transformers loads them."""


class _Classification(Family):
    name = "classification"
    task_type = "SEQ_CLS"
    metric = "accuracy"

    def model_class(self) -> Any:
        from transformers import AutoModelForSequenceClassification

        return AutoModelForSequenceClassification

    def heads(self, model: torch.nn.Module) -> list[str]:
        modules = dict(model.named_modules())
        return [head for head in _HEAD_NAMES if head in modules][:1]

    def check_weights(self, base: BaseModel, tensors: dict[str, tuple[int, ...]]) -> None:
        """A config whose label count differs from the stored classifier's rows is refused naming both.

        A config without ``id2label`` means 2 labels to transformers, which then fails on a
        3-row classifier with a size-mismatch report that names neither count.
        """
        labels = base.config.num_labels
        for name, shape in tensors.items():
            if _HEAD_WEIGHT.search(name) and len(shape) == 2 and shape[0] != labels:
                raise TrainingDataError(
                    f"its config declares {labels} labels but its weights' {name} has {shape[0]} rows: give the "
                    "config the classifier's labels (id2label or num_labels)",
                    path=base.path,
                )

    def read(self, path: str | Path, base: BaseModel, columns: dict[str, str], max_length: int) -> Data:
        config = base.config
        label2id = {str(k): int(v) for k, v in (getattr(config, "label2id", None) or {}).items()}
        examples = read_examples(path, label2id=label2id, num_labels=config.num_labels, **columns)
        return Data(self.name, examples, str(path))

    def batch(self, base: BaseModel, examples: Sequence[Example], device: torch.device) -> dict[str, torch.Tensor]:
        texts = [e.text for e in examples]
        pairs = [e.pair or "" for e in examples] if any(e.pair for e in examples) else None
        encoded = base.tokenizer(
            texts, pairs, padding=True, truncation=True, max_length=base.max_length, return_tensors="pt"
        )
        batch = {key: value.to(device) for key, value in encoded.items()}
        batch["labels"] = torch.tensor([e.label for e in examples], device=device)
        return batch

    def loss(self, model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, int, int]:
        labels = batch["labels"]
        logits = model(**{k: v for k, v in batch.items() if k != "labels"}).logits
        total = torch.nn.functional.cross_entropy(logits.float(), labels, reduction="sum")
        return total, len(labels), int((logits.argmax(-1) == labels).sum())

    def metrics(self, loss_sum: float, units: int, right: int, examples: int) -> dict[str, Any]:
        return {"accuracy": right / units, "loss": loss_sum / units, "examples": examples}


class _CausalLM(Family):
    name = "causal-lm"
    task_type = "CAUSAL_LM"
    metric = "loss"

    def model_class(self) -> Any:
        from transformers import AutoModelForCausalLM

        return AutoModelForCausalLM

    def heads(self, model: torch.nn.Module) -> list[str]:
        return []  # the LM head is usually tied to the embeddings: a task is its coefficients alone

    def read(self, path: str | Path, base: BaseModel, columns: dict[str, str], max_length: int) -> Data:
        objective, examples = tokenize_causal(read_rows(path), base.tokenizer, max_length=max_length, path=path)
        return Data(objective, examples, str(path))

    def batch(self, base: BaseModel, examples: Sequence[TokenExample], device: torch.device) -> dict[str, torch.Tensor]:
        return causal_batch(examples, base.pad_id, device)

    def loss(self, model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, int, int]:
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        total, count = token_losses(logits, batch["labels"])
        return total, count, 0

    def metrics(self, loss_sum: float, units: int, right: int, examples: int) -> dict[str, Any]:
        loss = loss_sum / units
        return {"loss": loss, "perplexity": math.exp(min(loss, 700.0)), "tokens": units, "examples": examples}


CLASSIFICATION: Family = _Classification()
CAUSAL_LM: Family = _CausalLM()


def family_of(config: Any) -> Family:
    """The family of a transformers config: a causal LM when its architecture says so
    (``...ForCausalLM``, ``...LMHeadModel``), else sequence classification."""
    architectures = getattr(config, "architectures", None) or []
    causal = any(str(a).endswith(("ForCausalLM", "LMHeadModel")) for a in architectures)
    return CAUSAL_LM if causal else CLASSIFICATION


@dataclass
class BaseModel:
    """A base model folder opened for training or scoring: config, tokenizer and family."""

    path: str
    config: Any
    tokenizer: Any
    family: Family
    max_length: int
    notes: list[str] = field(default_factory=list)
    """What was adjusted, for the user (a ``max_length`` past the model's positions)."""

    @property
    def pad_id(self) -> int:
        for candidate in (self.tokenizer.pad_token_id, self.tokenizer.eos_token_id):
            if candidate is not None:
                return int(candidate)
        return 0

    def load_model(self) -> torch.nn.Module:
        """The base model's weights, in eval mode (one line if they do not load)."""
        with _quiet():
            try:
                model = self.family.model_class().from_pretrained(self.path)
            except (OSError, ValueError, RuntimeError, TypeError) as error:
                first = str(error).strip().splitlines()[0] if str(error).strip() else error.__class__.__name__
                raise TrainingDataError(f"the base model does not load ({first[:300]})", path=self.path) from None
        return model.eval()


def load_base(base: str | Path, *, max_length: int = 128) -> BaseModel:
    """Open a base model folder: its config, its tokenizer (checked against the model) and its family.

    Raises:
        MissingDependencyError: transformers is not installed.
        TrainingDataError: no readable config, no tokenizer files, or a tokenizer whose ids the
            model's embeddings do not cover.
    """
    require("transformers", "training and scoring models")
    from transformers import AutoConfig, AutoTokenizer

    check_base_folder(base)
    with _quiet():
        try:
            config = AutoConfig.from_pretrained(base)
        except (OSError, ValueError) as error:
            first = str(error).splitlines()[0] if str(error) else error.__class__.__name__
            raise TrainingDataError(f"cannot read the base model's config ({first})", path=base) from None
        folder = Path(base)
        if folder.is_dir() and not any((folder / name).is_file() for name in _TOKENIZER_FILES):
            raise TrainingDataError(
                f"has no tokenizer files ({', '.join(_TOKENIZER_FILES[:4])}, ...): the model's own tokenizer is "
                "needed to read text",
                path=base,
            )
        try:
            tokenizer = AutoTokenizer.from_pretrained(base)
        except (OSError, ValueError, TypeError, json.JSONDecodeError) as error:
            first = str(error).splitlines()[0] if str(error) else error.__class__.__name__
            raise TrainingDataError(f"its tokenizer does not load ({first[:200]})", path=base) from None
    vocabulary = getattr(config, "vocab_size", None)
    if vocabulary is not None and len(tokenizer) > vocabulary:
        raise TrainingDataError(
            f"its tokenizer has {len(tokenizer)} tokens but the model embeds only {vocabulary}: not this model's "
            "tokenizer",
            path=base,
        )
    notes = []
    limit = _positions(config)
    if limit is not None and max_length > limit:
        notes.append(f"{option('max_length')} {max_length} is past the model's {limit} positions: using {limit}")
        max_length = limit
    opened = BaseModel(str(base), config, tokenizer, family_of(config), max_length, notes)
    if Path(base).is_dir():
        opened.family.check_weights(opened, _stored_shapes(Path(base)))
    return opened


def _stored_shapes(folder: Path) -> dict[str, tuple[int, ...]]:
    """Every stored tensor's shape, from the safetensors headers alone (nothing when none are readable)."""
    try:
        return {name: info.shape for name, info in CheckpointSource(folder).tensors.items()}
    except UnisubError:
        return {}


def check_base_folder(base: str | Path) -> None:
    """A base model is a folder (or a Hub id): one of its files given instead is refused by name."""
    if Path(base).is_file():
        raise TrainingDataError(
            "is a file: give the base model's folder (its config, weights and tokenizer files together)", path=base
        )


def _positions(config: Any) -> int | None:
    for name in ("max_position_embeddings", "n_positions", "n_ctx"):
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


@contextmanager
def _quiet() -> Iterator[None]:
    """transformers' loading bars and chatter off (a command's output is its own)."""
    from transformers.utils import logging

    verbosity = logging.get_verbosity()
    logging.set_verbosity_error()
    logging.disable_progress_bar()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logging.set_verbosity(verbosity)
        logging.enable_progress_bar()


def scores(
    model: torch.nn.Module,
    base: BaseModel,
    data: Data,
    *,
    batch_size: int,
    device: torch.device,
) -> dict[str, Any]:
    """The family's metrics of ``model`` on ``data`` (loss summed over every unit, then divided once)."""
    family = base.family
    model.eval()
    loss_sum, units, right = 0.0, 0, 0
    with torch.no_grad():
        for start in range(0, len(data.examples), batch_size):
            chunk = data.examples[start : start + batch_size]
            total, count, correct = family.loss(model, family.batch(base, chunk, device))
            loss_sum, units, right = loss_sum + float(total), units + count, right + correct
    return family.metrics(loss_sum, units, right, len(data.examples))
