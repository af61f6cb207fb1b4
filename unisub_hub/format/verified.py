"""Content ids of tensor files, remembered by each file's identity so that re-checking is free.

Every command verifies an artifact before it uses it. Hashing is cheap next to the work that
follows, but not free for a large basis opened by every command; so a verified set of files
is remembered by each file's resolved path, size, modification time, inode and device. A
file rewritten in place changes its modification time and is hashed again. Someone who can
reset a file's time and keep its size can fool the memory, as they could fool ``make``;
``validate``, ``info --verify`` and ``registry verify`` always hash.

The format layer only defines what such a memory is (:class:`VerifiedIds`) and keeps one
for the life of the process; a memory that outlives the process is the registry's
(:class:`unisub_hub.registry.Registry.verified`), which callers pass in.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

from .tensorfile import content_id

__all__ = ["VerifiedIds", "cached_content_id", "file_key", "remember", "remember_content_id", "remembered"]


class VerifiedIds(Protocol):
    """Where content ids of hashed files are remembered, keyed by :func:`file_key`."""

    def get(self, key: str) -> str | None: ...

    def put(self, key: str, value: str) -> None:
        """Remember ``value``; a memory that cannot be written (a read-only registry) forgets it."""


_memory: dict[str, str] = {}
"""This process's memory: an artifact opened twice in one command is hashed once."""


def file_key(files: Sequence[Path]) -> str:
    """The identity of ``files`` as they are now on disk (path, size, mtime, inode, device)."""
    parts = []
    for path in sorted(files, key=lambda p: p.name):
        stat = path.stat()
        parts.append(f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}|{stat.st_ino}|{stat.st_dev}")
    return "\n".join(parts)


def cached_content_id(files: Sequence[Path], known: VerifiedIds | None = None) -> str:
    """The content id of ``files``: remembered (here, or in ``known``) when they have not changed
    since hashed, else hashed now and remembered."""
    key = file_key(files)
    value = remembered(key, known)
    if value is None:
        value = content_id(files)
        remember(key, value, known)
    return value


def remember_content_id(files: Sequence[Path], value: str, known: VerifiedIds | None = None) -> None:
    """Record ``value`` as the content id of ``files`` as they are now (after writing or hashing them)."""
    remember(file_key(files), value, known)


def remembered(key: str, known: VerifiedIds | None = None) -> str | None:
    """What was remembered under ``key`` (this process's memory first, then ``known``)."""
    if key in _memory:
        return _memory[key]
    value = known.get(key) if known is not None else None
    if value is not None:
        _memory[key] = value
    return value


def remember(key: str, value: str, known: VerifiedIds | None = None) -> None:
    """Remember ``value`` under ``key`` here and in ``known``."""
    _memory[key] = value
    if known is not None:
        known.put(key, value)
