"""``unisub-hub validate``."""

from __future__ import annotations

import click

from ..errors import ReferenceNotFoundError
from ..pipeline.validate import validate
from .messages import flag
from .options import json_option
from .output import emit_json, print_table, stdout
from .refs import open_registry, resolve_folder


@click.command("validate")
@click.argument("target", metavar="REF_OR_PATH")
@click.option(
    "--against",
    default=None,
    help="A basis folder (for a coefficient set) or a base model (folder or Hub repo id, headers only).",
)
@click.option("--deep", is_flag=True, help="Also check orthonormal factors and finite values (reads every tensor).")
@json_option
def validate_command(target, against, deep, as_json):
    """Check a basis or coefficient set; exit 0 only if every check passes.

    Example:

        unisub-hub validate sst2-task --deep --against minilm-basis
    """
    registry = open_registry()

    def lookup(content_id: str):
        found = registry.find("basis", content_id)
        return None if found is None else found.path

    try:
        folder = resolve_folder(target)
    except ReferenceNotFoundError:
        folder = target  # let the schema check report the missing folder
    report = validate(folder, against=against, deep=deep, basis_lookup=lookup)
    worded = report.to_dict(flag)
    if as_json:
        emit_json(worded)
    else:
        rows = [
            [c["name"], "[green]pass[/green]" if c["ok"] else "[red]FAIL[/red]", c["detail"]] for c in worded["checks"]
        ]
        print_table(f"Checks of {target}", ["check", "result", "detail"], rows)
        passed = sum(c.ok for c in report.checks)
        stdout.print(
            f"{passed} of {len(report.checks)} checks passed" + ("" if report.ok else f"; {target} is not valid")
        )
    if not report.ok:
        raise SystemExit(1)
