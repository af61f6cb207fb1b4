"""Starting a server: the base and the basis loaded once, the worker started, uvicorn on a socket.

``uvicorn`` runs the ASGI app; on SIGTERM or Ctrl-C it stops accepting connections, lets the
requests in flight finish, and then the worker thread is stopped. The socket is bound here
(port 0 picks a free one), so the address printed is the one that answers.
"""

from __future__ import annotations

import gc
import os
import signal
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..errors import ServeError, option
from ..extras import require
from ..registry import Registry
from .app import ServerState, create_app
from .metrics import Metrics
from .pool import TaskPool
from .worker import Worker

__all__ = ["ServeSettings", "open_server", "run_app", "run_server"]

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass(frozen=True)
class ServeSettings:
    """Limits and placement of a server (the flags of ``unisub-hub serve``)."""

    host: str = "127.0.0.1"
    port: int = 8000
    max_batch: int = 32
    max_wait_ms: float = 5.0
    max_resident_mb: float = 256.0
    max_body_mb: float = 8.0
    max_queue: int = 256
    max_inputs: int = 256
    api_key_env: str | None = None
    device: str = "auto"
    dtype: str = "float32"


def open_server(
    basis_ref: str | Path,
    base: str | Path,
    tasks: Sequence[tuple[str, str]],
    settings: ServeSettings,
    registry: Registry,
) -> ServerState:
    """Load everything a server needs and start its worker.

    Raises:
        MissingDependencyError: the ``serve`` extra is not installed.
        ServeError, TrainingDataError, FormatError: a base, basis or task that cannot be served.
    """
    for module in ("fastapi", "uvicorn", "prometheus_client"):
        require(module, "unisub-hub serve")
    from ..adapt import attach
    from ..engine import resolve_device
    from ..hub.resolve import open_basis
    from ..pipeline.objectives import load_base
    from ..pipeline.validate import check_base_model

    api_key = None
    if settings.api_key_env is not None:
        api_key = os.environ.get(settings.api_key_env) or None
        if api_key is None:
            raise ServeError(f"{option('api_key_env')} {settings.api_key_env}: that environment variable is not set")
    if settings.dtype not in DTYPES:
        raise ServeError(f"{option('dtype')} {settings.dtype!r}: use {', '.join(DTYPES)}")
    basis = open_basis(basis_ref, registry=registry)
    check_base_model(basis.manifest, str(base))
    opened = load_base(base, max_length=1 << 30)  # clamped to the model's own positions
    model = opened.load_model().to(DTYPES[settings.dtype])
    adapter = attach(model, basis, heads=opened.family.heads(model))
    device = resolve_device(settings.device)
    model.to(device).eval()
    labels = {int(k): str(v) for k, v in (getattr(opened.config, "id2label", None) or {}).items()}
    pool = TaskPool(
        adapter, basis, registry, max_resident_bytes=int(settings.max_resident_mb * 1e6), base_labels=labels
    )
    for name, reference in tasks:
        pool.load(reference, name)
    # The model, tokenizer and libraries are hundreds of thousands of objects that live as long as
    # the server: out of the collector's sight, a full collection no longer walks them in the
    # middle of a request or a cold load (they were the cold loads' p99).
    gc.collect()
    gc.freeze()
    metrics = Metrics()
    worker = Worker(
        model,
        opened.tokenizer,
        pool,
        device=device,
        max_batch=settings.max_batch,
        max_wait_ms=settings.max_wait_ms,
        max_queue=settings.max_queue,
        max_length=opened.max_length,
        pad_id=opened.pad_id,
        observe=metrics.batch,
    ).start()
    return ServerState(
        worker,
        pool,
        opened.tokenizer,
        opened.family.name,
        metrics,
        api_key,
        settings.max_inputs,
        int(settings.max_body_mb * 1e6),
    )


def run_server(state: ServerState, settings: ServeSettings, *, on_ready: Callable[[str], Any] | None = None) -> None:
    """Serve ``state`` until SIGTERM or Ctrl-C; ``on_ready`` gets the address once it answers."""
    try:
        run_app(create_app(state), settings.host, settings.port, on_ready=on_ready)
    finally:
        state.worker.stop()


def run_app(app: Any, host: str, port: int, *, on_ready: Callable[[str], Any] | None = None) -> None:
    """Run an ASGI ``app`` on ``host:port`` (0: a free port) under uvicorn until SIGTERM or Ctrl-C.

    The socket is bound here, so a busy port is one clear error and ``on_ready`` is told the
    real address once the server answers. A stop lets requests in flight finish and exits 0.
    """
    import uvicorn

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    # Accepted connections inherit this: without it, a response written in two parts waits for
    # the client's delayed ACK (about 40 ms a request on a kept-alive connection).
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        sock.bind((host, port))
    except OSError as error:
        raise ServeError(f"cannot listen on {host}:{port} ({error.strerror})") from None
    bound_host, bound_port = sock.getsockname()[:2]
    address = f"http://{'[' + bound_host + ']' if ':' in bound_host else bound_host}:{bound_port}"
    config = uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=60, access_log=False)
    server = uvicorn.Server(config)

    original_startup = server.startup

    async def startup(sockets: list[socket.socket] | None = None) -> None:
        await original_startup(sockets=sockets)
        if on_ready is not None:
            on_ready(address)

    server.startup = startup  # type: ignore[method-assign]
    # uvicorn shuts down gracefully on SIGTERM/SIGINT, then raises the signal again for the
    # handler it found: that handler ends the process with status 0, not a signal death.
    previous = {sig: signal.signal(sig, _stopped) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        server.run(sockets=[sock])
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        sock.close()


def _stopped(signum: int, frame: Any) -> None:
    raise SystemExit(0)
