"""The models and tasks the server tests serve, and the references their answers must equal."""

from __future__ import annotations

import json
import random
from functools import cache
from pathlib import Path
from typing import Any

import torch
from causal_models import WORDS, make_zoo, prompt_completion_rows
from clitools import run

TEXTS = ["the cat sat", "a dog ran in the park", "big red", "one two three and"]
PROMPTS = ["the cat sat", "a dog ran in", "big red", "one two three"]


def classify_zoo(root: Path) -> dict[str, Any]:
    """A tiny BERT with a tokenizer, a basis ``b`` (and ``o``), tasks task-a/b/c trained on ``b`` with
    their PEFT exports, and ``foreign``, a task of ``o``: registered in ``root/home``."""
    from models import save_adapters, save_base_with_tokenizer

    home = root / "home"
    base = save_base_with_tokenizer(root / "base", WORDS)
    adapters = save_adapters(base, root, 5)
    run("--home", home, "build", *adapters[:4], "--out", root / "basis", "--k", "3", "--name", "b", "--device", "cpu")
    run("--home", home, "build", *adapters[1:5], "--out", root / "other", "--k", "2", "--name", "o", "--device", "cpu")
    for number, name in enumerate(["task-a", "task-b", "task-c"]):
        rng = random.Random(number)
        rows = [{"text": " ".join(rng.choice(WORDS) for _ in range(4)), "label": rng.randrange(3)} for _ in range(32)]
        data = root / f"{name}.jsonl"
        data.write_text("".join(json.dumps(r) + "\n" for r in rows))
        run(
            "--home",
            home,
            "train",
            "b",
            "--base",
            base,
            "--data",
            data,
            "--out",
            root / name,
            "--lr",
            "0.1",
            "--seed",
            str(number),
            "--device",
            "cpu",
        )
        run("--home", home, "materialize", root / name, "--out", root / f"{name}-peft")
    run("--home", home, "project", adapters[4], "--basis", "o", "--out", root / "foreign")
    return {"root": root, "home": home, "base": base, "basis": root / "basis"}


@cache
def _peft_model(root: Path, task: str) -> Any:
    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(root / "base")
    return PeftModel.from_pretrained(model, root / f"{task}-peft").eval()


@cache
def _tokenizer(folder: Path) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(folder)


def reference_logits(zoo: dict[str, Any], task: str, texts: list[str], pair: str | None = None) -> torch.Tensor:
    """transformers + peft on the task's materialized adapter, one text (and ``pair``) at a time,
    truncated to the model's positions."""
    model = _peft_model(zoo["root"], task)
    tokenizer = _tokenizer(zoo["base"])
    with torch.no_grad():
        return torch.stack(
            [
                model(**tokenizer(text, pair, truncation=True, max_length=32, return_tensors="pt")).logits[0]
                for text in texts
            ]
        )


def close(served: Any, expected: torch.Tensor, rel: float = 1e-4) -> bool:
    served = torch.tensor(served)
    return float((served - expected).abs().max()) <= rel * max(1.0, float(expected.abs().max()))


def generation_zoo(root: Path) -> dict[str, Any]:
    """The causal zoo with tasks gen-a/gen-b trained on its GPT-2 basis and their merged models."""
    made = make_zoo(root)
    home = root / "home"
    run("--home", home, "registry", "add", made["gpt2_basis"])
    for number, name in enumerate(["gen-a", "gen-b"]):
        data = root / f"{name}.jsonl"
        data.write_text("".join(json.dumps(r) + "\n" for r in prompt_completion_rows(48, number + 10)))
        run(
            "--home",
            home,
            "train",
            made["gpt2_basis"],
            "--base",
            made["gpt2"],
            "--data",
            data,
            "--out",
            root / name,
            "--lr",
            "0.5",
            "--epochs",
            "2",
            "--seed",
            str(number),
            "--device",
            "cpu",
        )
        run(
            "--home",
            home,
            "materialize",
            root / name,
            "--format",
            "merged",
            "--base",
            made["gpt2"],
            "--out",
            root / f"{name}-merged",
        )
    return {**made, "root": root, "home": home}


@cache
def _merged(root: Path, task: str) -> Any:
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(root / f"{task}-merged").eval()


def greedy(zoo: dict[str, Any], task: str, prompt: str, tokens: int, *, special: bool = True) -> str:
    """The merged model's greedy ``generate`` of ``tokens`` new tokens after ``prompt`` (tokenized
    with the tokenizer's special tokens unless ``special`` is false, as the server does for chats)."""
    tokenizer = _tokenizer(zoo["gpt2"])
    ids = tokenizer(prompt, add_special_tokens=special, return_tensors="pt").input_ids
    out = _merged(zoo["root"], task).generate(ids, max_new_tokens=tokens, do_sample=False, pad_token_id=0)
    return tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True)
