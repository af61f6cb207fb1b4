"""Schema migrations of the registry file, keyed by the version they upgrade from.

Each step takes a connection inside the opening write transaction and brings the schema
from version ``n`` to ``n + 1``; :class:`~unisub_hub.registry.database.Database` runs the
steps in order and then records the new ``PRAGMA user_version``. Version 1 is the first
schema, so there is nothing to upgrade yet; a file that predates versioning (tables but
``user_version`` 0) is refused rather than guessed at.
"""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import Connection

from ..errors import RegistryError

__all__ = ["MIGRATIONS", "migrate"]

MIGRATIONS: dict[int, Callable[[Connection], None]] = {}


def migrate(connection: Connection, version: int) -> None:
    from .models import SCHEMA_VERSION

    while version < SCHEMA_VERSION:
        step = MIGRATIONS.get(version)
        if step is None:
            raise RegistryError(f"registry schema version {version} has no migration to {version + 1}; it was not made by unisub-hub")
        step(connection)
        version += 1
