"""Options shared by several commands, as reusable decorators."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

__all__ = ["device_option", "json_option", "parse_bytes", "register_option", "shard_size_option"]

F = Callable[..., Any]

json_option: Callable[[F], F] = click.option(
    "--json", "as_json", is_flag=True, help="Print the result as JSON on stdout."
)

register_option: Callable[[F], F] = click.option(
    "--register/--no-register", default=True, show_default=True, help="Record the result in the registry (see --home)."
)

device_option: Callable[[F], F] = click.option(
    "--device",
    type=click.Choice(["auto", "cpu", "cuda"]),
    default="auto",
    show_default=True,
    help="Where the linear algebra runs (auto: CUDA when present).",
)

_UNITS = {
    "": 1,
    "b": 1,
    "k": 1000,
    "kb": 1000,
    "m": 1000**2,
    "mb": 1000**2,
    "g": 1000**3,
    "gb": 1000**3,
    "kib": 1024,
    "mib": 1024**2,
    "gib": 1024**3,
}


def parse_bytes(ctx: click.Context | None, param: click.Parameter | None, value: str | int | None) -> int | None:
    """Read ``1000000``, ``500MB``, ``2GiB`` as a number of bytes."""
    if value is None or isinstance(value, int):
        return value
    text = value.strip().lower().replace("_", "")
    number = text.rstrip("abcdefghijklmnopqrstuvwxyz")
    unit = text[len(number) :]
    try:
        size = int(float(number) * _UNITS[unit])
    except (ValueError, KeyError, OverflowError):  # "1e400" is inf: no number of bytes
        raise click.BadParameter(f"{value!r} is not a size in bytes (e.g. 500000000, 500MB, 2GiB)") from None
    if size < 1:
        raise click.BadParameter(f"{value!r} must be at least 1 byte")
    return size


def shard_size_option(default: str) -> Callable[[F], F]:
    return click.option(
        "--shard-size",
        callback=parse_bytes,
        default=default,
        show_default=True,
        help="Bytes per tensor file above which output is sharded HF-style (units: KB, MB, GB, KiB, MiB, GiB).",
    )
