"""``unisub-hub web``."""

from __future__ import annotations

from pathlib import Path

import click

from .options import host_option, port_option
from .output import emit_json, progress_bar, stdout
from .refs import open_registry


@click.command("web")
@host_option
@port_option
@click.option(
    "--export",
    "out",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="Write the pages as a static site into this new folder instead of serving them.",
)
@click.option("--json", "as_json", is_flag=True, help="With --export: print the result as JSON on stdout.")
def web_command(host, port, out, as_json):
    """Browse the registry: bases, tasks, spectra, lineage, evaluations (read-only).

    Pages at /, /basis/REF and /task/REF, the same data as JSON under /api/front,
    /api/basis/REF and /api/task/REF. --export DIR writes the pages as a static site
    (to publish a registry, for example as a Hub Space).

    Example:

        unisub-hub web --port 8000
        unisub-hub web --export site/
    """
    from ..extras import require

    for module in ("fastapi", "uvicorn", "jinja2"):
        require(module, "unisub-hub web")
    registry = open_registry()
    if out is not None:
        from ..errors import ArtifactExistsError
        from ..format.atomic import check_output
        from ..web import export_site

        try:
            check_output(out)
        except ArtifactExistsError:
            raise click.BadParameter(
                f"{out} exists and is not empty: give a new folder", param_hint="--export"
            ) from None
        total = 1 + len(registry.list("bases")) + len(registry.list("tasks"))
        with progress_bar(not as_json) as bars:
            pages = export_site(registry, out, advance=bars.task("pages", total))
        if as_json:
            emit_json({"out": str(out), "pages": pages})
        else:
            stdout.print(f"wrote {pages} pages to {out} (open {out / 'index.html'})")
        return
    from ..serve import run_app
    from ..web import create_app

    def ready(address: str) -> None:
        stdout.print(f"browsing {registry.home} on {address}")
        stdout.file.flush()

    run_app(create_app(registry.home), host, port, on_ready=ready)
