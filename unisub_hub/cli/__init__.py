"""The ``unisub-hub`` command line: a thin layer over the library.

Expected errors (:class:`~unisub_hub.errors.UnisubError`, and OS errors such as a full
disk) print one ``Error: ...`` line and exit 1; ``--debug`` or ``UNISUB_DEBUG=1`` shows the
traceback instead.
"""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path

import click

from .. import __version__
from ..constants import debug_enabled
from ..errors import UnisubError
from .messages import message

__all__ = ["cli", "main"]


class UnisubGroup(click.Group):
    """A click group that turns expected errors into one line and exit code 1."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if (
            ctx.parent is None
        ):  # the whole command line, once: names, paths and references become text in manifests and the registry
            for arg in args:
                try:
                    arg.encode("utf-8")
                except UnicodeEncodeError:
                    shown = str(os.fsencode(arg))[2:-1]  # the bytes as the shell passed them: out\xff
                    raise click.UsageError(
                        f"argument {shown!r} is not valid UTF-8; names and paths are recorded as text, so choose one "
                        "that is",
                        ctx,
                    ) from None
        return super().parse_args(ctx, args)

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except UnisubError as error:
            if ctx.meta.get("debug") or debug_enabled():
                raise
            raise click.ClickException(message(error)) from None
        except OSError as error:
            if ctx.meta.get("debug") or debug_enabled():
                raise
            where = f"{error.filename}: " if error.filename else ""
            raise click.ClickException(f"{where}{error.strerror or error}") from None


COMMANDS: dict[str, tuple[str, str, str]] = {
    "build": ("build", "build_command", "Build a basis from a collection of checkpoints or LoRA adapters."),
    "project": (
        "project",
        "project_command",
        "Store one fine-tune as coefficients on a basis (plus passthrough tensors).",
    ),
    "train": (
        "train",
        "train_command",
        "Learn a new task as coefficients on a frozen basis.",
    ),
    "eval": (
        "evaluate",
        "eval_command",
        "Score tasks, bases (their mean alone), PEFT adapters and the base on one data file.",
    ),
    "merge": (
        "merge",
        "merge_command",
        "Merge tasks of one basis in coefficient space (linear, TIES, DARE), without data.",
    ),
    "rebase": (
        "rebase",
        "rebase_command",
        "Move a task onto another basis of the same layers, without the original model.",
    ),
    "serve": (
        "serve",
        "serve_command",
        "Serve tasks of one basis over HTTP: OpenAI-compatible generation, classification.",
    ),
    "web": (
        "web",
        "web_command",
        "Browse the registry: bases, tasks, spectra, lineage, evaluations (read-only).",
    ),
    "materialize": (
        "materialize",
        "materialize_command",
        "Rebuild a loadable model (or PEFT adapter) from basis + coefficients.",
    ),
    "push": ("hub", "push_command", "Publish a basis or coefficient set (folder or registry reference) as a Hub repo."),
    "pull": (
        "hub",
        "pull_command",
        "Download a basis or coefficient set (and its basis) at a pinned commit, verify, register.",
    ),
    "search": (
        "search",
        "search_command",
        "List unisub-hub bases and tasks on the Hub (HF_ENDPOINT), most downloaded first.",
    ),
    "info": ("info", "info_command", "Show an artifact's manifest, layers, ranks, sizes and quality numbers."),
    "analyze": (
        "analyze",
        "analyze_command",
        "Spectra of a collection without writing a basis: explained variance, null, layer quality.",
    ),
    "validate": (
        "validate",
        "validate_command",
        "Check a basis or coefficient set; exit 0 only if every check passes.",
    ),
    "demo": ("demo", "demo_command", "Run the whole journey on built-in example models, offline, and write a report."),
    "registry": ("registry", "registry_group", "Find, version, alias, tag and check registered bases and tasks."),
}
"""Every command: its module, its object and its short help. A command's module (and what it
imports: torch, transformers, plotting) loads only when that command runs, so ``--help`` and
the registry commands start in a fraction of a second. A test keeps the short help equal to
the command's own."""


def _load(name: str) -> click.Command:
    module, attribute, _ = COMMANDS[name]
    return getattr(importlib.import_module(f"{__name__}.{module}"), attribute)


def _lazy_commands(group: type[click.Group]) -> type[click.Group]:
    """Add lazily loaded commands to a click group class."""

    class Lazy(group):  # type: ignore[valid-type, misc]
        def list_commands(self, ctx: click.Context) -> list[str]:
            return [*COMMANDS, *super().list_commands(ctx)]

        def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
            return _load(cmd_name) if cmd_name in COMMANDS else super().get_command(ctx, cmd_name)

        def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
            rows = [(name, short) for name, (_, _, short) in COMMANDS.items()]
            with formatter.section("Commands"):
                formatter.write_dl(rows)

    return Lazy


@click.group(
    cls=_lazy_commands(UnisubGroup), context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100}
)
@click.version_option(__version__, prog_name="unisub-hub")
@click.option("--debug", is_flag=True, help="Show full tracebacks for errors.")
@click.option(
    "--home",
    type=click.Path(file_okay=False, path_type=Path),
    envvar="UNISUB_HOME",
    default=None,
    help="Registry and store folder (default: $UNISUB_HOME or ~/.cache/unisub-hub).",
)
@click.pass_context
def cli(ctx: click.Context, debug: bool, home: Path | None) -> None:
    """Universal weight subspaces: shared bases, kilobyte fine-tunes.

    Example:

        unisub-hub build finetunes/* --out my-basis --k 16 --holdout 2
    """
    ctx.meta["debug"] = debug
    ctx.meta["home"] = home


def main() -> None:
    """Console-script entry point."""
    sys.exit(cli.main(prog_name="unisub-hub", standalone_mode=True))
