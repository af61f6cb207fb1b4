"""The ``unisub-hub`` command line: a thin layer over the library.

Expected errors (:class:`~unisub_hub.errors.UnisubError`, and OS errors such as a full
disk) print one ``Error: ...`` line and exit 1; ``--debug`` or ``UNISUB_DEBUG=1`` shows the
traceback instead.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from .. import __version__
from ..constants import debug_enabled
from ..errors import UnisubError

__all__ = ["cli", "main"]


class UnisubGroup(click.Group):
    """A click group that turns expected errors into one line and exit code 1."""

    def invoke(self, ctx: click.Context):  # type: ignore[override]
        try:
            return super().invoke(ctx)
        except UnisubError as error:
            if ctx.meta.get("debug") or debug_enabled():
                raise
            message = str(error)
            if error.hint:
                message += f" (hint: {error.hint})"
            raise click.ClickException(message) from None
        except OSError as error:
            if ctx.meta.get("debug") or debug_enabled():
                raise
            where = f"{error.filename}: " if error.filename else ""
            raise click.ClickException(f"{where}{error.strerror or error}") from None


@click.group(cls=UnisubGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="unisub-hub")
@click.option("--debug", is_flag=True, help="Show full tracebacks for errors.")
@click.option("--home", type=click.Path(file_okay=False, path_type=Path), envvar="UNISUB_HOME", default=None,
              help="Registry and store folder (default: $UNISUB_HOME or ~/.cache/unisub-hub).")
@click.pass_context
def cli(ctx: click.Context, debug: bool, home: Path | None) -> None:
    """Universal weight subspaces: shared bases, kilobyte fine-tunes.

    Example:

        unisub-hub build finetunes/* --out my-basis --k 16 --holdout 2
    """
    ctx.meta["debug"] = debug
    ctx.meta["home"] = home


def _register_commands() -> None:
    from .analyze import analyze_command
    from .build import build_command
    from .demo import demo_command
    from .hub import pull_command, push_command
    from .info import info_command
    from .materialize import materialize_command
    from .project import project_command
    from .registry import registry_group
    from .train import train_command
    from .validate import validate_command

    for command in (build_command, project_command, train_command, materialize_command, push_command, pull_command, info_command, analyze_command, validate_command, demo_command, registry_group):
        cli.add_command(command)


_register_commands()


def main() -> None:
    """Console-script entry point."""
    sys.exit(cli.main(prog_name="unisub-hub", standalone_mode=True))
