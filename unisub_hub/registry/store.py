"""The content-addressed store: one folder per artifact, named after its content id."""

from __future__ import annotations

import fcntl
import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ..errors import RegistryError

__all__ = ["Store"]


class Store:
    """Artifact folders under ``<home>/store/<sha256 hex>``, placed atomically.

    A folder is copied into a hidden temporary folder and renamed into place, so a crash
    leaves at most a temporary or unreferenced folder, which :meth:`garbage` lists.
    """

    def __init__(self, root: Path) -> None:
        self.root = root

    @contextmanager
    def lease(self, *, exclusive: bool = False) -> Iterator[None]:
        """Hold the store's lock: shared while an artifact is placed and its rows written,
        exclusive while garbage is collected, so that gc never sees a placed folder before
        its rows (nor removes a temporary folder that is being copied)."""
        lock = self.root.with_name(self.root.name + ".lock")  # beside the store, not in it
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            handle = open(lock, "a+b")  # noqa: SIM115 (closed by the with below)
        except OSError as error:
            raise RegistryError(
                f"{lock}: cannot take the store's lock ({error.strerror or error}); is the registry read-only here?"
            ) from None
        with handle:
            fcntl.flock(handle, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def folder(self, content_id: str) -> Path:
        return self.root / content_id.removeprefix("sha256:")

    def relative(self, content_id: str) -> str:
        return f"store/{content_id.removeprefix('sha256:')}"

    def put(self, source: Path, content_id: str) -> Path:
        """Copy ``source`` into the store unless a folder for this content id is already there."""
        target = self.folder(content_id)
        if target.is_dir():
            return target
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = self.root / f".tmp-{uuid.uuid4().hex}"
        try:
            shutil.copytree(source, tmp)
            try:
                os.rename(tmp, target)
            except OSError:
                if not target.is_dir():  # lost a race to another process: theirs is identical
                    raise
                shutil.rmtree(tmp, ignore_errors=True)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return target

    def remove(self, content_id: str) -> None:
        shutil.rmtree(self.folder(content_id), ignore_errors=True)

    def folders(self) -> list[Path]:
        return sorted(p for p in self.root.iterdir() if p.is_dir()) if self.root.is_dir() else []

    def garbage(self, known: set[str]) -> list[Path]:
        """Temporary folders and folders no content id in ``known`` names."""
        hexes = {cid.removeprefix("sha256:") for cid in known}
        return [p for p in self.folders() if p.name.startswith(".tmp-") or p.name not in hexes]
