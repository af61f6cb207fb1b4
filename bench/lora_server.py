"""The serving benchmark's peer: the same server, serving tasks as peft LoRA adapters.

Everything but the tasks is unisub-hub's own serving stack (FastAPI on uvicorn, the same
routes, the same batching worker with ``--max-batch``/``--max-wait-ms``, the same socket
set-up), so the comparison isolates what differs: each task is a LoRA adapter loaded into one
``PeftModel`` (``load_adapter``), and a batch whose rows belong to different tasks runs in one
forward pass with peft's ``adapter_names=`` (its documented mixed-adapter batch inference).

    python bench/lora_server.py --base BASE [--port 0] [--max-batch 32] [--max-wait-ms 5]

Tasks are loaded with ``POST /v1/tasks/load {"task": ADAPTER_FOLDER, "name": NAME}``.
"""

from __future__ import annotations

import argparse
import functools
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from unisub_hub.errors import ServeError
from unisub_hub.pipeline.objectives import load_base
from unisub_hub.serve.app import ServerState, create_app
from unisub_hub.serve.metrics import Metrics
from unisub_hub.serve.server import run_app
from unisub_hub.serve.worker import Worker


@dataclass
class LoadedAdapter:
    name: str
    reference: str
    bytes: int
    load_seconds: float
    labels: dict[int, str]

    def to_dict(self, basis_id: str) -> dict[str, Any]:
        return {"name": self.name, "reference": self.reference, "bytes": self.bytes, "resident": True}


class _NoBasis:
    content_id = "none (LoRA adapters)"


class LoraPool:
    """The adapters loaded into one ``PeftModel`` (what :class:`~unisub_hub.serve.pool.TaskPool` is for tasks)."""

    def __init__(self, model: torch.nn.Module, labels: dict[int, str]) -> None:
        self.base_model = model
        self.peft: Any = None
        self.labels = labels
        self.resident: OrderedDict[str, LoadedAdapter] = OrderedDict()
        self.known: dict[str, str] = {}
        self.basis = _NoBasis()

    @property
    def resident_bytes(self) -> int:
        return sum(adapter.bytes for adapter in self.resident.values())

    def load(self, reference: str, name: str | None = None) -> LoadedAdapter:
        from peft import PeftModel

        name = name or Path(reference).name
        started = time.perf_counter()
        try:
            if self.peft is None:
                self.peft = PeftModel.from_pretrained(self.base_model, reference, adapter_name=name).eval()
            else:
                self.peft.load_adapter(reference, adapter_name=name)
        except (OSError, ValueError) as error:
            raise ServeError(f"adapter {reference!r} does not load: {error}", status=404) from None
        size = sum(p.numel() * p.element_size() for n, p in self.peft.named_parameters() if f".{name}." in n)
        loaded = LoadedAdapter(name, reference, size, time.perf_counter() - started, self.labels)
        self.resident[name], self.known[name] = loaded, reference
        return loaded

    def ensure(self, names: Any) -> list[LoadedAdapter]:
        out = []
        for name in dict.fromkeys(names):
            if name not in self.resident:
                raise ServeError(f"no adapter {name!r} loaded", status=404)
            out.append(self.resident[name])
        return out

    def forget(self, name: str) -> None:
        raise ServeError("unloading is not part of the benchmark", status=404)


class LoraWorker(Worker):
    """unisub-hub's batching worker, its forward passes run by peft with ``adapter_names=``."""

    pool: LoraPool  # type: ignore[assignment]

    @contextmanager
    def rows_compute(self, names: list[str]) -> Iterator[Callable[..., Any]]:
        yield functools.partial(self.pool.peft, adapter_names=names)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", required=True)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--max-batch", type=int, default=32)
    parser.add_argument("--max-wait-ms", type=float, default=5.0)
    args = parser.parse_args()
    torch.set_grad_enabled(False)
    opened = load_base(args.base, max_length=1 << 30)
    model = opened.load_model()
    labels = {int(k): str(v) for k, v in (getattr(opened.config, "id2label", None) or {}).items()}
    pool = LoraPool(model, labels)
    metrics = Metrics()
    worker = LoraWorker(
        model,
        opened.tokenizer,
        pool,  # type: ignore[arg-type]
        device=torch.device("cpu"),
        max_batch=args.max_batch,
        max_wait_ms=args.max_wait_ms,
        max_queue=4096,
        max_length=opened.max_length,
        pad_id=opened.pad_id,
        observe=metrics.batch,
    ).start()
    state = ServerState(worker, pool, opened.tokenizer, opened.family.name, metrics, None, 256, 8 * 1024 * 1024)  # type: ignore[arg-type]
    try:
        run_app(create_app(state), "127.0.0.1", args.port, on_ready=lambda url: print(f"Serving on {url}", flush=True))
    finally:
        worker.stop()


if __name__ == "__main__":
    main()
