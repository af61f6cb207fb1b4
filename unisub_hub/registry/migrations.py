"""Schema migrations of the registry file, keyed by the version they upgrade from.

Each step takes a connection inside the opening write transaction and brings the schema
from version ``n`` to ``n + 1``; :class:`~unisub_hub.registry.database.Database` runs the
steps in order and then records the new ``PRAGMA user_version``. A file that predates
versioning (tables but ``user_version`` 0) is refused rather than guessed at.

- 1 -> 2: ``task.mean_rel_error`` copied out of the ``metrics`` JSON, so that listing
  thousands of tasks does not parse every task's per-layer metrics.
- 2 -> 3: two new tables, ``evaluation`` (scores recorded by ``eval``) and
  ``verifiedfiles`` (content ids of hashed tensor files, which lived in ``verified.json``
  beside the database before); ``create_all`` makes them after the steps.
- 3 -> 4: ``task.lineage`` (projected, trained, rebased, merged) for listings that filter on
  it. Rows registered before only know whether they had a source: ``projected`` where they
  did, unknown (NULL) otherwise.
"""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import Connection

from ..errors import RegistryError

__all__ = ["MIGRATIONS", "migrate"]


def _task_mean_error(connection: Connection) -> None:
    connection.exec_driver_sql("ALTER TABLE task ADD COLUMN mean_rel_error FLOAT")
    connection.exec_driver_sql("UPDATE task SET mean_rel_error = json_extract(metrics, '$.mean_rel_error')")


def _new_tables(connection: Connection) -> None:
    """Nothing to change in existing tables: the new ones are created with the schema."""


def _task_lineage(connection: Connection) -> None:
    connection.exec_driver_sql("ALTER TABLE task ADD COLUMN lineage VARCHAR")
    connection.exec_driver_sql("CREATE INDEX ix_task_lineage ON task (lineage)")
    connection.exec_driver_sql("UPDATE task SET lineage = 'projected' WHERE source_id IS NOT NULL")


MIGRATIONS: dict[int, Callable[[Connection], None]] = {1: _task_mean_error, 2: _new_tables, 3: _task_lineage}


def migrate(connection: Connection, version: int) -> None:
    from .models import SCHEMA_VERSION

    while version < SCHEMA_VERSION:
        step = MIGRATIONS.get(version)
        if step is None:
            raise RegistryError(
                f"registry schema version {version} has no migration to {version + 1}; it was not made by unisub-hub"
            )
        step(connection)
        version += 1
