"""Environment variables and defaults, read in one place."""

from __future__ import annotations

import os
from pathlib import Path

FORMAT_MAJOR = 1
FORMAT_VERSION = "1.3.0"
BASIS_FORMAT = "unisub-hub/basis"
COEFFICIENTS_FORMAT = "unisub-hub/coefficients"

BASIS_MANIFEST = "unisub_basis.json"
COEFFICIENTS_MANIFEST = "unisub_coefficients.json"
QUALITY_REPORT = "quality.json"

DEFAULT_SHARD_SIZE = 5 * 1024**3
"""Bytes per tensor file above which artifacts and materialized models are sharded."""

DEFAULT_MAX_MEMORY = 2 * 1024**3
"""Bytes of accumulator memory one pass of a build may hold (``--max-memory``)."""


def env_flag(name: str) -> bool:
    """Whether environment variable ``name`` is set to a true value (1, true, yes, on)."""
    value = os.environ.get(name)
    return value is not None and value.strip().lower() in {"1", "true", "yes", "on"}


def unisub_home() -> Path:
    """Folder of the registry and the artifact store (``UNISUB_HOME``, else the XDG cache)."""
    if home := os.environ.get("UNISUB_HOME"):
        return Path(home).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache).expanduser() / "unisub-hub"


def debug_enabled() -> bool:
    """Whether the CLI shows tracebacks (``UNISUB_DEBUG=1``)."""
    return env_flag("UNISUB_DEBUG")
