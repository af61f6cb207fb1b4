"""Opening artifacts from what the user typed (a folder, a registry reference or a Hub id) in this
invocation's registry."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from ..errors import RegistryError
from ..registry import Entry, Registry

if TYPE_CHECKING:
    from ..format import BasisArtifact, CoefficientSet

__all__ = [
    "check_can_register",
    "open_basis",
    "open_coefficients",
    "open_registry",
    "register_written",
    "resolve_folder",
]


def open_registry() -> Registry:
    """The registry of this invocation (``--home``, ``UNISUB_HOME`` or the default), opened once."""
    ctx = click.get_current_context()
    root = ctx.find_root()
    if "registry" not in root.meta:
        root.meta["registry"] = Registry(root.meta.get("home"))
        root.call_on_close(root.meta["registry"].close)
    return root.meta["registry"]


def register_written(folder: Path, *, basis: Path | None = None) -> Entry:
    """Register what a command just wrote (and the basis it needs); on failure it is removed
    (:func:`unisub_hub.pipeline.register.register_output`)."""
    from ..pipeline.register import register_output

    return register_output(open_registry(), folder, basis=basis)


def check_can_register(register: bool) -> None:
    """Before long work whose result is to be registered: refuse a registry that cannot record it."""
    if register and open_registry().read_only:
        raise RegistryError(
            f"{open_registry().home}: the registry is read-only here; pass --no-register to compute without "
            "recording, or --home to use another"
        )


def resolve_folder(ref: str, kind: str | None = None) -> Path:
    """The artifact folder ``ref`` names: a folder, a registry reference or a Hub id (pulled into
    this invocation's registry); see :func:`unisub_hub.hub.resolve.resolve_artifact`."""
    from ..hub.resolve import resolve_artifact

    path = Path(ref)
    if path.exists():  # a folder needs no registry: nothing is opened or created for it
        return path
    return resolve_artifact(ref, kind, registry=open_registry())


def open_basis(ref: str) -> BasisArtifact:
    """The basis ``ref`` names, verified (unchanged files are not hashed twice: the registry remembers)."""
    from ..format import load_basis  # torch loads with the first artifact, not with the CLI

    return load_basis(resolve_folder(ref, "basis"), known=open_registry().verified)


def open_coefficients(ref: str) -> CoefficientSet:
    """The coefficient set ``ref`` names, verified (see :func:`open_basis`)."""
    from ..format import load_coefficients

    return load_coefficients(resolve_folder(ref, "task"), known=open_registry().verified)
