"""Synthetic PEFT LoRA collections with planted shared structure, written as real adapter folders."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file

__all__ = ["make_lora_collection"]


def make_lora_collection(
    root: Path,
    *,
    adapters: int,
    layers: int,
    d: int,
    d_kv: int | None = None,
    r: int = 16,
    shared: int = 8,
    noise: float = 0.3,
    dtype: torch.dtype = torch.float32,
    seed: int = 0,
) -> list[Path]:
    """``adapters`` folders of q/k/v LoRAs (``layers`` transformer layers, model width ``d``).

    Each module's ``B`` is a shared ``d_out x shared`` basis times a per-adapter mix plus noise,
    each ``A`` likewise on the input side, so the collection has a planted ``shared``-dim
    subspace per side. q maps ``d -> d``; k and v map ``d -> d_kv`` (grouped-query attention).
    """
    d_kv = d_kv or d
    gen = torch.Generator().manual_seed(seed)
    modules = [
        (f"model.layers.{i}.self_attn.{name}_proj", d if name == "q" else d_kv) for i in range(layers) for name in "qkv"
    ]
    left = {m: torch.linalg.qr(torch.randn(out, shared, generator=gen))[0] for m, out in modules}
    right = {m: torch.linalg.qr(torch.randn(d, shared, generator=gen))[0] for m, _ in modules}
    folders = []
    for number in range(adapters):
        folder = root / f"adapter-{number:04d}"
        if (folder / "adapter_model.safetensors").is_file():
            folders.append(folder)
            continue
        folder.mkdir(parents=True, exist_ok=True)
        tensors = {}
        # Each adapter draws from its own seed: with one stream, a collection grown from cached
        # adapters would replay the stream of the first ones (skipped adapters draw nothing).
        own = torch.Generator().manual_seed(seed * 1_000_003 + number + 1)
        for module, out in modules:
            lora_b = left[module] @ torch.randn(shared, r, generator=own) + noise / (out**0.5) * torch.randn(
                out, r, generator=own
            )
            lora_a = torch.randn(r, shared, generator=own) @ right[module].T + noise / (d**0.5) * torch.randn(
                r, d, generator=own
            )
            tensors[f"base_model.model.{module}.lora_A.weight"] = lora_a.to(dtype).contiguous()
            tensors[f"base_model.model.{module}.lora_B.weight"] = lora_b.to(dtype).contiguous()
        save_file(tensors, folder / "adapter_model.safetensors", metadata={"format": "pt"})
        config = {
            "peft_type": "LORA",
            "r": r,
            "lora_alpha": 2 * r,
            "target_modules": ["q_proj", "k_proj", "v_proj"],
            "base_model_name_or_path": f"synthetic-d{d}",
            "task_type": "CAUSAL_LM",
        }
        (folder / "adapter_config.json").write_text(json.dumps(config))
        folders.append(folder)
    return folders
