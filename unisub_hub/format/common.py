"""Manifest pieces shared by bases and coefficient sets."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import torch

from ..constants import FORMAT_VERSION

__all__ = ["DTYPES", "architecture_fingerprint", "dtype_name", "manifest_header", "producer"]

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16, "float64": torch.float64}

ROLE_SEPARATOR = "::"
"""Stored tensor names are ``<layer name>::<role>``; layer names may not contain it."""


def stored_name(layer: str, role: str) -> str:
    return f"{layer}{ROLE_SEPARATOR}{role}"


def safe_name(text: str) -> str:
    """A valid artifact name made from any text (folder names, repo ids)."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-._")[:128]
    return cleaned or "unnamed"


def dtype_name(dtype: torch.dtype) -> str:
    for name, value in DTYPES.items():
        if value == dtype:
            return name
    return str(dtype).removeprefix("torch.")


def producer() -> dict[str, str]:
    """This program's name and installed version, for provenance."""
    try:
        installed = version("unisub-hub")
    except PackageNotFoundError:  # running from a source tree that is not installed
        from .. import __version__ as installed
    return {"name": "unisub-hub", "version": installed}


def architecture_fingerprint(layers: Iterable[tuple[str, tuple[int, ...]]]) -> str:
    """``sha256:<hex>`` of the sorted ``name shape`` lines of a layer table."""
    lines = sorted(f"{name} {'x'.join(map(str, shape))}" for name, shape in layers)
    return "sha256:" + hashlib.sha256("\n".join(lines).encode()).hexdigest()


def manifest_header(kind: str, name: str) -> dict[str, Any]:
    """The fields every manifest starts with."""
    return {
        "format": kind,
        "format_version": FORMAT_VERSION,
        "name": name,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "producer": producer(),
    }
