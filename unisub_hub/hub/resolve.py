"""What a user typed for an artifact -> the artifact: one resolver for every command and the library.

A reference is tried as, in order:

1. a folder on this machine;
2. a registry reference: ``name``, ``name:version``, ``name@alias`` or a content id prefix;
3. a Hub repo id ``org/name[@revision]``, pulled into the registry (pinned, verified) once.

``build``, ``project``, ``train``, ``eval``, ``merge``, ``serve``, :func:`unisub_hub.adapt.attach`
and the rest all resolve through :func:`resolve_artifact`, so a reference that works for one
works for all.
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import FormatError, ReferenceNotFoundError
from ..hf import is_repo_id
from ..registry import Registry

if TYPE_CHECKING:
    from collections.abc import Iterator

    from ..format import BasisArtifact, CoefficientSet

__all__ = ["KIND_WORDS", "open_basis", "open_coefficients", "resolve_artifact"]

KIND_WORDS = {"basis": "basis", "task": "coefficient set", None: "artifact"}


@contextmanager
def _registry(registry: Registry | None) -> Iterator[Registry]:
    if registry is not None:
        yield registry
        return
    opened = Registry()
    try:
        yield opened
    finally:
        opened.close()


def resolve_artifact(
    ref: str | Path, kind: str | None = None, *, registry: Registry | None = None, token: str | None = None
) -> Path:
    """The folder of the artifact ``ref`` names (see the module docstring for the order tried).

    Args:
        ref: a folder, a registry reference or a Hub repo id.
        kind: ``"basis"`` or ``"task"`` to accept only that kind from the registry and the Hub.
        registry: the registry to look in and pull into (default: the one at ``UNISUB_HOME``).
        token: a Hub token for private repos (default: ``HF_TOKEN`` / the login).

    Raises:
        ReferenceNotFoundError: none of the three.
        FormatError: a Hub repo holds an artifact of the other kind.
        HubError: the Hub could not be asked.

    Example:
        >>> resolve_artifact("minilm-basis@prod", "basis")
        PosixPath('/home/me/.cache/unisub-hub/store/sha256-...')
    """
    path = Path(ref)
    if path.exists():
        return path
    text = str(ref)
    with _registry(registry) as opened:
        try:
            return opened.resolve(text, kind).path
        except ReferenceNotFoundError:
            if not is_repo_id(text):
                raise ReferenceNotFoundError(
                    f"{text}: no such folder, no registered {KIND_WORDS[kind]} of that name "
                    "(see `unisub-hub registry list`), and not a Hub repo id org/name[@revision]"
                ) from None
        from .pull import pull

        entry = pull(text, opened, token=token)
    if kind is not None and entry.kind != kind:
        raise FormatError(f"is a {KIND_WORDS[entry.kind]}, not a {KIND_WORDS[kind]}", path=text)
    return entry.path


def open_basis(ref: str | Path, *, registry: Registry | None = None, token: str | None = None) -> BasisArtifact:
    """The basis ``ref`` names (:func:`resolve_artifact`), opened and verified (remembered by the registry)."""
    from ..format import load_basis

    with _registry(registry) as opened:
        return load_basis(resolve_artifact(ref, "basis", registry=opened, token=token), known=opened.verified)


def open_coefficients(ref: str | Path, *, registry: Registry | None = None, token: str | None = None) -> CoefficientSet:
    """The coefficient set ``ref`` names (:func:`resolve_artifact`), opened and verified (see :func:`open_basis`)."""
    from ..format import load_coefficients

    with _registry(registry) as opened:
        return load_coefficients(resolve_artifact(ref, "task", registry=opened, token=token), known=opened.verified)
