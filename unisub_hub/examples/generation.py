"""The causal-LM example collection: a small GPT-2 pretrained here, and LoRA generation tasks on it.

No pretrained causal LM can be downloaded offline, so one is pretrained once on generated text
(the example tasks' sentences, tagged with the module they document or the way a review leans:
:func:`~.text_tasks.pretraining_text`) and cached; it is saved as a checkpoint folder
(``config.json``, ``model.safetensors``, a word-level tokenizer with an EOS and a chat
template) that every downstream step opens exactly as it would a real one. Each generation
task is one of :mod:`.text_tasks`' tasks asked as a completion: the prompt is the sentence
followed by ``=>``, the completion the word that names its label (``network``,
``positive``...), then EOS; the loss is on the completion only, as ``unisub-hub train`` and
``eval`` count it. A task's LoRA (peft, ``r`` 4 on the fused attention ``c_attn``) is trained
on its rows once and cached.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from .causal import word_tokenizer
from .text_tasks import ALL_TASKS, label_words, make_task, pretraining_text

__all__ = [
    "LORA_RANK",
    "PROMPT_END",
    "SEQUENCE_LENGTH",
    "ensure_generation_base",
    "ensure_generation_zoo",
    "fit_causal",
    "generation_rows",
    "train_generation_lora",
    "write_rows",
]

LORA_RANK = 4
PROMPT_END = "=>"
"""The word that ends every prompt: the model answers after it."""
SEQUENCE_LENGTH = 48
_DONE = "unisub_example.json"


def generation_rows(name: str, *, split: str, seed: int = 0, count: int | None = None) -> list[dict[str, str]]:
    """Task ``name``'s ``train`` or ``test`` examples as ``prompt``/``completion`` rows."""
    task = make_task(name, seed=seed)
    words = label_words(name)
    examples = task.train if split == "train" else task.test
    rows = [{"prompt": f"{text} {PROMPT_END}", "completion": f" {words[label]}"} for text, label in examples]
    return rows[:count] if count is not None else rows


def write_rows(rows: Sequence[dict[str, Any]], path: Path) -> Path:
    """``rows`` as JSONL at ``path`` (the data format ``train`` and ``eval`` read)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def _vocabulary(corpus: Sequence[str]) -> list[str]:
    counts = Counter(word for sentence in corpus for word in sentence.split())
    labels = {word for name in ALL_TASKS for word in label_words(name)}
    return sorted({word for word, count in counts.items() if count >= 2} | labels | {PROMPT_END})


def ensure_generation_base(
    folder: Path,
    *,
    steps: int = 800,
    width: int = 128,
    layers: int = 4,
    seed: int = 0,
    log: Callable[[str], None] = print,
) -> Path:
    """The pretrained small GPT-2 (trained once, then reused from ``folder``)."""
    if (folder / _DONE).is_file():
        return folder
    from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel

    start = time.perf_counter()
    corpus = pretraining_text()
    tmp = folder.with_name(folder.name + ".tmp")
    word_tokenizer(_vocabulary(corpus), tmp)
    tokenizer = AutoTokenizer.from_pretrained(tmp)
    stream: list[int] = []
    for sentence in corpus:
        stream += tokenizer(sentence)["input_ids"] + [tokenizer.eos_token_id]
    chunks = torch.tensor(stream[: len(stream) // SEQUENCE_LENGTH * SEQUENCE_LENGTH]).view(-1, SEQUENCE_LENGTH)
    torch.manual_seed(seed)
    config = GPT2Config(
        vocab_size=len(tokenizer),
        n_positions=2 * SEQUENCE_LENGTH,
        n_embd=width,
        n_layer=layers,
        n_head=4,
        bos_token_id=tokenizer.eos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.eos_token_id,
    )
    model = GPT2LMHeadModel(config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=0.01)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=2e-3, total_steps=steps, pct_start=0.1)
    generator = torch.Generator().manual_seed(seed)
    model.train()
    for step in range(steps):
        batch = chunks[torch.randint(0, len(chunks), (32,), generator=generator)]
        loss = model(input_ids=batch, labels=batch).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
        if (step + 1) % 200 == 0:
            log(f"  pretraining the example GPT-2: step {step + 1}/{steps}, loss {float(loss.detach()):.2f}")
    model.eval().save_pretrained(tmp)
    seconds = time.perf_counter() - start
    record = {"steps": steps, "final_loss": float(loss.detach()), "tokens": len(stream), "seconds": seconds}
    (tmp / _DONE).write_text(json.dumps(record, indent=2) + "\n")
    tmp.rename(folder)
    return folder


def train_generation_lora(
    base: Path, name: str, out: Path, *, seed: int, data_seed: int = 0, steps: int = 200, lr: float = 1e-2
) -> dict[str, Any]:
    """One LoRA adapter of generation task ``name`` (loss on the completion only), saved to ``out``."""
    from peft import LoraConfig, get_peft_model

    from ..pipeline.objectives import load_base, scores

    start = time.perf_counter()
    opened = load_base(base, max_length=SEQUENCE_LENGTH)
    family = opened.family
    train = family.read(
        write_rows(
            generation_rows(name, split="train", seed=data_seed), out.parent / "data" / f"{name}-{data_seed}.jsonl"
        ),
        opened,
        {},
        SEQUENCE_LENGTH,
    )
    torch.manual_seed(seed)
    config = LoraConfig(r=LORA_RANK, lora_alpha=2 * LORA_RANK, target_modules=["c_attn"], task_type="CAUSAL_LM")
    model = get_peft_model(opened.load_model(), config)
    fit_causal(
        model, [p for p in model.parameters() if p.requires_grad], opened, train.examples, steps=steps, lr=lr, seed=seed
    )
    test = family.read(
        write_rows(
            generation_rows(name, split="test", seed=data_seed), out.parent / "data" / f"{name}-{data_seed}-test.jsonl"
        ),
        opened,
        {},
        SEQUENCE_LENGTH,
    )
    result = {
        "task": name,
        "seed": seed,
        "steps": steps,
        **scores(model, opened, test, batch_size=64, device=torch.device("cpu")),
    }
    tmp = out.with_name(out.name + ".tmp")
    model.save_pretrained(str(tmp))
    result["seconds"] = round(time.perf_counter() - start, 1)
    (tmp / _DONE).write_text(json.dumps(result, indent=2) + "\n")
    tmp.rename(out)
    return result


def fit_causal(
    model: torch.nn.Module,
    parameters: Sequence[torch.nn.Parameter],
    opened: Any,
    examples: Sequence[Any],
    *,
    steps: int,
    lr: float,
    seed: int,
    batch: int = 16,
) -> None:
    """AdamW on ``parameters`` for ``steps`` batches drawn (with ``seed``) from ``examples``.

    The loss is ``eval``'s: the mean over the tokens that carry loss (the completions)."""
    family = opened.family
    optimizer = torch.optim.AdamW(parameters, lr=lr)
    generator = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(steps):
        index = torch.randint(0, len(examples), (batch,), generator=generator).tolist()
        total, count, _ = family.loss(model, family.batch(opened, [examples[i] for i in index], torch.device("cpu")))
        optimizer.zero_grad()
        (total / count).backward()
        optimizer.step()
    model.eval()


def ensure_generation_zoo(
    root: Path,
    *,
    tasks: Sequence[str] = ALL_TASKS,
    seed: int = 0,
    steps: int = 200,
    on_adapter: Callable[[dict[str, Any]], None] | None = None,
) -> tuple[Path, list[Path]]:
    """The pretrained base (under ``root/base``) and one LoRA per generation task (``root/seed-<seed>``).

    ``seed`` draws the tasks' examples and the adapters' initialisation."""
    base = ensure_generation_base(root / "base")
    folder = root / f"seed-{seed}"
    folder.mkdir(parents=True, exist_ok=True)
    adapters = []
    for number, name in enumerate(tasks):
        out = folder / f"lora-{name}"
        if not (out / _DONE).is_file():
            result = train_generation_lora(
                base, name, out, seed=1000 * (seed + 1) + number, data_seed=seed, steps=steps
            )
            if on_adapter:
                on_adapter(result)
        adapters.append(out)
    return base, adapters
