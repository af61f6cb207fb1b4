"""Opening the SQLite file safely for several processes: WAL, busy timeout, immediate writes."""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote

from sqlalchemy import URL, Engine, event
from sqlalchemy.exc import DatabaseError, OperationalError
from sqlmodel import Session, SQLModel, create_engine

from ..errors import RegistryError
from . import models
from .migrations import migrate

__all__ = ["BUSY_TIMEOUT_MS", "Database"]

BUSY_TIMEOUT_MS = 60_000


def _engine(path: Path, begin: str, *, read_only: bool = False) -> Engine:
    # URL.create quotes the path: an f-string URL breaks on "?" or "#" in a folder name.
    # A read-only home is opened through SQLite's read-only modes (a URI), so a write fails
    # cleanly. A WAL database needs its -shm file to be read; where the last writer closed
    # cleanly there is none, and none can be made, but then the main file holds everything
    # and is opened as immutable.
    if read_only:
        mode = "mode=ro" if path.with_name(path.name + "-wal").exists() else "immutable=1"
        url = URL.create("sqlite", database=f"file:{quote(str(path))}?{mode}", query={"uri": "true"})
    else:
        url = URL.create("sqlite", database=str(path))
    engine = create_engine(url, connect_args={"timeout": BUSY_TIMEOUT_MS / 1000, "check_same_thread": False})

    @event.listens_for(engine, "connect")
    def _configure(dbapi_connection, _record) -> None:  # noqa: ANN001
        dbapi_connection.isolation_level = None  # we issue BEGIN ourselves, below
        cursor = dbapi_connection.cursor()
        if not read_only:
            cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(connection) -> None:  # noqa: ANN001
        connection.exec_driver_sql(begin)

    return engine


class Database:
    """Two engines on one file: deferred transactions for reads, ``BEGIN IMMEDIATE`` for writes.

    Taking the write lock at the start of a write transaction (rather than upgrading a read
    lock midway) is what lets SQLite's busy timeout serialise concurrent writers instead of
    failing them with "database is locked".
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.read_only = _read_only(path)
        if not self.read_only:
            path.parent.mkdir(parents=True, exist_ok=True)
        self._reader = _engine(path, "BEGIN", read_only=self.read_only)
        self._writer = _engine(path, "BEGIN IMMEDIATE", read_only=self.read_only)
        with _database_errors(path), self.read() as session:  # opening writes nothing unless the schema must change
            connection = session.connection()
            version = connection.exec_driver_sql("PRAGMA user_version").scalar() or 0
            tables = connection.exec_driver_sql("SELECT count(*) FROM sqlite_master WHERE type='table'").scalar()
        if version > models.SCHEMA_VERSION:
            raise RegistryError(
                f"{path}: registry schema version {version} is newer than this unisub-hub's "
                f"({models.SCHEMA_VERSION}); upgrade unisub-hub"
            )
        if version == models.SCHEMA_VERSION and tables:
            return
        if self.read_only:
            raise RegistryError(
                f"{path}: the registry is read-only and its schema (version {version}) needs an upgrade or creation; "
                "open it once where it can be written"
            )
        with _database_errors(path), self.write() as session:
            connection = session.connection()
            version = connection.exec_driver_sql("PRAGMA user_version").scalar() or 0  # again, under the write lock
            tables = connection.exec_driver_sql("SELECT count(*) FROM sqlite_master WHERE type='table'").scalar()
            if tables and version < models.SCHEMA_VERSION:
                migrate(connection, version)
            SQLModel.metadata.create_all(connection)
            connection.exec_driver_sql(f"PRAGMA user_version={models.SCHEMA_VERSION}")

    @contextmanager
    def read(self) -> Iterator[Session]:
        with _database_errors(self.path), Session(self._reader, expire_on_commit=False) as session, session.begin():
            yield session

    @contextmanager
    def rows(self) -> Iterator[Callable[[str, tuple[Any, ...]], list[Any]]]:
        """A reader of plain rows (``query(sql, parameters)``), without an ORM session.

        For the hot paths: a server's cold load resolves one task name per request, and an ORM
        session and query cost about a millisecond of a load of a few; SQLAlchemy's Core
        connection still half of one (measured on 1,000 loads): this is sqlite3's own cursor.
        """
        with _database_errors(self.path):
            connection = self._reader.raw_connection()  # the DB-API connection, from the engine's pool
            cursor = connection.cursor()
            try:
                cursor.execute("BEGIN")  # the queries see one snapshot

                def query(sql: str, parameters: tuple[Any, ...] = ()) -> list[Any]:
                    return cursor.execute(sql, parameters).fetchall()

                yield query
            finally:
                cursor.close()
                connection.close()  # back to the pool, which rolls the read transaction back

    @contextmanager
    def write(self) -> Iterator[Session]:
        """One short write transaction: committed when the block ends, rolled back on error."""
        with _database_errors(self.path), Session(self._writer, expire_on_commit=False) as session, session.begin():
            yield session

    def close(self) -> None:
        self._reader.dispose()
        self._writer.dispose()


def _read_only(path: Path) -> bool:
    """Whether this process cannot write the registry.

    Its file, or the folder a new file (or SQLite's WAL files) would go in.
    """
    if path.exists():
        return not (os.access(path, os.W_OK) and os.access(path.parent, os.W_OK))
    existing = next((p for p in (path.parent, *path.parent.parents) if p.exists()), None)
    return existing is not None and not os.access(existing, os.W_OK)


@contextmanager
def _database_errors(path: Path) -> Iterator[None]:
    """A damaged, unreadable or full database becomes one :class:`RegistryError` naming the file and the way out."""
    try:
        yield
    except (OperationalError, sqlite3.OperationalError) as error:  # SQLAlchemy's, or sqlite3's own (``rows``)
        reason = _reason(error)
        if "locked" in reason:
            raise
        if "readonly" in reason:
            raise RegistryError(
                f"{path}: the registry is read-only here ({reason}); it can be listed and read, not changed"
            ) from None
        raise RegistryError(f"{path}: the registry database cannot be used ({reason})") from None
    except (DatabaseError, sqlite3.DatabaseError) as error:
        reason = _reason(error)
        raise RegistryError(
            f"{path}: the registry database is damaged ({reason}); move it aside, then register the stored artifacts "
            "again "
            f"with `unisub-hub registry add {path.parent / 'store'}/*` (bases first)"
        ) from None


def _reason(error: Exception) -> str:
    """What SQLite said: a SQLAlchemy error's original, or sqlite3's own message."""
    original = getattr(error, "orig", None)
    return str(original) if original is not None else (str(error).splitlines() or [""])[0]
