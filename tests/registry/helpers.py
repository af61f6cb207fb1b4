"""Small real artifacts for registry tests: one basis, many coefficient sets."""

from __future__ import annotations

from pathlib import Path

import torch

from unisub_hub.engine import BuildOptions, LayerSpec, RankRule, build_basis
from unisub_hub.format import save_basis, save_coefficients
from unisub_hub.io.memory import InMemoryCheckpoint

SHAPES = {"w0": (6, 5), "w1": (5, 6)}


def make_basis(folder: Path, *, name: str = "toy", k: int = 2, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    sources = [
        InMemoryCheckpoint(
            f"src-{m}", {n: torch.randn(s, generator=gen, dtype=torch.float64) for n, s in SHAPES.items()}
        )
        for m in range(4)
    ]
    result = build_basis(
        [LayerSpec(n, s) for n, s in SHAPES.items()],
        sources,
        options=BuildOptions(rank=RankRule(k=k), null_baseline=False),
    )
    return save_basis(
        folder,
        result.layers,
        name=name,
        architecture_name="toy-arch",
        source_kind="checkpoint",
        sources=[{"id": f"src-{m}", "sha256": f"{m:064x}", "role": "train", "kind": "checkpoint"} for m in range(4)],
        quality=result.report.summary(),
    )


def make_task(folder: Path, basis, *, name: str = "task", seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    coefs = {n: torch.randn(basis.layer(n).coefficient_shape(), generator=gen) for n in SHAPES}
    return save_coefficients(
        folder,
        coefs,
        {"bias": torch.randn(3, generator=gen)},
        name=name,
        basis_manifest=basis.manifest,
        source={"id": f"finetune-{seed}", "kind": "checkpoint"},
        metrics={"mean_rel_error": 0.1},
    )
