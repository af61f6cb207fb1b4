"""Manifest pieces shared by bases and coefficient sets."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from ..constants import COEFFICIENTS_FORMAT, FORMAT_VERSION

__all__ = ["MEANING_KEY", "architecture_fingerprint", "manifest_header", "meaning_table", "producer"]

ROLE_SEPARATOR = "::"
"""Stored tensor names are ``<layer name>::<role>``; layer names may not contain it."""


def stored_name(layer: str, role: str) -> str:
    return f"{layer}{ROLE_SEPARATOR}{role}"


def safe_name(text: str) -> str:
    """A valid artifact name made from any text (folder names, repo ids)."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-._")[:128]
    return cleaned or "unnamed"


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


MEANING_KEY = "unisub_meaning"
"""The safetensors ``__metadata__`` key under which every tensor file of an artifact repeats
what its tensors mean (:func:`meaning_table`)."""


def meaning_table(manifest: dict[str, Any]) -> str:
    """What the tensors mean, as canonical JSON: per layer its name, shape, modes and which stored
    tensor plays which role; the kind of source, the architecture fingerprint, and for a
    coefficient set its basis and passthrough names.

    The content id hashes the tensor files' bytes and every file's header carries this
    table, so the meaning is bound to the id: a manifest edited to swap roles, layers or
    shapes, or to point at another basis, no longer matches its files. Descriptions (names,
    quality numbers, provenance) stay editable without a new id.
    """
    common = {"source_kind": manifest["source_kind"], "fingerprint": manifest["architecture"]["fingerprint"]}
    if manifest["format"] == COEFFICIENTS_FORMAT:
        table = {
            **common,
            "kind": "coefficients",
            "basis": manifest["basis"]["content_id"],
            "layers": {e["name"]: {"tensor": e["tensor"], "shape": e["shape"]} for e in manifest["layers"]},
            "passthrough": sorted(e["name"] for e in manifest["passthrough"]),
        }
    else:
        table = {
            **common,
            "kind": "basis",
            "layers": {
                e["name"]: {
                    "shape": e["shape"],
                    "modes": e["modes"],
                    "centered": e["centered"],
                    "tensors": e["tensors"],
                }
                for e in manifest["layers"]
            },
        }
    if manifest.get("tied"):  # a tie is written back as a copy: which tensor copies which is meaning too
        table["tied"] = manifest["tied"]
    return json.dumps(table, sort_keys=True, separators=(",", ":"))
