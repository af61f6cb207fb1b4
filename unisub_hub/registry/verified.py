"""The registry's memory of verified tensor files (the ``verifiedfiles`` table).

The format layer asks a :class:`~unisub_hub.format.verified.VerifiedIds` whether unchanged
files were hashed before; this one answers from the registry database, so the memory lasts
across processes and lives with everything else the registry knows. A read-only registry
answers but does not learn.
"""

from __future__ import annotations

from sqlalchemy.exc import OperationalError

from ..errors import RegistryError
from .database import Database
from .models import VerifiedFiles

__all__ = ["RegistryVerifiedIds"]

_MAX_ROWS = 4096
"""Older entries beyond this are dropped (a file's entry is stale once it changes anyway)."""


class RegistryVerifiedIds:
    """Content ids of hashed files, kept in the registry (see the module docstring)."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def get(self, key: str) -> str | None:
        with self.db.read() as session:
            row = session.get(VerifiedFiles, key)
            return row.content_id if row is not None else None

    def put(self, key: str, value: str) -> None:
        if self.db.read_only:
            return
        try:
            with self.db.write() as session:
                session.merge(VerifiedFiles(key=key, content_id=value))
                session.connection().exec_driver_sql(
                    "DELETE FROM verifiedfiles WHERE key NOT IN "
                    f"(SELECT key FROM verifiedfiles ORDER BY created DESC, rowid DESC LIMIT {_MAX_ROWS})"
                )
        except (RegistryError, OperationalError):  # a busy or full registry only loses the memory
            pass
