"""The registry's memory of verified tensor files (the ``verifiedfiles`` table).

The format layer asks a :class:`~unisub_hub.format.verified.VerifiedIds` whether unchanged
files were hashed before; this one answers from the registry database, so the memory lasts
across processes and lives with everything else the registry knows. A read-only registry
answers but does not learn.

A server asks once per task it loads; so the table is read whole at the first question and
answered from memory after that (a key not seen there is still looked up, since another
process may have added it), and old rows are pruned only once the table holds more than
:data:`_MAX_ROWS` (sorting it on every write cost a few milliseconds per cold load).
"""

from __future__ import annotations

from sqlalchemy.exc import OperationalError
from sqlmodel import func, select

from ..errors import RegistryError
from .database import Database
from .models import VerifiedFiles

__all__ = ["RegistryVerifiedIds"]

_MAX_ROWS = 16384
"""Older entries beyond this are dropped (a file's entry is stale once it changes anyway).
Two rows per artifact (its tensor files, its manifest's schema check), a few hundred bytes each."""


class RegistryVerifiedIds:
    """Content ids of hashed files, kept in the registry (see the module docstring)."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self._seen: dict[str, str] | None = None

    def get(self, key: str) -> str | None:
        if self._seen is None:
            with self.db.read() as session:  # plain rows: building ORM objects for thousands cost ~20 us each
                rows = session.connection().exec_driver_sql("SELECT key, content_id FROM verifiedfiles")
                self._seen = {key: value for key, value in rows}
        if key in self._seen:
            return self._seen[key]
        with self.db.read() as session:
            row = session.get(VerifiedFiles, key)
        if row is not None:
            self._seen[key] = row.content_id
        return row.content_id if row is not None else None

    def put(self, key: str, value: str) -> None:
        if self.db.read_only:
            return
        try:
            with self.db.write() as session:
                session.merge(VerifiedFiles(key=key, content_id=value))
                if session.exec(select(func.count()).select_from(VerifiedFiles)).one() > _MAX_ROWS:
                    session.connection().exec_driver_sql(
                        "DELETE FROM verifiedfiles WHERE key NOT IN "
                        f"(SELECT key FROM verifiedfiles ORDER BY created DESC, rowid DESC LIMIT {_MAX_ROWS})"
                    )
        except (RegistryError, OperationalError):  # a busy or full registry only loses the memory
            return
        if self._seen is not None:
            self._seen[key] = value
