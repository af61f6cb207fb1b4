"""Finding unisub-hub repos on the Hub: ``HfApi.list_models`` narrowed by the tags our cards set.

A card names the library (``unisub-hub``), what the repo holds (``unisub-basis`` or
``unisub-task``) and its place in the model tree (``base_model``), and the Hub turns those
into tags that a listing filters on. A task's basis is in its card data (``basis_repo``,
``basis_content_id``), so ``basis`` narrows the listing here, after it arrives.
"""

from __future__ import annotations

from typing import Any

from ..format.card import KIND_TAGS
from ..hf import api, hub_errors

__all__ = ["search"]

_FIELDS = ["cardData", "downloads", "tags", "usedStorage", "lastModified"]


def search(
    query: str | None = None,
    *,
    base_model: str | None = None,
    basis: str | None = None,
    kind: str | None = None,
    limit: int | None = None,
    token: str | None = None,
) -> list[dict[str, Any]]:
    """unisub-hub repos on the Hub, most downloaded first.

    Args:
        query: a part of the repo id.
        base_model: only repos whose card names this base model (any relation: adapter, merge).
        basis: only tasks on this basis (its Hub repo id, or a prefix of its content id).
        kind: ``basis`` or ``task``.
        limit: at most this many rows.

    Raises:
        HubError: the Hub cannot be reached or refuses (one line).
    """
    filters = ["unisub-hub"]
    if kind is not None:
        filters.append(KIND_TAGS[kind])
    if base_model:
        filters.append(f"base_model:{base_model}")
    with hub_errors("search"):
        listing = list(
            api(token).list_models(
                search=query or None, filter=filters, expand=_FIELDS, sort="downloads", limit=None if basis else limit
            )
        )
    rows = [_row(info) for info in listing]
    if basis:
        rows = [
            row
            for row in rows
            if row["kind"] == "task" and (row["basis_repo"] == basis or _id_matches(row["basis"], basis))
        ]
    rows.sort(key=lambda row: (-(row["downloads"] or 0), row["repo_id"]))
    return rows[:limit] if limit is not None else rows


def _id_matches(content_id: str | None, given: str) -> bool:
    return (
        bool(content_id)
        and len(given.removeprefix("sha256:")) >= 6
        and str(content_id).removeprefix("sha256:").startswith(given.removeprefix("sha256:"))
    )


def _row(info: Any) -> dict[str, Any]:
    card = info.card_data.to_dict() if info.card_data is not None else {}
    tags = set(info.tags or [])
    kind = next((name for name, tag in KIND_TAGS.items() if tag in tags), None)
    return {
        "repo_id": info.id,
        "kind": kind,
        "basis_repo": card.get("basis_repo"),
        "basis": card.get("basis_content_id"),
        "content_id": card.get("unisub_content_id"),
        "base_model": card.get("base_model"),
        "relation": card.get("base_model_relation"),
        "size_bytes": getattr(info, "used_storage", None),
        "downloads": info.downloads,
    }
