"""Training and evaluation data: rows from JSONL/CSV/TSV, what they ask a model to learn, and tokens.

One module reads data for ``train`` and ``eval`` alike, so a file that trains a task scores
it too, under the same rules:

- **classification** (a sequence-classification base): ``text``, optional ``text_pair``, and
  ``label`` (a class number or one of the base config's label names);
- **text** (a causal LM): loss on every token;
- **prompt-completion**: prompt and completion tokenized separately and concatenated, the
  completion followed by EOS; loss on the completion only;
- **messages**: a chat (a list of ``{role, content}``) rendered with the tokenizer's chat
  template; loss on the assistant turns only (each turn's text and the template's end of
  turn, not the prompt the template puts before it).

These follow the conventions of the ecosystem's SFT trainers. Truncation keeps the first
``max_length`` tokens; padding never carries loss. Every problem with a file is one
:class:`~unisub_hub.errors.TrainingDataError` naming the file, and the line where there is one.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..errors import TrainingDataError

__all__ = [
    "CAUSAL_OBJECTIVES",
    "IGNORE",
    "Example",
    "TokenExample",
    "causal_batch",
    "causal_objective",
    "read_examples",
    "read_rows",
    "token_losses",
    "tokenize_causal",
]

IGNORE = -100
"""The label of a token that carries no loss (PyTorch's and transformers' ``ignore_index``)."""

CAUSAL_OBJECTIVES = ("text", "prompt-completion", "messages")
_MAX_DEPTH = 64
"""Rows are flat records (a chat is two levels deep): anything deeper is not data of ours."""


@dataclass(frozen=True)
class Example:
    """One classification example."""

    text: str
    pair: str | None
    label: int


@dataclass(frozen=True)
class TokenExample:
    """One causal-LM example: its token ids and, per token, its label (:data:`IGNORE` where no loss)."""

    input_ids: list[int]
    labels: list[int]

    @property
    def loss_tokens(self) -> int:
        """Tokens that carry loss (a label is predicted from the token before it: the first never does)."""
        return sum(1 for label in self.labels[1:] if label != IGNORE)


# --- rows -------------------------------------------------------------------------------------


def read_rows(path: str | Path) -> list[dict[str, Any]]:
    """The records of a JSONL (one object a line) or CSV/TSV (a header, then rows) file.

    Raises:
        TrainingDataError: missing, not UTF-8, a line that is not a JSON object (or is nested
            past any data's depth), or a CSV row with another number of fields than its header.
    """
    path = Path(path)
    if not path.is_file():
        raise TrainingDataError("no such data file", path=path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise TrainingDataError("is not UTF-8 text", path=path) from None
    if path.suffix.lower() in (".csv", ".tsv"):
        return _csv_rows(text, "\t" if path.suffix.lower() == ".tsv" else ",", path)
    rows = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError as error:  # JSONDecodeError, or an integer past Python's digit limit
            reason = getattr(error, "msg", str(error)[:120])
            raise TrainingDataError(
                f"line {number} is not JSON ({reason}); expected JSONL, or a .csv/.tsv file", path=path
            ) from None
        except RecursionError:
            raise TrainingDataError(f"line {number} is nested too deeply to be a data row", path=path) from None
        if not isinstance(row, dict):
            raise TrainingDataError(f"line {number} is not a JSON object", path=path)
        if _depth(row) > _MAX_DEPTH:
            raise TrainingDataError(f"line {number} is nested too deeply to be a data row", path=path)
        rows.append(row)
    return rows


def _depth(value: Any, level: int = 0) -> int:
    if level > _MAX_DEPTH:
        return level
    if isinstance(value, dict):
        return max((_depth(v, level + 1) for v in value.values()), default=level + 1)
    if isinstance(value, list):
        return max((_depth(v, level + 1) for v in value), default=level + 1)
    return level


def _csv_rows(text: str, delimiter: str, path: Path) -> list[dict[str, Any]]:
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    try:
        header = next(reader, None)
        if header is None:
            return []
        rows = []
        for row in reader:
            if not row:
                continue
            if len(row) != len(header):
                raise TrainingDataError(
                    f"line {reader.line_num} has {len(row)} fields, the header {len(header)} "
                    f"({', '.join(header)}); quote a field that holds a {delimiter!r}",
                    path=path,
                )
            rows.append(dict(zip(header, row, strict=True)))
    except csv.Error as error:
        raise TrainingDataError(f"line {reader.line_num} is not valid CSV ({error})", path=path) from None
    return rows


def _require(rows: Sequence[Mapping[str, Any]], path: Path | str) -> None:
    if not rows:
        raise TrainingDataError("holds no examples", path=path)


# --- classification ---------------------------------------------------------------------------


def read_examples(
    path: str | Path,
    *,
    text_column: str = "text",
    pair_column: str = "text_pair",
    label_column: str = "label",
    label2id: dict[str, int] | None = None,
    num_labels: int | None = None,
) -> list[Example]:
    """Labelled examples from a JSONL or CSV/TSV file.

    A label is an integer class or one of the base config's label names (``label2id``).

    Raises:
        TrainingDataError: unreadable, empty, missing a column, or a label the head cannot take.
    """
    rows = read_rows(path)
    _require(rows, path)
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
        text, pair = row[text_column], row.get(pair_column)
        for column, value in ((text_column, text), (pair_column, pair)):
            if value is not None and not isinstance(value, str):
                raise TrainingDataError(f"example {number}: column {column!r} holds {value!r}, not text", path=path)
        examples.append(Example(text, pair or None, label))
    return examples


def _label(value: Any, label2id: dict[str, int], path: Path | str, number: int) -> int:
    if isinstance(value, bool):
        raise TrainingDataError(
            f"example {number}: label {value!r} is neither a class number nor a label name", path=path
        )
    if isinstance(value, int):
        return value
    text = str(value).strip()
    if text in label2id:
        return int(label2id[text])
    if text.lstrip("-").isdigit() and len(text) < 19:
        return int(text)
    names = ", ".join(sorted(label2id)) or "none in the base config"
    raise TrainingDataError(
        f"example {number}: label {value!r} is neither a class number nor a label name ({names})", path=path
    )


# --- causal language modelling ----------------------------------------------------------------


def causal_objective(rows: Sequence[Mapping[str, Any]], path: Path | str) -> str:
    """What the rows ask a causal LM to learn: ``messages``, ``prompt-completion`` or ``text``.

    Decided by the first row's columns; every row must then have them.

    Raises:
        TrainingDataError: no rows, or a first row with none of the layouts' columns.
    """
    _require(rows, path)
    first = rows[0]
    if "messages" in first:
        return "messages"
    if "prompt" in first or "completion" in first:
        return "prompt-completion"
    if "text" in first:
        return "text"
    raise TrainingDataError(
        f"example 1 has none of the columns of causal-LM data: 'text', 'prompt' and 'completion', or 'messages' "
        f"(columns: {', '.join(map(str, first)) or 'none'})",
        path=path,
    )


def tokenize_causal(
    rows: Sequence[Mapping[str, Any]],
    tokenizer: Any,
    *,
    max_length: int,
    path: Path | str,
    objective: str | None = None,
) -> tuple[str, list[TokenExample]]:
    """Token ids and loss labels of every row, and the objective (see the module docstring).

    Raises:
        TrainingDataError: a row without the objective's columns, a prompt without its
            completion, messages that are not a chat, a tokenizer without a chat template, or
            data in which no token carries loss.
    """
    objective = objective or causal_objective(rows, path)
    if objective == "messages" and not getattr(tokenizer, "chat_template", None):
        raise TrainingDataError(
            "holds chats ('messages') but the base model's tokenizer has no chat template to render them with; "
            "give prompt/completion or text data, or a tokenizer with a chat_template",
            path=path,
        )
    eos = tokenizer.eos_token_id
    examples = []
    for number, row in enumerate(rows, 1):
        if objective == "text":
            ids = _encode(tokenizer, _text(row, "text", number, path), special=True)
            ids, labels = _with_eos(ids, eos), None
        elif objective == "prompt-completion":
            prompt = _encode(tokenizer, _text(row, "prompt", number, path), special=True)
            completion = _with_eos(_encode(tokenizer, _text(row, "completion", number, path), special=False), eos)
            ids, labels = prompt + completion, [IGNORE] * len(prompt) + completion
        else:
            ids, labels = _chat(tokenizer, _messages(row, number, path), number, path)
        ids = ids[:max_length]
        labels = list(ids) if labels is None else labels[:max_length]
        examples.append(TokenExample(ids, labels))
    if not any(example.loss_tokens for example in examples):
        raise TrainingDataError(
            f"no token carries loss after truncation to {max_length} tokens (prompts longer than that?)", path=path
        )
    return objective, examples


def _text(row: Mapping[str, Any], column: str, number: int, path: Path | str) -> str:
    value = row.get(column)
    if value is None or isinstance(value, dict | list):
        other = {"prompt": "completion", "completion": "prompt"}.get(column)
        hint = f" (a {other} needs its {column})" if other and other in row else ""
        raise TrainingDataError(f"example {number} has no text in column {column!r}{hint}", path=path)
    if not isinstance(value, str):
        raise TrainingDataError(f"example {number}: column {column!r} holds {value!r}, not text", path=path)
    return value


def _messages(row: Mapping[str, Any], number: int, path: Path | str) -> list[dict[str, str]]:
    chat = row.get("messages")
    if not isinstance(chat, list) or not chat:
        raise TrainingDataError(f"example {number}: 'messages' is not a list of turns", path=path)
    for turn in chat:
        if not isinstance(turn, dict) or not isinstance(turn.get("role"), str) or "content" not in turn:
            raise TrainingDataError(
                f"example {number}: every turn of 'messages' is {{'role': ..., 'content': ...}}", path=path
            )
        if not isinstance(turn["content"], str):
            raise TrainingDataError(f"example {number}: a turn's 'content' is not text", path=path)
    if not any(turn["role"] == "assistant" for turn in chat):
        raise TrainingDataError(f"example {number}: the chat has no assistant turn to learn", path=path)
    return [{"role": turn["role"], "content": turn["content"]} for turn in chat]


def _encode(tokenizer: Any, text: str, *, special: bool) -> list[int]:
    return list(tokenizer(text, add_special_tokens=special)["input_ids"])


def _with_eos(ids: list[int], eos: int | None) -> list[int]:
    return ids + [eos] if eos is not None and (not ids or ids[-1] != eos) else ids


def _chat(tokenizer: Any, chat: list[dict[str, str]], number: int, path: Path | str) -> tuple[list[int], list[int]]:
    """The rendered chat's ids, with labels on the characters of assistant turns only.

    Each assistant turn is the text the template adds when that turn is appended to the chat
    rendered so far with its generation prompt; a template that does not render a chat as
    the concatenation of its turns cannot be split this way, and is refused.
    """
    render = tokenizer.apply_chat_template
    full = render(chat, tokenize=False)
    spans = []
    for index, turn in enumerate(chat):
        if turn["role"] != "assistant":
            continue
        before = render(chat[:index], tokenize=False, add_generation_prompt=True) if index else ""
        through = render(chat[: index + 1], tokenize=False)
        if not (through.startswith(before) and full.startswith(through)):
            raise TrainingDataError(
                f"example {number}: the tokenizer's chat template does not render a chat turn by turn, so its "
                "assistant turns cannot be found",
                path=path,
            )
        spans.append((len(before), len(through)))
    encoded = tokenizer(full, add_special_tokens=False, return_offsets_mapping=True)
    ids = list(encoded["input_ids"])
    labels = [
        token if any(start <= begin < stop for start, stop in spans) else IGNORE
        for token, (begin, _end) in zip(ids, encoded["offset_mapping"], strict=True)
    ]
    return ids, labels


def causal_batch(examples: Sequence[TokenExample], pad_id: int, device: torch.device) -> dict[str, torch.Tensor]:
    """Right-padded ``input_ids``, ``attention_mask`` and ``labels`` (padding labelled :data:`IGNORE`)."""
    width = max(len(example.input_ids) for example in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    for row, example in enumerate(examples):
        length = len(example.input_ids)
        ids[row, :length] = torch.tensor(example.input_ids)
        labels[row, :length] = torch.tensor(example.labels)
        mask[row, :length] = 1
    return {"input_ids": ids.to(device), "attention_mask": mask.to(device), "labels": labels.to(device)}


def token_losses(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, int]:
    """The summed next-token cross entropy of the tokens that carry loss, and their count.

    Token ``t`` is predicted from the logits at ``t - 1``, as transformers' causal-LM loss does.
    """
    shifted = logits[:, :-1].float().reshape(-1, logits.shape[-1])
    targets = labels[:, 1:].reshape(-1)
    total = torch.nn.functional.cross_entropy(shifted, targets, ignore_index=IGNORE, reduction="sum")
    return total, int((targets != IGNORE).sum())
