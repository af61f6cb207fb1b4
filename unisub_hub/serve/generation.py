"""Decoding a batch of sequences of different tasks together, with a key-value cache.

Each sequence keeps its task for all its decode steps, so one forward pass per step serves
every task of the batch: the attached model computes ``x V`` once, each row's core, then
``U`` (:class:`~unisub_hub.adapt.SubspaceLayer` with per-example tasks). Prompts are padded
on the left, positions counted from each prompt's first real token, and each row samples with
its own settings (greedy at temperature 0, else temperature and nucleus ``top_p`` with its
own seeded generator) and stops on EOS, a stop string or its token budget.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

__all__ = ["Completion", "Sequence_", "decode"]


@dataclass
class Sequence_:
    """One sequence to continue (a request of ``/v1/completions`` or ``/v1/chat/completions``)."""

    task: str
    prompt: list[int]
    max_tokens: int = 16
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int | None = None
    stop: list[str] = field(default_factory=list)
    on_text: Callable[[str], None] | None = None
    """Called with each new piece of text as it is decided (streaming)."""


@dataclass
class Completion:
    text: str
    finish_reason: str
    """``stop`` (EOS or a stop string) or ``length`` (the token budget)."""
    prompt_tokens: int
    completion_tokens: int


class _Row:
    def __init__(self, item: Sequence_, tokenizer: Any, eos: int | None) -> None:
        self.item, self.tokenizer, self.eos = item, tokenizer, eos
        self.tokens: list[int] = []
        self.text = ""
        self.sent = 0
        self.finish: str | None = None
        self.eos_seen = False
        seed = item.seed if item.seed is not None else int.from_bytes(os.urandom(7), "little")
        self.generator = torch.Generator().manual_seed(seed)

    def pick(self, logits: torch.Tensor) -> int:
        item = self.item
        if item.temperature <= 0:
            return int(logits.argmax())
        probs = torch.softmax(logits.double() / item.temperature, dim=-1)
        if item.top_p < 1:
            ordered, order = probs.sort(descending=True)
            keep = ordered.cumsum(0) - ordered < item.top_p  # the smallest head reaching top_p
            probs = torch.zeros_like(probs).scatter(0, order[keep], ordered[keep])
        return int(torch.multinomial(probs, 1, generator=self.generator))

    def add(self, token: int) -> None:
        if token == self.eos:
            self.finish, self.eos_seen = "stop", True
            return
        self.tokens.append(token)
        self.text = self.tokenizer.decode(self.tokens, skip_special_tokens=True)
        hits = [self.text.index(stop) for stop in self.item.stop if stop and stop in self.text]
        if hits:
            self.text, self.finish = self.text[: min(hits)], "stop"
        elif len(self.tokens) >= self.item.max_tokens:
            self.finish = "length"

    def flush(self) -> None:
        """Hand the caller the text that can no longer change (a stop string may still cut the tail)."""
        if self.item.on_text is None:
            return
        hold = 0 if self.finish else max((len(stop) - 1 for stop in self.item.stop), default=0)
        ready = len(self.text) - hold
        if ready > self.sent:
            self.item.on_text(self.text[self.sent : ready])
            self.sent = ready


def decode(
    model: Callable[..., Any],
    tokenizer: Any,
    items: Sequence[Sequence_],
    *,
    device: torch.device,
    pad_id: int,
    max_positions: int | None,
) -> list[Completion]:
    """Continue every sequence (the model must compute each row's task: see
    :meth:`~unisub_hub.adapt.SubspaceAdapter.per_example`)."""
    eos = tokenizer.eos_token_id
    rows = [_Row(item, tokenizer, eos) for item in items]
    prompts = [_fit(item, max_positions) for item in items]
    width = max(len(prompt) for prompt in prompts)
    ids = torch.full((len(items), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(items), width), dtype=torch.long)
    for row, prompt in enumerate(prompts):
        ids[row, width - len(prompt) :] = torch.tensor(prompt)
        mask[row, width - len(prompt) :] = 1
    ids, mask = ids.to(device), mask.to(device)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    past = None
    with torch.no_grad():
        while True:
            out = model(
                input_ids=ids, attention_mask=mask, position_ids=positions, past_key_values=past, use_cache=True
            )
            past, logits = out.past_key_values, out.logits[:, -1].float().cpu()
            chosen = []
            for row, state in enumerate(rows):
                token = state.pick(logits[row]) if state.finish is None else pad_id
                if state.finish is None:
                    state.add(token)
                    state.flush()
                chosen.append(token)
            if all(state.finish is not None for state in rows):
                break
            ids = torch.tensor(chosen, dtype=torch.long, device=device)[:, None]
            mask = torch.cat([mask, torch.ones_like(ids)], dim=1)
            positions = positions[:, -1:] + 1
    return [
        Completion(state.text, state.finish or "length", len(prompt), len(state.tokens) + state.eos_seen)
        for state, prompt in zip(rows, prompts, strict=True)
    ]


def _fit(item: Sequence_, max_positions: int | None) -> list[int]:
    """The prompt, cut from the left so that it and its token budget fit the model's positions."""
    prompt = item.prompt or [0]
    if max_positions is None:
        return prompt
    item.max_tokens = max(1, min(item.max_tokens, max_positions - 1))
    return prompt[-(max_positions - item.max_tokens) :]
