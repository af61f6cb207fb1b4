"""Content ids of tensor files, remembered by each file's identity so that re-checking is free.

Every command verifies an artifact before it uses it. Hashing is cheap next to the work that
follows, but not free for a large basis opened by every command; so a verified set of files
is remembered by each file's resolved path, size, modification time, inode and device
(in memory and in ``<unisub home>/verified.json``). A file rewritten in place changes its
modification time and is hashed again. Someone who can reset a file's time and keep its size
can fool the memory, as they could fool ``make``; ``validate``, ``info --verify`` and
``registry verify`` always hash.
"""

from __future__ import annotations

import contextlib
import json
import os
import uuid
from collections.abc import Sequence
from pathlib import Path

from ..constants import unisub_home
from .tensorfile import content_id

__all__ = ["cached_content_id", "remember_content_id"]

_CACHE_FILE = "verified.json"
_MAX_ENTRIES = 4096
_memory: dict[str, str] = {}


def _key(files: Sequence[Path]) -> str:
    parts = []
    for path in sorted(files, key=lambda p: p.name):
        stat = path.stat()
        parts.append(f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}|{stat.st_ino}|{stat.st_dev}")
    return "\n".join(parts)


def _load() -> dict[str, str]:
    try:
        data = json.loads((unisub_home() / _CACHE_FILE).read_text())
    except (OSError, ValueError):
        return {}
    return (
        {k: v for k, v in data.items() if isinstance(k, str) and isinstance(v, str)} if isinstance(data, dict) else {}
    )


def _store(key: str, value: str) -> None:
    """Add one entry to the cache file; a home that cannot be written only loses the memory."""
    home = unisub_home()
    data = _load()
    data[key] = value
    if len(data) > _MAX_ENTRIES:
        data = dict(list(data.items())[-_MAX_ENTRIES:])
    tmp = home / f".{_CACHE_FILE}.{uuid.uuid4().hex[:8]}"
    try:
        home.mkdir(parents=True, exist_ok=True)
        tmp.write_text(json.dumps(data))
        os.replace(tmp, home / _CACHE_FILE)
    except OSError:
        with contextlib.suppress(OSError):  # a read-only file system refuses even the clean-up
            tmp.unlink(missing_ok=True)


def cached_content_id(files: Sequence[Path]) -> str:
    """The content id of ``files``: remembered when they have not changed since hashed, else hashed now."""
    key = _key(files)
    if key in _memory:
        return _memory[key]
    known = _load().get(key)
    if known is not None:
        _memory[key] = known
        return known
    value = content_id(files)
    remember_content_id(files, value, key=key)
    return value


def remember_content_id(files: Sequence[Path], value: str, *, key: str | None = None) -> None:
    """Record ``value`` as the content id of ``files`` as they are now (after writing or hashing them)."""
    key = key or _key(files)
    _memory[key] = value
    _store(key, value)
