"""Printing results: rich tables for people, JSON for scripts, progress bars on stderr."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import click
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

if TYPE_CHECKING:  # the engine (and torch) loads with the commands that use it
    from ..engine.spec import Advance

__all__ = ["RichProgress", "emit_json", "human_bytes", "print_table", "progress_bar", "stdout"]

_PIPED_WIDTH = 4096
"""Output that goes to a file or another program is not cut at 80 columns: numbers and layer
names stay whole (a terminal gets its own width)."""

stdout = Console(soft_wrap=True, width=None if sys.stdout.isatty() else _PIPED_WIDTH)
stderr = Console(stderr=True, soft_wrap=True, width=None if sys.stderr.isatty() else _PIPED_WIDTH)


def emit_json(data: Any) -> None:
    """Write ``data`` as JSON on stdout (nothing else goes to stdout with ``--json``)."""
    click.echo(json.dumps(data, indent=2, default=str))


def print_table(title: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    table = Table(title=title, title_justify="left")
    for column in columns:
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(*("" if cell is None else str(cell) for cell in row))
    stdout.print(table)


def human_bytes(size: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(size) < 1024 or unit == "GiB":
            return f"{size:,.0f} {unit}" if unit == "B" else f"{size:,.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TiB"


class RichProgress:
    """The engine's :class:`~unisub_hub.engine.Progress`, drawn as rich bars on stderr."""

    def __init__(self, bars: Progress) -> None:
        self._bars = bars

    def task(self, description: str, total: int) -> Advance:
        task_id = self._bars.add_task(description, total=total)

        def advance(count: int = 1) -> None:
            self._bars.advance(task_id, count)

        return advance


@contextmanager
def progress_bar(enabled: bool = True) -> Iterator[RichProgress]:
    """Progress bars for long work; silent when disabled or when stderr is not a terminal."""
    bars = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=stderr,
        transient=False,
        disable=not enabled,
    )
    with bars:
        yield RichProgress(bars)
