"""Output folders written atomically, and what a killed writer left behind.

A command writes into a hidden sibling ``.<out>.tmp-<host>-<pid>-<random>`` that is renamed
to ``<out>`` only when every file is complete, so an interrupted write leaves no partial
output. What a process killed with ``kill -9`` leaves (its hidden sibling) is removed by
the next write to the same ``<out>`` once its owner is known to be dead. A rerun whose
output already lies complete at ``<out>`` (the first run was killed after the rename but
before it registered) recovers when both hold the same artifact.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from ..errors import ArtifactExistsError

__all__ = ["atomic_folder", "check_output", "stale_siblings"]

_HOST = re.sub(r"[^A-Za-z0-9_.]", "_", socket.gethostname())[:40] or "host"
_TMP = re.compile(r"\.tmp-(?P<host>[A-Za-z0-9_.]+)-(?P<pid>\d+)-[0-9a-f]{8}$")


def check_output(out: str | Path, *, holds: Callable[[Path], bool] | None = None) -> Path:
    """Refuse an output path that exists and is not an empty folder (call before long work).

    Args:
        holds: accepts an existing ``out`` that this returns True for (a complete artifact of
            the kind about to be written: the rerun compares contents when it is done).
    """
    out = Path(out)
    if (
        out.exists()
        and (not out.is_dir() or any(out.iterdir()))
        and not (out.is_dir() and holds is not None and holds(out))
    ):
        raise ArtifactExistsError(out)
    return out


@contextmanager
def atomic_folder(out: Path, *, same_as_existing: Callable[[Path], bool] | None = None) -> Iterator[Path]:
    """Yield a temporary folder that becomes ``out`` when the block completes, or vanishes on error.

    Args:
        same_as_existing: when ``out`` exists and is not empty at the end, called with the
            finished temporary folder; True keeps ``out`` as it is (the same content was
            written before) and drops the new copy, False refuses.
    """
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    for stale in stale_siblings(out):
        shutil.rmtree(stale, ignore_errors=True)
    tmp = out.parent / f".{out.name}.tmp-{_HOST}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        yield tmp
        if out.is_dir() and any(out.iterdir()):
            if same_as_existing is None or not same_as_existing(tmp):
                raise ArtifactExistsError(out, "holds other content than this run wrote")
            shutil.rmtree(tmp)
            return
        if out.exists():
            out.rmdir()
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def stale_siblings(out: Path) -> list[Path]:
    """Hidden temporary folders beside ``out`` whose writer, on this host, is no longer running."""
    prefix = f".{out.name}.tmp-"
    try:
        candidates = [p for p in out.parent.iterdir() if p.name.startswith(prefix)]
    except OSError:
        return []
    stale = []
    for path in candidates:
        match = _TMP.search(path.name[len(out.name) + 1 :])
        if match and match["host"] == _HOST and not _alive(int(match["pid"])):
            stale.append(path)
    return stale


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: alive
        return True
    return True
