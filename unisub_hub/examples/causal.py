"""Small causal language models made here, since none can be downloaded offline.

The loading code downstream is the same as for a real checkpoint: a folder with
``config.json``, ``model.safetensors`` and a tokenizer (a byte-level BPE trained with
``tokenizers`` and saved as ``PreTrainedTokenizerFast``, with an EOS token and a chat
template) that ``AutoModelForCausalLM`` and ``AutoTokenizer`` open. Two families: GPT-2
(fused ``c_attn`` in ``Conv1D`` modules, fan-in-fan-out) and LLaMA (``q_proj``/``v_proj``
``nn.Linear``), so the paths that differ between them are both exercised.

A random GPT-2 with ``initializer_range`` 0.02 predicts nearly uniformly, so an attention
update barely changes its outputs; the default here is 0.2, which gives peaked predictions.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import torch

__all__ = [
    "CHAT_TEMPLATE",
    "EOS",
    "lora_adapters",
    "make_gpt2",
    "make_llama",
    "train_tokenizer",
    "word_tokenizer",
]

EOS = "<|endoftext|>"
CHAT_TEMPLATE = (
    "{% for message in messages %}<|{{ message['role'] }}|>{{ message['content'] }}" + EOS + "{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)
"""Each turn as ``<|role|>content<|endoftext|>``; a generation prompt opens an assistant turn."""


def _quiet() -> None:
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    from transformers.utils import logging

    logging.set_verbosity_error()
    logging.disable_progress_bar()


def train_tokenizer(texts: Iterable[str], folder: Path, *, vocab_size: int = 512, chat: bool = True) -> Path:
    """A byte-level BPE tokenizer trained on ``texts``, saved as a transformers tokenizer in ``folder``.

    Its EOS (also its padding token) is ``<|endoftext|>``; with ``chat`` it carries
    :data:`CHAT_TEMPLATE`.
    """
    _quiet()
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=[EOS], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tokenizer.train_from_iterator(list(texts), trainer)
    folder.mkdir(parents=True, exist_ok=True)
    raw = folder / "tokenizer-raw.json"
    tokenizer.save(str(raw))
    wrapped = PreTrainedTokenizerFast(tokenizer_file=str(raw), eos_token=EOS, pad_token=EOS)
    if chat:
        wrapped.chat_template = CHAT_TEMPLATE
    wrapped.save_pretrained(folder)
    raw.unlink()
    return folder


def word_tokenizer(words: Sequence[str], folder: Path, *, chat: bool = True) -> Path:
    """A tokenizer whose tokens are whole words (split at whitespace), saved in ``folder``.

    Every token decodes to text that encodes back to it, so completions sampled from a model
    are data that tokenizes as they were sampled (a byte-level BPE can sample half a UTF-8
    character). Unknown words read as ``[UNK]``.
    """
    _quiet()
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocabulary = {word: number for number, word in enumerate(dict.fromkeys([EOS, "[UNK]", *words]))}
    tokenizer = Tokenizer(models.WordLevel(vocab=vocabulary, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer.decoder = decoders.WordPiece(prefix="##")
    wrapped = PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token=EOS, pad_token=EOS, unk_token="[UNK]")
    if chat:
        wrapped.chat_template = CHAT_TEMPLATE
    wrapped.save_pretrained(folder)
    return folder


def _save(model: Any, tokenizer: Path, folder: Path) -> Path:
    from transformers import AutoTokenizer

    model.save_pretrained(folder)
    AutoTokenizer.from_pretrained(tokenizer).save_pretrained(folder)
    return folder


def make_gpt2(
    folder: Path,
    tokenizer: Path,
    *,
    layers: int = 2,
    width: int = 64,
    heads: int = 4,
    positions: int = 128,
    initializer_range: float = 0.2,
    seed: int = 0,
) -> Path:
    """A random GPT-2 of the tokenizer's vocabulary, with the tokenizer, saved in ``folder``."""
    _quiet()
    from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel

    vocabulary = len(AutoTokenizer.from_pretrained(tokenizer))
    torch.manual_seed(seed)
    config = GPT2Config(
        vocab_size=vocabulary,
        n_positions=positions,
        n_embd=width,
        n_layer=layers,
        n_head=heads,
        initializer_range=initializer_range,
        bos_token_id=vocabulary - 1,
        eos_token_id=0,
    )
    return _save(GPT2LMHeadModel(config).eval(), tokenizer, folder)


def make_llama(
    folder: Path,
    tokenizer: Path,
    *,
    layers: int = 2,
    width: int = 64,
    heads: int = 4,
    positions: int = 128,
    initializer_range: float = 0.2,
    seed: int = 0,
) -> Path:
    """A random LLaMA-style model (``q_proj``/``k_proj``/``v_proj``) with the tokenizer, saved in ``folder``."""
    _quiet()
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    vocabulary = len(AutoTokenizer.from_pretrained(tokenizer))
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=vocabulary,
        hidden_size=width,
        intermediate_size=2 * width,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=heads,
        max_position_embeddings=positions,
        initializer_range=initializer_range,
        eos_token_id=0,
        pad_token_id=0,
        tie_word_embeddings=True,
    )
    return _save(LlamaForCausalLM(config).eval(), tokenizer, folder)


def lora_adapters(
    base: Path,
    folder: Path,
    count: int,
    *,
    target_modules: Sequence[str],
    rank: int = 4,
    shared: int = 2,
    scale: float = 0.5,
    seed: int = 0,
) -> list[Path]:
    """PEFT LoRA adapters of a causal LM with planted structure: every adapter's ``B`` lies mostly
    in a ``shared``-dimensional column space per module, its ``A`` is its own (random, own seed)."""
    _quiet()
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    generator = torch.Generator().manual_seed(seed)
    directions: dict[str, torch.Tensor] = {}
    paths = []
    for number in range(count):
        torch.manual_seed(seed * 1000 + number)
        model = AutoModelForCausalLM.from_pretrained(base)
        config = LoraConfig(
            r=rank, lora_alpha=rank, target_modules=list(target_modules), task_type="CAUSAL_LM", init_lora_weights=False
        )
        adapted = get_peft_model(model, config)
        with torch.no_grad():
            for name, parameter in adapted.named_parameters():
                if "lora_B" not in name:
                    continue
                out_features = parameter.shape[0]
                key = name.split(".lora_B")[0]
                if key not in directions:
                    directions[key] = torch.randn(out_features, shared, generator=generator)
                mix = torch.randn(shared, rank, generator=generator)
                noise = 0.05 * torch.randn(parameter.shape, generator=generator)
                parameter.copy_(scale * (directions[key] @ mix + noise) / out_features**0.5)
        path = folder / f"lora-{number}"
        adapted.save_pretrained(str(path))
        paths.append(path)
    return paths
