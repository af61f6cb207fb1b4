"""Shared fixtures: small random collections with planted shared structure."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from hypothesis import settings

from unisub_hub.io.memory import InMemoryCheckpoint, InMemoryLora

# CI explores the same inputs on every run, so a red build always means a change broke
# something; set UNISUB_FUZZ_EXPLORE=1 to draw new inputs (as the batteries in the closing
# notes were run).
settings.register_profile("repeatable", derandomize=True)
settings.register_profile("explore", derandomize=False)
settings.load_profile("explore" if os.environ.get("UNISUB_FUZZ_EXPLORE") else "repeatable")


def max_principal_angle(found: torch.Tensor, reference: torch.Tensor) -> float:
    """Largest principal angle between two orthonormal bases, through its sine.

    The sine is accurate for tiny angles, unlike arccos.
    """
    found, reference = found.double(), reference.double()
    residual = reference - found @ (found.T @ reference)
    return float(torch.arcsin(torch.linalg.matrix_norm(residual, ord=2).clamp(max=1.0)))


def planted_collection(
    count: int, shapes: dict[str, tuple[int, ...]], *, rank: int = 3, noise: float = 0.05, seed: int = 0
) -> list[InMemoryCheckpoint]:
    """``count`` checkpoints: a common base, a shared rank-``rank`` subspace per layer, plus noise."""
    gen = torch.Generator().manual_seed(seed)
    shared = {}
    for name, shape in shapes.items():
        p, q = shape[0], int(torch.tensor(shape[1:]).prod()) if len(shape) > 1 else 1
        shared[name] = (
            torch.randn(shape, generator=gen, dtype=torch.float64),
            torch.randn(p, rank, generator=gen, dtype=torch.float64),
            torch.randn(rank, q, generator=gen, dtype=torch.float64),
        )
    sources = []
    for m in range(count):
        tensors = {}
        for name, shape in shapes.items():
            base, left, right = shared[name]
            p = shape[0]
            mix = torch.randn(rank, rank, generator=gen, dtype=torch.float64)
            delta = (left @ mix @ right).reshape(shape)
            tensors[name] = base + delta + noise * torch.randn(shape, generator=gen, dtype=torch.float64)
        sources.append(InMemoryCheckpoint(f"model-{m}", tensors))
    return sources


def random_loras(
    count: int,
    shapes: dict[str, tuple[int, int]],
    *,
    ranks: list[int] | None = None,
    rslora: bool = False,
    seed: int = 0,
) -> list[InMemoryLora]:
    """LoRA adapters with a shared column space in ``B`` (planted structure) and random ``A``."""
    from unisub_hub.engine import lora_scale

    gen = torch.Generator().manual_seed(seed)
    shared = {n: torch.randn(p, 4, generator=gen, dtype=torch.float64) for n, (p, q) in shapes.items()}
    out = []
    for m in range(count):
        r = (ranks or [4])[m % len(ranks or [4])]
        factors = {}
        for name, (p, q) in shapes.items():
            lora_b = shared[name] @ torch.randn(4, r, generator=gen, dtype=torch.float64) + 0.1 * torch.randn(
                p, r, generator=gen, dtype=torch.float64
            )
            lora_a = torch.randn(r, q, generator=gen, dtype=torch.float64)
            factors[name] = (lora_b, lora_a, lora_scale(2.0 * r, r, use_rslora=rslora))
        out.append(InMemoryLora(f"lora-{m}", factors))
    return out


@pytest.fixture(autouse=True)
def isolated_home(tmp_path, monkeypatch):
    """Every test gets its own registry home; nothing touches the user's cache."""
    home = tmp_path / "unisub-home"
    monkeypatch.setenv("UNISUB_HOME", str(home))
    return home


@pytest.fixture
def hub(monkeypatch, tmp_path):
    """A local Hub server for the test, with the environment pointing the real client at it."""
    from unisub_hub.testing import LocalHub

    with LocalHub() as server:
        set_hf(monkeypatch, endpoint=server.url, home=tmp_path / "hf-home", offline=False)
        monkeypatch.delenv("HF_TOKEN", raising=False)
        yield server


def set_hf(monkeypatch, *, endpoint=None, home=None, cache=None, offline=None):
    """Change Hugging Face settings for this process and the processes it starts.

    ``huggingface_hub`` reads them once, at import, into ``huggingface_hub.constants`` (where
    unisub-hub reads them too): those are patched, and the environment set for children.
    """
    import huggingface_hub.constants as constants

    def both(variable, attribute, value, text):
        monkeypatch.setenv(variable, text)
        monkeypatch.setattr(constants, attribute, value)

    both("HF_HUB_DISABLE_XET", "HF_HUB_DISABLE_XET", True, "1")  # the local Hub answers uploads "regular"
    if endpoint is not None:
        from unisub_hub.hf import endpoint_settings

        monkeypatch.setenv("HF_ENDPOINT", endpoint)
        for attribute, value in endpoint_settings(endpoint).items():
            monkeypatch.setattr(constants, attribute, value)
    if home is not None:
        both("HF_HOME", "HF_HOME", str(home), str(home))
        monkeypatch.delenv("HF_HUB_CACHE", raising=False)
        monkeypatch.setattr(constants, "HF_HUB_CACHE", str(Path(home) / "hub"))
    if cache is not None:
        both("HF_HUB_CACHE", "HF_HUB_CACHE", str(cache), str(cache))
    if offline is not None:
        both("HF_HUB_OFFLINE", "HF_HUB_OFFLINE", offline, "1" if offline else "0")
