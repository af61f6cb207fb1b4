"""One contender per call, run in a fresh subprocess so that its peak RSS is its own.

    python bench/contenders.py CONTENDER SPEC_JSON

prints one JSON line: seconds (work only, imports excluded), peak_rss_bytes (from the OS),
and the contender's answer (left factors of a few modules) saved to ``answer`` as safetensors.
"""

from __future__ import annotations

import importlib
import json
import resource
import sys
import time
from pathlib import Path

import torch
from safetensors.torch import save_file


def peak_rss() -> int:
    """This process's own peak resident set (``VmHWM``; ``ru_maxrss`` would include the parent's before exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def unisub(spec: dict) -> dict[str, torch.Tensor]:
    from unisub_hub.engine import BuildOptions, RankRule, build_basis
    from unisub_hub.io.collection import open_sources
    from unisub_hub.pipeline.selection import select_layers

    sources = open_sources(spec["sources"])
    layers = select_layers([s.tensors for s in sources]).layers
    options = BuildOptions(
        modes=(2, 3),
        rank=RankRule(k=spec["k"]),
        center=spec.get("center", False),
        null_baseline=False,
        max_memory=spec.get("max_memory", 2 * 1024**3),
        solver=spec.get("solver", "auto"),
        accumulate_dtype=getattr(torch, spec.get("precision", "float64")),
        power_iterations=spec.get("power_iterations", 1),
    )
    result = build_basis(layers, sources, options=options)
    return {name: layer.left.float() for name, layer in result.layers.items() if name in spec["check"]}


def in_memory_svd(spec: dict) -> dict[str, torch.Tensor]:
    """What the public research scripts do: load everything, form every update, stack, dense SVD."""
    from unisub_hub.io.collection import open_sources

    sources = open_sources(spec["sources"])
    updates: dict[str, list[torch.Tensor]] = {}
    for source in sources:
        for name, info in source.tensors.items():
            if len(info.shape) < 2:
                continue
            left, right = source.factors(name) if hasattr(source, "factors") else (None, None)
            dense = (
                source.tensor(name).float() if left is None else (left.float() @ right.float()) * source.scales[name]
            )
            updates.setdefault(name, []).append(dense.reshape(dense.shape[0], -1))
    answer = {}
    for name, stack in updates.items():
        unfolded = torch.cat(stack, dim=1)  # p x N q, the mode-2 unfolding
        if spec.get("center"):
            mean = torch.stack(stack).mean(0)
            unfolded = torch.cat([x - mean for x in stack], dim=1)
        u, _, _ = torch.linalg.svd(unfolded, full_matrices=False)
        if name in spec["check"]:
            answer[name] = u[:, : spec["k"]]
    return answer


def read_floor(spec: dict) -> dict[str, torch.Tensor]:
    """Reading every tensor of every source once: the floor any build has to pay."""
    from safetensors import safe_open

    total = 0
    for folder in spec["sources"]:
        for file in sorted(Path(folder).glob("*.safetensors")):
            with safe_open(file, "pt") as handle:
                for key in handle.keys():
                    total += handle.get_tensor(key).clone().numel()  # clone: touch every byte, not just map it
    return {}


def arithmetic_floor(spec: dict) -> dict[str, torch.Tensor]:
    """The products a default float32 build of these files must compute, on in-memory random
    matrices of the same shapes: no reading, casting, checking or centring. Per source and
    layer, ``X X^T L`` and ``X^T X R`` in each sketch pass (``k + oversample`` columns), then
    the quality pass's ``U^T X V``; what is left of a build's time is overhead."""
    from safetensors import safe_open

    from unisub_hub.engine import BuildOptions

    defaults = BuildOptions()
    with safe_open(Path(spec["sources"][0]) / "model.safetensors", "pt") as handle:
        shapes = [handle.get_slice(key).get_shape() for key in handle.keys()]
    gen = torch.Generator().manual_seed(0)
    layers = [torch.randn(*shape, generator=gen) for shape in shapes if len(shape) == 2]
    k = spec["k"]
    width = k + defaults.oversample
    tests = [
        (torch.randn(x.shape[0], width, generator=gen), torch.randn(x.shape[1], width, generator=gen)) for x in layers
    ]
    for _ in range(1 + defaults.power_iterations):
        for _ in spec["sources"]:
            for x, (left, right) in zip(layers, tests, strict=True):
                x @ (x.T @ left)
                x.T @ (x @ right)
    for _ in spec["sources"]:
        for x, (left, right) in zip(layers, tests, strict=True):
            left[:, :k].T @ x @ right[:, :k]
    return {}


def lorashare(spec: dict) -> dict[str, torch.Tensor]:
    """lorashare's SHARE: PCA (eigh of d x d) of the stacked raw lora_A and lora_B factors, per layer."""
    from lorashare import SHAREModel

    SHAREModel.from_adapters(spec["sources"], num_components=spec["k"], device="cpu", layer_by_layer=True)
    return {}


def vlora_dev(spec: dict) -> dict[str, torch.Tensor]:
    """vlora-dev: SVD of the flattened factors of every adapter, per layer."""
    from vlora import SharedSubspace, load_adapter

    SharedSubspace.from_adapters([load_adapter(path) for path in spec["sources"]], num_components=spec["k"])
    return {}


def unisub_float32(spec: dict) -> dict[str, torch.Tensor]:
    return unisub({**spec, "precision": "float32"})


def unisub_float32_q2(spec: dict) -> dict[str, torch.Tensor]:
    """float32 with a second power iteration (``--power-iterations 2``): one more pass, a sharper subspace."""
    return unisub({**spec, "precision": "float32", "power_iterations": 2})


IMPORTS = {
    "unisub-hub": ["unisub_hub.engine", "unisub_hub.io.collection", "unisub_hub.pipeline.selection"],
    "unisub-hub-float32": ["unisub_hub.engine", "unisub_hub.io.collection", "unisub_hub.pipeline.selection"],
    "unisub-hub-float32-q2": ["unisub_hub.engine", "unisub_hub.io.collection", "unisub_hub.pipeline.selection"],
    "in-memory-svd": ["unisub_hub.io.collection"],
    "read-floor": ["safetensors"],
    "arithmetic-floor": ["safetensors", "unisub_hub.engine"],
    "lorashare": ["lorashare"],
    "vlora-dev": ["vlora"],
}
"""Modules each contender imports before the clock starts, so no one pays for imports."""

CONTENDERS = {
    "unisub-hub": unisub,
    "unisub-hub-float32": unisub_float32,
    "unisub-hub-float32-q2": unisub_float32_q2,
    "in-memory-svd": in_memory_svd,
    "read-floor": read_floor,
    "arithmetic-floor": arithmetic_floor,
    "lorashare": lorashare,
    "vlora-dev": vlora_dev,
}


def main() -> None:
    name, spec_path = sys.argv[1], Path(sys.argv[2])
    spec = json.loads(spec_path.read_text())
    torch.set_num_threads(spec.get("threads", torch.get_num_threads()))
    for module in IMPORTS[name]:
        importlib.import_module(module)
    start = time.perf_counter()
    answer = CONTENDERS[name](spec)
    seconds = time.perf_counter() - start
    if answer:
        save_file({k: v.contiguous() for k, v in answer.items()}, spec["answer"])
    print(json.dumps({"contender": name, "seconds": seconds, "peak_rss_bytes": peak_rss()}))


if __name__ == "__main__":
    main()
