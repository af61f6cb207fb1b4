"""The files of a source, wherever they are: a local folder, or a Hub repo not yet downloaded.

A source is found by looking at file *names* (an index, ``model.safetensors``, component
subfolders, ``adapter_config.json``) and planned from safetensors *headers*; only a build's
passes need the tensor bytes. So a source is opened on a :class:`SourceTree`, which lists
names and reads small text files, and its weights are :class:`WeightFile` objects, which give
their header, size and sha256 without the bytes, and a local path when a pass reads them. A
Hub repo's weights are then downloaded where they are read: in a Dask worker, not in the
driver that planned the build (see :mod:`unisub_hub.io.hub_tree`).

A source's identity (its ``sha256`` in manifests and the duplicate check) is computed from
per-file sha256s, which both a local file and the Hub's LFS metadata give: the file's own
sha256 for a single file, else the sha256 of its ``name sha256`` lines in name order.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Protocol

from ..format.tensorfile import read_header, sha256_files

__all__ = ["LocalFile", "LocalTree", "SourceTree", "WeightFile", "read_config", "source_sha256"]


class WeightFile(Protocol):
    """One safetensors (or pickle) file of a source."""

    @property
    def name(self) -> str:
        """The file's path inside its source, with ``/`` separators (``unet/diffusion_pytorch_model.safetensors``)."""

    @property
    def size(self) -> int:
        """Bytes on disk (or on the Hub)."""

    def header(self) -> dict[str, Any]:
        """The safetensors header, ``{tensor: {"dtype", "shape", ...}}`` plus ``__metadata__``."""

    def sha256(self) -> str:
        """Hex sha256 of the file's bytes."""

    def local(self) -> Path:
        """A path on this machine to read the bytes from (downloaded first if need be)."""


class SourceTree(Protocol):
    """The files a source is made of, by name."""

    @property
    def folder(self) -> Path:
        """A local folder holding the tree's small files (configs, indexes); errors name paths in it."""

    @property
    def names(self) -> frozenset[str]:
        """Every file's path inside the tree (top level and one folder down), ``/``-separated."""

    def read_text(self, name: str) -> str:
        """A small file of the tree (a config or an index)."""

    def weight(self, name: str) -> WeightFile:
        """The weight file ``name`` (one of :attr:`names`)."""


@dataclass
class LocalFile:
    """A weight file on this machine.

    Its sha256 is taken once and kept: a build hashes every file of a collection on two
    threads up front (:func:`~unisub_hub.pipeline.build.check_duplicates`), and the sources'
    identities and provenance records then reuse the digests.
    """

    path: Path
    name: str
    _sha256: str | None = field(default=None, repr=False, compare=False)

    @property
    def size(self) -> int:
        return self.path.stat().st_size

    def header(self) -> dict[str, Any]:
        return read_header(self.path)

    def sha256(self) -> str:
        if self._sha256 is None:
            self._sha256 = sha256_files([self.path])
        return self._sha256

    def local(self) -> Path:
        return self.path


class LocalTree:
    """A local folder (top-level files and those one folder down), or a single file.

    Hidden entries are skipped; a file may be a symlink to anywhere (the Hub cache keeps
    snapshot files as links into ``blobs/``).

    Args:
        folder: the folder.
        only: the one file of a tree opened on a file rather than a folder.
    """

    def __init__(self, folder: Path, only: str | None = None) -> None:
        self.folder = folder
        self.only = only

    @classmethod
    def at(cls, path: Path) -> LocalTree:
        return cls(path.parent, path.name) if path.is_file() else cls(path)

    @cached_property
    def names(self) -> frozenset[str]:
        if self.only is not None:
            return frozenset([self.only])
        if not self.folder.is_dir():
            return frozenset()  # a missing folder holds nothing; the source says what it lacks
        found = set()
        for entry in self.folder.iterdir():
            if entry.name.startswith("."):
                continue
            if entry.is_file():
                found.add(entry.name)
            elif entry.is_dir():
                found.update(
                    f"{entry.name}/{inner.name}"
                    for inner in entry.iterdir()
                    if inner.is_file() and not inner.name.startswith(".")
                )
        return frozenset(found)

    def read_text(self, name: str) -> str:
        return (self.folder / name).read_text()

    def weight(self, name: str) -> LocalFile:
        return LocalFile(self.folder / name, name)


def source_sha256(files: Sequence[WeightFile]) -> str:
    """A source's identity from its files' sha256s (see the module docstring).

    One file: its sha256, which is also what the Hub reports for it. Several: the sha256 of
    the ``name sha256`` lines, sorted by name, so a sharded checkpoint has the same identity
    on disk and on the Hub without the driver reading (or downloading) its shards.
    """
    if len(files) == 1:
        return files[0].sha256()
    lines = sorted(f"{file.name} {file.sha256()}\n" for file in files)
    return hashlib.sha256("".join(lines).encode()).hexdigest()


MAX_CONFIG_BYTES = 1 << 20
"""A model config larger than this is not a config (and is not read into memory)."""


def read_config(path: Path) -> dict[str, Any] | None:
    """A JSON object from a config file (``config.json``), or ``None`` when there is no readable one.

    A missing, oversized, non-UTF-8 or malformed file, or one that holds no object, is no config.
    """
    if not path.is_file() or path.stat().st_size > MAX_CONFIG_BYTES:
        return None
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except ValueError:  # bad JSON, bad UTF-8, or an integer past Python's digit limit
        return None
    return config if isinstance(config, dict) else None
