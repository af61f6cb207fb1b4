"""Tiny causal LMs for the tests: word tokenizers, GPT-2 and LLaMA-style models, LoRA adapters, bases."""

from __future__ import annotations

import random
from pathlib import Path

WORDS = "the cat dog sat ran on in a park mat red blue green one two three and to of is big small".split()


def sentences(count: int, seed: int = 0, length: int = 6) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(length)) for _ in range(count)]


def make_zoo(root: Path) -> dict[str, Path]:
    """A word tokenizer (with a chat template), a GPT-2 and a LLaMA of it, 6 LoRA adapters of each,
    and a k=4 basis of each collection."""
    from unisub_hub.examples.causal import lora_adapters, make_gpt2, make_llama, word_tokenizer
    from unisub_hub.pipeline.build import BuildSettings, build

    tokenizer = word_tokenizer(WORDS, root / "tokenizer")
    zoo: dict[str, Path] = {"tokenizer": tokenizer}
    for family, make, targets in (("gpt2", make_gpt2, ["c_attn"]), ("llama", make_llama, ["q_proj", "v_proj"])):
        zoo[family] = make(root / family, tokenizer)
        adapters = lora_adapters(zoo[family], root / f"{family}-loras", 6, target_modules=targets)
        settings = BuildSettings(k=4, device="cpu", name=f"{family}-basis")
        zoo[f"{family}_basis"] = build([str(a) for a in adapters], root / f"{family}-basis", settings).basis.path
        zoo[f"{family}_adapter"] = adapters[0]
    return zoo


def prompt_completion_rows(count: int, seed: int) -> list[dict[str, str]]:
    rng = random.Random(seed)
    rows = []
    for _ in range(count):
        words = [rng.choice(WORDS) for _ in range(4)]
        rows.append({"prompt": " ".join(words), "completion": " ".join(reversed(words[:2]))})
    return rows
