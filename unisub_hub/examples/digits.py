"""The full-checkpoint example zoo: small MLPs trained from scratch on scikit-learn's digits.

Twenty binary tasks (one digit against another), in two variants: every network starts
from one shared initialisation, or each from its own. Critics of the universal-subspace
paper argue that shared initialisation is what makes the subspace appear; building a basis
from each variant lets a user see the difference.
"""

from __future__ import annotations

import json
import random
from collections.abc import Mapping
from functools import cache
from pathlib import Path

import torch
from safetensors.torch import save_file

__all__ = ["TASK_PAIRS", "accuracy", "digits_data", "ensure_digits_zoo", "make_network"]

_DONE = "unisub_example.json"


def _pairs(count: int = 20) -> list[tuple[int, int]]:
    every = [(a, b) for a in range(10) for b in range(a + 1, 10)]
    return sorted(random.Random(7).sample(every, count))


TASK_PAIRS = _pairs()


def make_network() -> torch.nn.Sequential:
    """A 64-64-64-2 MLP; ``state_dict`` keys are ``0.weight``, ``2.weight``, ``4.weight`` and biases."""
    return torch.nn.Sequential(
        torch.nn.Linear(64, 64), torch.nn.ReLU(), torch.nn.Linear(64, 64), torch.nn.ReLU(), torch.nn.Linear(64, 2)
    )


@cache
def _digits() -> tuple[torch.Tensor, torch.Tensor]:
    from sklearn.datasets import load_digits

    data = load_digits()
    return torch.tensor(data.data, dtype=torch.float32) / 16.0, torch.tensor(data.target)


def digits_data(pair: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Train and test splits (2:1, fixed) of the digits ``pair[0]`` (label 0) and ``pair[1]`` (label 1)."""
    images, targets = _digits()
    keep = torch.nonzero((targets == pair[0]) | (targets == pair[1])).flatten()
    x = images[keep]
    y = (targets[keep] == pair[1]).long()
    order = torch.randperm(len(keep), generator=torch.Generator().manual_seed(0))
    cut = 2 * len(keep) // 3
    return x[order[:cut]], y[order[:cut]], x[order[cut:]], y[order[cut:]]


def accuracy(state: Mapping[str, torch.Tensor], pair: tuple[int, int]) -> float:
    network = make_network()
    network.load_state_dict({k: v.float() for k, v in state.items()})
    _, _, x, y = digits_data(pair)
    with torch.no_grad():
        return float((network(x).argmax(-1) == y).float().mean())


def _train(pair: tuple[int, int], init_seed: int, steps: int = 300) -> dict[str, torch.Tensor]:
    torch.manual_seed(init_seed)
    network = make_network()
    x, y, _, _ = digits_data(pair)
    optimizer = torch.optim.Adam(network.parameters(), lr=3e-3)
    for _ in range(steps):
        loss = torch.nn.functional.cross_entropy(network(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return {k: v.detach().contiguous() for k, v in network.state_dict().items()}


def ensure_digits_zoo(root: Path, *, shared_init: bool) -> list[Path]:
    """Twenty trained checkpoints under ``root`` (``model.safetensors`` each), made at first use."""
    folders = []
    for number, pair in enumerate(TASK_PAIRS):
        folder = root / f"digits-{pair[0]}-vs-{pair[1]}"
        if not (folder / _DONE).is_file():
            state = _train(pair, init_seed=0 if shared_init else 100 + number)
            folder.mkdir(parents=True, exist_ok=True)
            save_file(state, folder / "model.safetensors", metadata={"format": "pt"})
            info = {"pair": list(pair), "shared_init": shared_init, "accuracy": accuracy(state, pair)}
            (folder / _DONE).write_text(json.dumps(info) + "\n")
        folders.append(folder)
    return folders


def pair_of(folder: Path) -> tuple[int, int]:
    info = json.loads((folder / _DONE).read_text())
    first, second = info["pair"]
    return int(first), int(second)
