"""``unisub-hub search``."""

from __future__ import annotations

import click

from .output import emit_json, human_bytes, print_table


@click.command("search")
@click.argument("query", required=False)
@click.option("--base-model", default=None, metavar="ID", help="Only repos whose card names this base model.")
@click.option("--basis", default=None, metavar="REF", help="Only tasks on this basis (Hub repo id or content id).")
@click.option("--kind", type=click.Choice(["basis", "task"]), default=None, help="Only bases, or only tasks.")
@click.option("--limit", type=click.IntRange(1), default=50, show_default=True, help="At most this many rows.")
@click.option("--token", default=None, help="Hub token (default: HF_TOKEN or the stored login).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON on stdout.")
def search_command(query, base_model, basis, kind, limit, token, as_json):
    """List unisub-hub bases and tasks on the Hub (HF_ENDPOINT), most downloaded first.

    Example:

        unisub-hub search sentiment --kind task --base-model sentence-transformers/all-MiniLM-L6-v2
    """
    from ..hub.search import search

    rows = search(query, base_model=base_model, basis=basis, kind=kind, limit=limit, token=token)
    if as_json:
        emit_json(rows)
        return
    print_table(
        f"{len(rows)} unisub-hub repos",
        ["repo", "kind", "basis", "base model", "size", "downloads"],
        [
            [
                row["repo_id"],
                row["kind"] or "",
                row["basis_repo"] or (row["basis"] or "")[:19],
                row["base_model"] if isinstance(row["base_model"], str) else ", ".join(row["base_model"] or []),
                human_bytes(row["size_bytes"]) if row["size_bytes"] is not None else "",
                row["downloads"] if row["downloads"] is not None else "",
            ]
            for row in rows
        ],
    )
