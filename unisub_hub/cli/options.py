"""Options shared by several commands, as reusable decorators."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

__all__ = ["OutputPath", "device_option", "json_option", "parse_bytes", "register_option", "shard_size_option"]

F = Callable[..., Any]

json_option: Callable[[F], F] = click.option("--json", "as_json", is_flag=True, help="Print the result as JSON on stdout.")

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

_UNITS = {"": 1, "b": 1, "k": 1000, "kb": 1000, "m": 1000**2, "mb": 1000**2, "g": 1000**3, "gb": 1000**3,
          "kib": 1024, "mib": 1024**2, "gib": 1024**3}


def parse_bytes(ctx: click.Context | None, param: click.Parameter | None, value: str | int | None) -> int | None:
    """Read ``1000000``, ``500MB``, ``2GiB`` as a number of bytes."""
    if value is None or isinstance(value, int):
        return value
    text = value.strip().lower().replace("_", "")
    number = text.rstrip("abcdefghijklmnopqrstuvwxyz")
    unit = text[len(number):]
    try:
        size = int(float(number) * _UNITS[unit])
    except (ValueError, KeyError, OverflowError):  # "1e400" is inf: no number of bytes
        raise click.BadParameter(f"{value!r} is not a size in bytes (e.g. 500000000, 500MB, 2GiB)") from None
    if size < 1:
        raise click.BadParameter(f"{value!r} must be at least 1 byte")
    return size


def shard_size_option(default: str) -> Callable[[F], F]:
    return click.option(
        "--shard-size", callback=parse_bytes, default=default, show_default=True,
        help="Bytes per tensor file above which output is sharded HF-style (units: KB, MB, GB, KiB, MiB, GiB).",
    )


class OutputPath(click.Path):
    """A folder to write: refused before any work when its name cannot be written into a manifest.

    A name that is not valid UTF-8 (bytes the shell passed through) would be accepted by the
    file system, but manifests, the registry and the terminal hold text; finding that out after
    an hour of computation is too late.
    """

    def __init__(self) -> None:
        super().__init__(path_type=Path)

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        path = super().convert(value, param, ctx)
        try:
            str(path).encode("utf-8")
        except UnicodeEncodeError:
            shown = str(os.fsencode(path))[2:-1]  # the bytes as the shell passed them: bad\xff
            self.fail(f"{shown!r} is not a valid UTF-8 name; manifests and the registry hold text, so choose a name that is", param, ctx)
        return path
