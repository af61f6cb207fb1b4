"""Registry tables (SQLModel over SQLite). Rows of a content id are never changed, only added or removed."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from sqlmodel import JSON, Column, Field, SQLModel, UniqueConstraint

__all__ = [
    "SCHEMA_VERSION",
    "Alias",
    "Architecture",
    "Basis",
    "BasisLayer",
    "BasisSource",
    "Evaluation",
    "Layer",
    "LastVersion",
    "Source",
    "Tag",
    "Task",
    "VerifiedFiles",
]

SCHEMA_VERSION = 4
"""Recorded in ``PRAGMA user_version``; :mod:`unisub_hub.registry.migrations` upgrades older files."""


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _json() -> Any:
    """A JSON column: SQLAlchemy writes and reads the text (files of schema 1 and 2 hold the same
    text in ``VARCHAR`` columns, which SQLite reads alike), so no caller formats or parses it."""
    return Field(sa_column=Column(JSON, nullable=False))


class Architecture(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(index=True)
    fingerprint: str = Field(unique=True)
    base_model_id: str | None = None
    base_model_revision: str | None = None


class Layer(SQLModel, table=True):
    __table_args__ = (UniqueConstraint("architecture_id", "name"),)
    id: int | None = Field(default=None, primary_key=True)
    architecture_id: int = Field(foreign_key="architecture.id", index=True)
    name: str
    shape: str
    """``"768x3072"``."""


class Source(SQLModel, table=True):
    __table_args__ = (UniqueConstraint("locator", "revision", "sha256"),)
    id: int | None = Field(default=None, primary_key=True)
    locator: str = Field(index=True)
    """Local path or Hub repo id, as given."""
    revision: str | None = None
    sha256: str | None = Field(default=None, index=True)
    kind: str | None = None


class Basis(SQLModel, table=True):
    __table_args__ = (UniqueConstraint("name", "version"),)
    content_id: str = Field(primary_key=True)
    name: str = Field(index=True)
    version: int
    architecture_id: int = Field(foreign_key="architecture.id", index=True)
    source_kind: str
    modes: str
    ranks: dict[str, Any] = _json()
    """``{layer: {mode: rank}}``."""
    centered: bool
    dtype: str
    size_bytes: int
    quality: dict[str, Any] = _json()
    """Per-layer summary from the manifest."""
    path: str
    """Folder in the store, relative to the registry home."""
    hub_repo: str | None = None
    hub_revision: str | None = None
    created: str = Field(default_factory=_now)


class BasisLayer(SQLModel, table=True):
    basis_id: str = Field(foreign_key="basis.content_id", primary_key=True, ondelete="CASCADE")
    layer_id: int = Field(foreign_key="layer.id", primary_key=True)
    ranks: dict[str, Any] = _json()
    explained_variance: dict[str, Any] = _json()


class BasisSource(SQLModel, table=True):
    basis_id: str = Field(foreign_key="basis.content_id", primary_key=True, ondelete="CASCADE")
    source_id: int = Field(foreign_key="source.id", primary_key=True, index=True)
    role: str


class Task(SQLModel, table=True):
    __table_args__ = (UniqueConstraint("name", "version"),)
    content_id: str = Field(primary_key=True)
    name: str = Field(index=True)
    version: int
    basis_id: str = Field(foreign_key="basis.content_id", index=True)
    source_id: int | None = Field(default=None, foreign_key="source.id")
    metrics: dict[str, Any] = _json()
    """From the manifest (mean and per-layer errors)."""
    mean_rel_error: float | None = None
    lineage: str | None = Field(default=None, index=True)
    """How the set came about (projected, trained, rebased, merged), for listings and filters."""
    """Copied out of ``metrics`` so that listings need not parse it."""
    size_bytes: int
    path: str
    hub_repo: str | None = None
    hub_revision: str | None = None
    created: str = Field(default_factory=_now)


class Alias(SQLModel, table=True):
    kind: str = Field(primary_key=True)
    """``basis`` or ``task``."""
    name: str = Field(primary_key=True)
    alias: str = Field(primary_key=True)
    version: int


class Tag(SQLModel, table=True):
    content_id: str = Field(primary_key=True)
    key: str = Field(primary_key=True)
    value: str


class LastVersion(SQLModel, table=True):
    """The highest version ever given to a name, removed ones included: a version number names
    one artifact for good, so ``name:3`` never comes back as something else after ``rm``.
    (A new table: ``create_all`` adds it to older files, whose rows still count.)"""

    kind: str = Field(primary_key=True)
    name: str = Field(primary_key=True)
    version: int


class Evaluation(SQLModel, table=True):
    """One score of a registered artifact on one data file (``unisub-hub eval``).

    ``content_id`` is a task's, or a basis's (the base plus the basis mean alone). Rows are
    only added: scoring again adds a row, so a listing shows every measurement with its date.
    """

    id: int | None = Field(default=None, primary_key=True)
    content_id: str = Field(index=True)
    kind: str
    """``basis`` or ``task``."""
    data_sha256: str
    data_name: str
    """The data file's name as given (a label for cards and pages; the sha256 identifies it)."""
    objective: str
    """``classification``, ``text``, ``prompt-completion`` or ``messages``."""
    metric: str
    value: float
    count: int
    """Examples (classification) or tokens that carried loss (causal LM)."""
    command: str | None = None
    created: str = Field(default_factory=_now)


class VerifiedFiles(SQLModel, table=True):
    """Content ids of tensor files that were hashed, keyed by the files' identity on disk
    (:func:`unisub_hub.format.verified.file_key`): opening the same unchanged artifact again
    costs no hashing."""

    key: str = Field(primary_key=True)
    content_id: str
    created: str = Field(default_factory=_now)
