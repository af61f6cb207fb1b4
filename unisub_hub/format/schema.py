"""JSON Schemas of the manifests, shipped as package data (the same files as ``specs/``)."""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator

from ..constants import BASIS_FORMAT, COEFFICIENTS_FORMAT, FORMAT_MAJOR, FORMAT_VERSION
from ..errors import SchemaError, UnsupportedVersionError

__all__ = ["SCHEMA_FILES", "check_version", "format_version", "schema", "validate_manifest"]

SCHEMA_FILES = {
    BASIS_FORMAT: f"basis.v{FORMAT_MAJOR}.schema.json",
    COEFFICIENTS_FORMAT: f"coefficients.v{FORMAT_MAJOR}.schema.json",
}


@cache
def schema(kind: str) -> dict[str, Any]:
    """The JSON Schema for ``kind`` (``unisub-hub/basis`` or ``unisub-hub/coefficients``)."""
    text = resources.files(__package__).joinpath("schemas").joinpath(SCHEMA_FILES[kind]).read_text()
    return json.loads(text)


def _version_tuple(version: object, path: str | Path | None) -> tuple[int, int, int]:
    parts = str(version).split(".")
    if len(parts) != 3 or not all(p.isdigit() for p in parts):
        raise SchemaError(f"format_version {version!r} is not MAJOR.MINOR.PATCH", path=path)
    return int(parts[0]), int(parts[1]), int(parts[2])


def format_version(manifest: dict[str, Any]) -> tuple[int, int, int]:
    """A validated manifest's ``format_version`` as ``(major, minor, patch)``."""
    return _version_tuple(manifest["format_version"], None)


def check_version(manifest: dict[str, Any], kind: str, *, path: str | Path | None = None) -> dict[str, Any]:
    """Check ``format`` and ``format_version``; return the manifest as this reader should validate it.

    A reader accepts its own major version and refuses another. A newer minor version may
    only add optional fields, so those this reader does not know are dropped before validation.
    """
    if not isinstance(manifest, dict):
        raise SchemaError("manifest is not a JSON object", path=path)
    if manifest.get("format") != kind:
        raise SchemaError(f"format is {manifest.get('format')!r}, expected {kind!r}", path=path)
    major, minor, _ = _version_tuple(manifest.get("format_version"), path)
    ours = _version_tuple(FORMAT_VERSION, None)
    if major != ours[0]:
        hint = " (upgrade unisub-hub to read it)" if major > ours[0] else ""
        raise UnsupportedVersionError(
            f"format_version {manifest['format_version']} is major version {major}; "
            f"this unisub-hub reads major version {ours[0]} only{hint}",
            path=path,
        )
    if minor > ours[1]:
        known = schema(kind)["properties"]
        manifest = {key: value for key, value in manifest.items() if key in known}
    return manifest


def _open(node: Any) -> Any:
    """A schema that lets every object have fields it does not know, at any depth."""
    if isinstance(node, dict):
        return {
            key: _open(value) for key, value in node.items() if not (key == "additionalProperties" and value is False)
        }
    if isinstance(node, list):
        return [_open(value) for value in node]
    return node


@cache
def _validator(kind: str, newer_minor: bool) -> Draft202012Validator:
    return Draft202012Validator(_open(schema(kind)) if newer_minor else schema(kind))


def validate_manifest(manifest: dict[str, Any], kind: str, *, path: str | Path | None = None) -> dict[str, Any]:
    """Validate a manifest against its schema; raise :class:`SchemaError` naming the first bad field.

    A newer minor version may add optional fields anywhere (inside a layer entry too): they are
    allowed then, while every field this reader knows is still checked.
    """
    manifest = check_version(manifest, kind, path=path)
    newer_minor = _version_tuple(manifest["format_version"], path)[1] > _version_tuple(FORMAT_VERSION, None)[1]
    validator = _validator(kind, newer_minor)
    errors = sorted(
        validator.iter_errors(manifest), key=lambda e: (len(e.absolute_path), list(map(str, e.absolute_path)))
    )
    if errors:
        first = errors[0]
        where = "/".join(str(p) for p in first.absolute_path) or "(top level)"
        message = first.message if len(first.message) <= 200 else first.message[:197] + "..."
        raise SchemaError(f"manifest field {where}: {message}", path=path)
    return manifest
