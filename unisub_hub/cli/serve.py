"""``unisub-hub serve``."""

from __future__ import annotations

import click

from .options import device_option, host_option, port_option
from .output import stderr, stdout
from .refs import open_registry


def _task(ctx: click.Context, param: click.Parameter, values: tuple[str, ...]) -> list[tuple[str, str]]:
    pairs = []
    for value in values:
        name, sep, reference = value.partition("=")
        if not sep or not name or not reference:
            raise click.BadParameter(f"{value!r}: give NAME=REF (a folder, registry reference or Hub id)")
        pairs.append((name, reference))
    return pairs


@click.command("serve")
@click.argument("basis_ref", metavar="BASIS")
@click.option("--base", required=True, help="The base model folder or Hub id (with its tokenizer).")
@click.option("--task", "tasks", multiple=True, callback=_task, help="NAME=REF: a task loaded at start (repeatable).")
@host_option
@port_option
@click.option("--max-batch", type=click.IntRange(1, 4096), default=32, show_default=True, help="Rows per forward pass.")
@click.option(
    "--max-wait-ms",
    type=click.FloatRange(0, 10_000),
    default=5.0,
    show_default=True,
    help="How long a request waits for others to batch with.",
)
@click.option(
    "--max-resident-mb",
    type=click.FloatRange(0, min_open=True),
    default=256.0,
    show_default=True,
    help="Bytes of tasks kept loaded; the least recently used is unloaded first.",
)
@click.option(
    "--max-body-mb",
    type=click.FloatRange(0, min_open=True),
    default=8.0,
    show_default=True,
    help="Larger request bodies are refused (413).",
)
@click.option(
    "--max-queue",
    type=click.IntRange(1),
    default=256,
    show_default=True,
    help="Requests waiting beyond this are refused (503, Retry-After).",
)
@click.option(
    "--api-key-env",
    default=None,
    metavar="VAR",
    help="Require 'Authorization: Bearer <key>' with the key in this environment variable.",
)
@device_option
@click.option("--dtype", type=click.Choice(["float32", "bfloat16", "float16"]), default="float32", show_default=True)
def serve_command(
    basis_ref,
    base,
    tasks,
    host,
    port,
    max_batch,
    max_wait_ms,
    max_resident_mb,
    max_body_mb,
    max_queue,
    api_key_env,
    device,
    dtype,
):
    """Serve tasks of one basis over HTTP: OpenAI-compatible generation, classification.

    The base model and the basis load once; tasks come from --task, POST /v1/tasks/load,
    or on first use by registry reference or Hub id, and requests of different tasks share
    forward passes. The OpenAPI page is at /docs. Stop with Ctrl-C or SIGTERM (requests in
    flight finish).

    Example:

        unisub-hub serve minilm-basis --base minilm-base --task sst2=sst2-task --port 8000
    """
    from ..serve import ServeSettings, open_server, run_server

    settings = ServeSettings(
        host=host,
        port=port,
        max_batch=max_batch,
        max_wait_ms=max_wait_ms,
        max_resident_mb=max_resident_mb,
        max_body_mb=max_body_mb,
        max_queue=max_queue,
        api_key_env=api_key_env,
        device=device,
        dtype=dtype,
    )
    state = open_server(basis_ref, base, tasks, settings, open_registry())
    if host not in ("127.0.0.1", "localhost", "::1"):
        stderr.print(
            f"Warning: listening on {host}, beyond this machine" + ("" if api_key_env else " and without a key")
        )

    def ready(address: str) -> None:
        stdout.print(
            f"serving {len(state.pool.resident)} task(s) of basis {state.pool.basis.content_id[:19]}... "
            f"on {address} (OpenAPI: {address}/docs)"
        )
        stdout.file.flush()

    run_server(state, settings, on_ready=ready)
