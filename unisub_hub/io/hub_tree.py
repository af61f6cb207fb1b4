"""Sources (checkpoints, adapters) on the Hub: planned from metadata, downloaded where they are read.

Opening ``org/name[@revision]`` resolves the revision to a commit sha, lists the repo with
its files' sizes and LFS sha256s, and downloads only the small files (configs, indexes). The
weights stay on the Hub as :class:`HubFile` objects: their safetensors headers are read with
HTTP Range requests, their sha256 comes from the listing, and their bytes are downloaded
(pinned to the commit, into the Hugging Face cache of the machine that reads them) the first
time a pass reads them. In a Dask build that is the worker; the driver never downloads a
weight file. A downloaded file is checked against the listed sha256 once per process, so
the provenance a manifest records is the bytes that were read.

With ``HF_HUB_OFFLINE`` the cached snapshot is opened as a local folder.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import HubError
from ..format.tensorfile import read_header, sha256_files
from ..hf import api, cache_dir, endpoint, hub_errors, is_offline, matching_files, split_revision
from .files import LocalTree, SourceTree

__all__ = ["SOURCE_FILES", "HubFile", "HubTree", "open_hub_tree"]

SOURCE_FILES = ("*.safetensors", "*.safetensors.index.json", "config.json", "adapter_config.json")
"""What a source needs: weights in safetensors and the configs; pickles are never fetched."""

_WEIGHTS = ".safetensors"
_verified: set[tuple[str, str]] = set()
"""(local path, sha256) pairs this process has already checked."""


@dataclass
class HubFile:
    """A weight file of a Hub repo at one commit, read lazily (see the module docstring)."""

    repo_id: str
    commit: str
    name: str
    size: int
    listed_sha256: str | None
    """The sha256 the Hub lists for it (LFS files; ``None`` for a file stored in git)."""
    endpoint: str
    """The Hub the commit was resolved on: workers download from it whatever their ``HF_ENDPOINT``."""
    _header: dict[str, Any] | None = field(default=None, repr=False)
    _sha256: str | None = field(default=None, repr=False)

    @property
    def where(self) -> str:
        return f"{self.repo_id}/{self.name}@{self.commit[:12]}"

    def header(self) -> dict[str, Any]:
        """The safetensors header, from the cache if the file is there, else by two Range requests at most."""
        if self._header is None:
            if (cached := self._cached()) is not None:
                self._header = read_header(cached)
            else:
                with hub_errors(self.where):
                    parsed = api().parse_safetensors_file_metadata(self.repo_id, self.name, revision=self.commit)
                # Sorted like read_header's (safetensors lists names sorted, the file by dtype):
                # a collection's layer order, and so its basis, must not depend on where a file lies.
                header: dict[str, Any] = {
                    key: {"dtype": info.dtype, "shape": list(info.shape)}
                    for key, info in sorted(parsed.tensors.items())
                }
                if parsed.metadata:
                    header["__metadata__"] = dict(parsed.metadata)
                self._header = header
        return dict(self._header)

    def sha256(self) -> str:
        """The listed sha256; a file without one is downloaded and hashed (once)."""
        if self.listed_sha256 is not None:
            return self.listed_sha256
        if self._sha256 is None:
            self._sha256 = sha256_files([self.local()])
        return self._sha256

    def local(self) -> Path:
        """The file in this machine's Hugging Face cache, downloaded first if need be, checked against its sha256."""
        from huggingface_hub import hf_hub_download

        with hub_errors(self.where):
            path = Path(
                hf_hub_download(
                    self.repo_id, self.name, revision=self.commit, endpoint=self.endpoint, cache_dir=cache_dir()
                )
            )
        if self.listed_sha256 is not None and (str(path), self.listed_sha256) not in _verified:
            if sha256_files([path]) != self.listed_sha256:
                path.resolve().unlink(missing_ok=True)  # the next attempt downloads it again
                path.unlink(missing_ok=True)
                raise HubError(
                    f"{self.where}: the downloaded bytes do not match the sha256 the Hub lists; removed from the "
                    "cache, try again"
                )
            _verified.add((str(path), self.listed_sha256))
        return path

    def _cached(self) -> Path | None:
        from huggingface_hub import try_to_load_from_cache

        found = try_to_load_from_cache(self.repo_id, self.name, cache_dir=cache_dir(), revision=self.commit)
        return Path(found) if isinstance(found, str) else None


@dataclass
class HubTree:
    """A Hub repo at one commit: the small files in a local snapshot folder, the weights as :class:`HubFile`."""

    folder: Path
    names: frozenset[str]
    files: dict[str, HubFile]

    def read_text(self, name: str) -> str:
        return (self.folder / name).read_text()

    def weight(self, name: str) -> HubFile:
        return self.files[name]


def open_hub_tree(spec: str, *, allow_patterns: Sequence[str] | None = None) -> tuple[SourceTree, str]:
    """The files of ``org/name[@revision]`` and the commit sha they are pinned to.

    Only the small files are downloaded here (see the module docstring).
    """
    from huggingface_hub import snapshot_download

    repo_id, revision = split_revision(spec)
    patterns = list(allow_patterns or SOURCE_FILES)
    with hub_errors(spec):
        if is_offline():
            folder = Path(
                snapshot_download(
                    repo_id, revision=revision, allow_patterns=patterns, endpoint=endpoint(), cache_dir=cache_dir()
                )
            )
            return LocalTree(folder), folder.name
        info = api().model_info(repo_id, revision=revision, files_metadata=True)
        assert info.sha is not None  # the Hub always answers with the commit it resolved
        listed = {sibling.rfilename: sibling for sibling in info.siblings or []}
        names = matching_files(listed, patterns)
        small = [name for name in names if not name.endswith(_WEIGHTS)]
        folder = Path(
            snapshot_download(
                repo_id, revision=info.sha, allow_patterns=small, endpoint=endpoint(), cache_dir=cache_dir()
            )
        )
    folder.mkdir(parents=True, exist_ok=True)  # a repo of weights alone has no small file to make it
    _record_ref(folder, revision or "main", info.sha)
    files = {
        name: HubFile(
            repo_id,
            info.sha,
            name,
            listed[name].size or 0,
            listed[name].lfs.sha256 if listed[name].lfs else None,
            endpoint(),
        )
        for name in names
        if name.endswith(_WEIGHTS)
    }
    return HubTree(folder, frozenset(names), files), info.sha


def _record_ref(snapshot: Path, revision: str, commit: str) -> None:
    """Record in the cache which commit ``revision`` resolved to, as a download by branch name does.

    The files are fetched pinned to the commit (so listing and bytes agree), which leaves the
    cache's ``refs/<revision>`` unwritten; without it ``HF_HUB_OFFLINE`` could not find the
    snapshot again. The cache layout is huggingface_hub's documented one
    (``models--org--name/{refs,snapshots}``); the write is atomic.
    """
    if commit.startswith(revision):
        return  # a (short) commit sha: nothing to remember
    ref = snapshot.parent.parent / "refs" / revision
    ref.parent.mkdir(parents=True, exist_ok=True)
    if not ref.is_file() or ref.read_text() != commit:
        partial = ref.with_name(f"{ref.name}.{os.getpid()}.tmp")
        partial.write_text(commit)
        os.replace(partial, ref)
