"""Real model files made in the tests: a tiny BERT, fine-tunes of it, and PEFT LoRA adapters."""

from __future__ import annotations

import os
from pathlib import Path

import torch

os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

NUM_LABELS = 3


def tiny_config():
    from transformers import BertConfig

    return BertConfig(
        vocab_size=64,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=48,
        max_position_embeddings=32,
        num_labels=NUM_LABELS,
    )


def save_base(folder: Path) -> Path:
    from transformers import BertForSequenceClassification

    torch.manual_seed(0)
    model = BertForSequenceClassification(tiny_config()).eval()
    model.save_pretrained(folder)
    return folder


def save_base_with_tokenizer(folder: Path, words: list[str]) -> Path:
    """The tiny BERT of :func:`save_base` with a word-level tokenizer of ``words`` (what training,
    eval and serving read text with)."""
    from transformers import BertTokenizer

    base = save_base(folder)
    vocabulary = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words]
    BertTokenizer(vocab={w: i for i, w in enumerate(vocabulary)}).save_pretrained(base)
    return base


def save_finetunes(
    base: Path, folder: Path, count: int, *, rank: int = 2, noise: float = 1e-3, shard_first: bool = True
) -> list[Path]:
    """Fine-tunes of ``base``: every matrix gets a shared rank-``rank`` update plus noise."""
    from transformers import BertForSequenceClassification

    gen = torch.Generator().manual_seed(1)
    model = BertForSequenceClassification.from_pretrained(base)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    shared = {
        k: (torch.randn(v.shape[0], rank, generator=gen), torch.randn(rank, v.shape[1], generator=gen))
        for k, v in state.items()
        if v.ndim == 2
    }
    paths = []
    for m in range(count):
        for key, value in state.items():
            if key in shared:
                left, right = shared[key]
                update = left @ torch.randn(rank, rank, generator=gen) @ right * 0.02 + noise * torch.randn(
                    value.shape, generator=gen
                )
                model.state_dict()[key].copy_(value + update)
            elif value.is_floating_point():
                model.state_dict()[key].copy_(value + 0.01 * torch.randn(value.shape, generator=gen))
        path = folder / f"ft-{m}"
        model.save_pretrained(path, max_shard_size="20KB" if (shard_first and m == 0) else "10GB")
        paths.append(path)
    return paths


def save_adapters(
    base: Path, folder: Path, count: int, *, ranks=(4,), rslora_every: int = 0, seed: int = 0
) -> list[Path]:
    """PEFT LoRA adapters on query/value with random (non-zero) factors and a trained-looking head."""
    from peft import LoraConfig, get_peft_model
    from transformers import BertForSequenceClassification

    paths = []
    for m in range(count):
        torch.manual_seed(seed * 1000 + m)
        model = BertForSequenceClassification.from_pretrained(base)
        r = ranks[m % len(ranks)]
        config = LoraConfig(
            r=r,
            lora_alpha=2 * r,
            target_modules=["query", "value"],
            task_type="SEQ_CLS",
            init_lora_weights=False,
            use_rslora=bool(rslora_every) and m % rslora_every == 0,
        )
        peft_model = get_peft_model(model, config)
        with torch.no_grad():
            for name, param in peft_model.named_parameters():
                if "lora_B" in name:
                    param.mul_(0.5)
        path = folder / f"lora-{m}"
        peft_model.save_pretrained(path)
        paths.append(path)
    return paths


def logits_of(model, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, 64, (4, 12), generator=gen)
    with torch.no_grad():
        return model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits
