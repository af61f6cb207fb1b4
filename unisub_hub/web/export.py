"""``unisub-hub web --export DIR``: the same pages as a static site (and their JSON), written atomically."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from ..format.atomic import atomic_folder
from ..registry import Registry
from .pages import basis_page, front_page, task_page
from .render import STATIC, render, static_name

__all__ = ["export_site"]


def export_site(registry: Registry, out: str | Path, *, advance: Callable[[], None] | None = None) -> int:
    """Write ``index.html``, one page per basis and task, and ``api/*.json`` beside them into ``out``.

    Returns the number of pages written. ``out`` must not exist or be empty; it appears whole.
    """
    label = f" · {registry.home.name}"
    front = front_page(registry)
    with atomic_folder(Path(out)) as folder:
        (folder / "api").mkdir()
        written = 0

        def write(name: str, template: str, data: dict) -> None:
            nonlocal written
            (folder / f"{name}.html").write_text(render(template, data, link=STATIC, home_label=label, static=True))
            (folder / "api" / f"{name}.json").write_text(json.dumps(data, indent=1))
            written += 1
            if advance is not None:
                advance()

        write("index", "front.html", front)
        for row in front["bases"]:
            write(f"basis-{static_name(row['ref'])}", "basis.html", basis_page(registry, row["ref"]))
        for row in front["tasks"]:
            write(f"task-{static_name(row['ref'])}", "task.html", task_page(registry, row["ref"]))
    return written
