"""What the command-line tests share: a runner, small checkpoint collections, the refusal check."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from click.testing import CliRunner
from safetensors.torch import save_file

from unisub_hub.cli import cli


def run(*args: str, ok: bool = True):
    result = CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)
    if ok:
        assert result.exit_code == 0, result.output
    return result


def write_checkpoints(root: Path, count: int, shapes: dict[str, tuple[int, ...]], seed: int = 0) -> list[Path]:
    gen = torch.Generator().manual_seed(seed)
    base = {n: torch.randn(s, generator=gen) for n, s in shapes.items()}
    paths = []
    for m in range(count):
        folder = root / f"model-{m}"
        folder.mkdir(parents=True)
        save_file(
            {n: (t + 0.1 * torch.randn(t.shape, generator=gen)).contiguous() for n, t in base.items()},
            folder / "model.safetensors",
        )
        paths.append(folder)
    return paths


SHAPES = {"layers.0.w": (16, 12), "layers.1.w": (12, 16), "norm.weight": (16,)}


def registry_rows() -> list:
    return json.loads(run("registry", "list", "bases", "--json").stdout) + json.loads(
        run("registry", "list", "tasks", "--json").stdout
    )


def refused(args, message: str, out: Path | None = None) -> str:
    before = registry_rows()
    result = run(*args, ok=False)
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    line = result.output.strip().splitlines()[-1]
    assert line.startswith("Error: ") and message in line, line
    if out is not None:
        assert not out.exists()
        assert not [p for p in out.parent.iterdir() if p.name.startswith(f".{out.name}.tmp")]
    assert registry_rows() == before
    return line
