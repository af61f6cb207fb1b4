"""Recording what a command wrote: once, after the write, and never half.

Every writer (``build``, ``project``, ``rebase``, ``train``, ``merge``) writes its artifact
atomically, then registers it here. If registering fails (a read-only or damaged registry,
a basis name taken by another architecture, a kill), the artifact just written is removed:
a failed command leaves neither a folder nor a row.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from ..registry import Entry, Registry

__all__ = ["register_output"]


def register_output(registry: Registry, folder: str | Path, *, basis: str | Path | None = None) -> Entry:
    """Register the artifact at ``folder`` (after ``basis``, the basis a coefficient set needs).

    Raises:
        RegistryError, FormatError: registering failed; ``folder`` has been removed.
    """
    try:
        if basis is not None:
            registry.add(basis)
        return registry.add(folder)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
