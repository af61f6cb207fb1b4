"""Artifact folders: a manifest, tensor files (sharded HF-style when large) and a model card.

Writing goes through :func:`~.atomic.atomic_folder`: an interrupted write leaves no
artifact behind, and a rerun finds the same artifact already in place.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..constants import (
    BASIS_FORMAT,
    BASIS_MANIFEST,
    COEFFICIENTS_FORMAT,
    COEFFICIENTS_MANIFEST,
    DEFAULT_SHARD_SIZE,
    FORMAT_VERSION,
)
from ..errors import ContentIdMismatchError, FormatError, UnisubError, option
from .atomic import atomic_folder, check_output
from .common import MEANING_KEY, meaning_table
from .schema import check_version, validate_manifest
from .shards import ShardWriter
from .tensorfile import SMALL_FILE_BYTES, content_id, open_tensor_file, parse_bytes, read_header
from .verified import VerifiedIds, cached_content_id, file_key, remember, remember_content_id, remembered

__all__ = ["MANIFEST_NAMES", "Artifact", "check_artifact_output", "holds_artifact", "read_artifact", "write_artifact"]

MANIFEST_NAMES = {BASIS_FORMAT: BASIS_MANIFEST, COEFFICIENTS_FORMAT: COEFFICIENTS_MANIFEST}
TENSOR_STEMS = {BASIS_FORMAT: "basis", COEFFICIENTS_FORMAT: "coefficients"}


def write_artifact(
    out: Path,
    manifest: dict[str, Any],
    tensors: Mapping[str, torch.Tensor],
    *,
    shard_size: int = DEFAULT_SHARD_SIZE,
    card: Callable[[dict[str, Any]], str] | None = None,
    extra_files: Mapping[str, str] | None = None,
) -> Artifact:
    """Write a complete artifact folder at ``out`` and return it, opened.

    ``manifest`` needs every field but ``content_id`` and ``tensor_files``, which are filled
    in from the written files; the caller's dict is not changed. ``card`` makes the
    ``README.md`` from the final manifest.

    Raises:
        ArtifactExistsError: ``out`` exists and is not empty.
        SchemaError: the manifest does not validate (nothing is written).
    """
    kind = manifest["format"]
    if shard_size < 1:
        raise FormatError(f"{option('shard_size')} must be a positive number of bytes, got {shard_size}")
    metadata = {"format": kind, "format_version": FORMAT_VERSION, MEANING_KEY: meaning_table(manifest)}

    def same_as_existing(tmp: Path) -> bool:  # a rerun after a kill between writing and registering
        return holds_artifact(out, kind) and _content_id_of(out, kind) == _content_id_of(tmp, kind)

    with atomic_folder(out, same_as_existing=same_as_existing) as tmp:
        writer = ShardWriter(tmp, TENSOR_STEMS[kind], shard_size, metadata)
        for tensor_name in sorted(tensors):
            writer.add(tensor_name, tensors[tensor_name])
        files = writer.close()
        final = {**manifest, "tensor_files": files, "content_id": content_id(tmp / f for f in files)}
        final = validate_manifest(final, kind, path=out / MANIFEST_NAMES[kind])
        (tmp / MANIFEST_NAMES[kind]).write_text(json.dumps(final, indent=2) + "\n")
        if card is not None:
            (tmp / "README.md").write_text(card(final))
        for name, text in (extra_files or {}).items():
            (tmp / name).write_text(text)
    remember_content_id([out / f for f in files], final["content_id"])  # just hashed: the next reader need not
    return read_artifact(out, kind)


def holds_artifact(folder: Path, kind: str) -> bool:
    """Whether ``folder`` holds a complete, intact artifact of ``kind`` (its files hash to its content id)."""
    if not (folder / MANIFEST_NAMES[kind]).is_file():
        return False
    try:
        read_artifact(folder, kind, verify=True)
    except UnisubError:
        return False
    return True


def check_artifact_output(out: str | Path, kind: str) -> Path:
    """:func:`~.atomic.check_output` for an artifact: a complete one of ``kind`` already at ``out``
    is let through (a rerun after a kill; :func:`write_artifact` then compares contents)."""
    return check_output(out, holds=lambda folder: holds_artifact(folder, kind))


def _content_id_of(folder: Path, kind: str) -> str:
    return json.loads((folder / MANIFEST_NAMES[kind]).read_text())["content_id"]


@dataclass
class Artifact:
    """An artifact folder on disk whose manifest has been validated; tensors load lazily."""

    path: Path
    manifest: dict[str, Any]
    kind: str
    _locations: dict[str, str] = field(default_factory=dict, repr=False)
    _headers: dict[str, dict] = field(default_factory=dict, repr=False)
    _small_files: dict[str, dict[str, torch.Tensor]] = field(default_factory=dict, repr=False)
    """The tensors of the small files (:data:`~.tensorfile.SMALL_FILE_BYTES`), parsed at opening;
    each read hands out copies, so a caller that changes one changes nothing here."""

    @property
    def content_id(self) -> str:
        return self.manifest["content_id"]

    @property
    def tensor_files(self) -> list[Path]:
        return [self.path / name for name in self.manifest["tensor_files"]]

    def tensor_names(self) -> list[str]:
        return sorted(self._locations)

    def tensor(self, name: str, device: str | torch.device = "cpu") -> torch.Tensor:
        """Load one tensor (only its bytes are read from a large file)."""
        return self.tensors([name], device)[name]

    def tensors(self, names: Sequence[str], device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
        """Load several tensors, opening each file once (a task's every layer, for a fast load)."""
        by_file: dict[str, list[str]] = {}
        for name in names:
            if name not in self._locations:
                raise FormatError(f"tensor {name!r} is not in the artifact", path=self.path)
            by_file.setdefault(self._locations[name], []).append(name)
        out: dict[str, torch.Tensor] = {}
        for file_name, wanted in by_file.items():
            if file_name in self._small_files:
                parsed = self._small_files[file_name]
                out.update((name, parsed[name].clone().to(device)) for name in wanted)
                continue
            with open_tensor_file(self.path / file_name, str(device)) as handle:
                out.update((name, handle.get_tensor(name)) for name in wanted)
        return out

    def tensor_info(self, name: str) -> dict[str, Any]:
        """dtype and shape of a stored tensor, from its file header."""
        return self._headers[self._locations[name]][name]

    def size_bytes(self) -> int:
        """Bytes of the tensor files."""
        return sum(path.stat().st_size for path in self.tensor_files)

    def verify(self, *, cached: bool = False, known: VerifiedIds | None = None) -> None:
        """Recompute the content id from the tensor files.

        Args:
            cached: accept a content id remembered for these very files (same path, size,
                modification time and inode; see :mod:`unisub_hub.format.verified`).
            known: a memory that outlives the process (the registry's), asked and told.

        Raises:
            ContentIdMismatchError: the bytes no longer hash to the manifest's content id.
        """
        if cached:
            actual = cached_content_id(self.tensor_files, known)
        else:
            actual = content_id(self.tensor_files)
            remember_content_id(self.tensor_files, actual, known)
        if actual != self.content_id:
            raise ContentIdMismatchError(
                f"tensor files hash to {actual[:19]}..., manifest says {self.content_id[:19]}... (modified or corrupt)",
                path=self.path,
            )


@dataclass
class ArtifactView:
    """Base of the typed views (:class:`BasisArtifact`, :class:`CoefficientSet`) over an :class:`Artifact`."""

    artifact: Artifact

    @property
    def manifest(self) -> dict[str, Any]:
        return self.artifact.manifest

    @property
    def path(self) -> Path:
        return self.artifact.path

    @property
    def content_id(self) -> str:
        return self.artifact.content_id

    @property
    def layer_names(self) -> list[str]:
        return [entry["name"] for entry in self.manifest["layers"]]


def detect_kind(path: Path) -> str:
    """Which kind of artifact a folder holds, from its manifest file name."""
    for kind, manifest_name in MANIFEST_NAMES.items():
        if (path / manifest_name).is_file():
            return kind
    raise FormatError(f"no {BASIS_MANIFEST} or {COEFFICIENTS_MANIFEST} found: not a unisub-hub artifact", path=path)


def _valid_manifest(raw: Any, kind: str, path: Path, known: VerifiedIds | None) -> dict[str, Any]:
    """``raw`` checked against its schema, or only its version when this reader validated the
    manifest file unchanged before (remembered as tensor files' content ids are, by file
    identity: see :mod:`.verified`). Schema validation is most of the cost of opening a task,
    which a server does per cold load."""
    if known is None:
        return validate_manifest(raw, kind, path=path)
    key, value = "schema|" + file_key([path]), f"valid|{kind}|{FORMAT_VERSION}"
    if remembered(key, known) == value:
        return check_version(raw, kind, path=path)
    manifest = validate_manifest(raw, kind, path=path)
    remember(key, value, known)
    return manifest


def read_artifact(
    path: str | Path,
    kind: str | None = None,
    *,
    verify: bool = False,
    cached: bool = False,
    known: VerifiedIds | None = None,
) -> Artifact:
    """Open an artifact folder: validate its manifest and check its tensor files' headers.

    Args:
        path: the artifact folder.
        kind: ``unisub-hub/basis`` or ``unisub-hub/coefficients``; detected when ``None``.
        verify: also recompute the content id (reads every byte).
        cached: with ``verify``, accept the content id remembered for unchanged files.
        known: with ``verify``, the registry's memory of verified files (see :mod:`.verified`).

    Raises:
        FormatError: missing or malformed manifest or tensor file (subclasses say which).
    """
    path = Path(path)
    if not path.is_dir():
        raise FormatError("no such artifact folder", path=path)
    kind = kind or detect_kind(path)
    manifest_path = path / MANIFEST_NAMES[kind]
    if not manifest_path.is_file():
        raise FormatError(f"missing {MANIFEST_NAMES[kind]}", path=path)
    try:
        raw = json.loads(manifest_path.read_text())
    except ValueError as error:  # bad JSON, bad UTF-8, or an integer past Python's digit limit
        raise FormatError(f"manifest is not valid JSON ({str(error)[:200]})", path=manifest_path) from None
    manifest = _valid_manifest(raw, kind, manifest_path, known if verify and cached else None)
    artifact = Artifact(path=path, manifest=manifest, kind=kind)
    for file_name in manifest["tensor_files"]:
        file_path = path / file_name
        if not file_path.is_file():
            raise FormatError(f"tensor file {file_name} listed in the manifest is missing", path=path)
        if file_path.stat().st_size <= SMALL_FILE_BYTES:
            header, artifact._small_files[file_name] = parse_bytes(_read_bytes(file_path), file_path)
        else:
            header = read_header(file_path)
        meta = header.pop("__metadata__", None) or {}
        if meta.get("format") != kind:
            raise FormatError(
                f"safetensors metadata format is {meta.get('format')!r}, expected {kind!r}", path=file_path
            )
        if MEANING_KEY in meta and meta[MEANING_KEY] != meaning_table(manifest):
            raise FormatError(
                f"the manifest does not say what {file_name} says its tensors mean (roles, layers, shapes, source "
                "kind, "
                "architecture or basis were changed after writing): edited or tampered",
                path=path,
            )
        artifact._headers[file_name] = header
        for name in header:
            artifact._locations[name] = file_name
    if verify:
        artifact.verify(cached=cached, known=known)
    return artifact


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as error:
        raise FormatError(f"cannot read the file ({error.strerror or error})", path=path) from None
