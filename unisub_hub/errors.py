"""Every exception unisub-hub raises on purpose, grouped by topic.

Each class derives from :class:`UnisubError` and also from the matching builtin, so callers
can catch either. Messages name the file, tensor or field at fault and what was expected;
the CLI prints ``str(error)`` as one line and exits 1.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

_OPTION = re.compile(r"\{option:([a-z_]+)\}")


def option(name: str) -> str:
    """A library parameter named in a message: ``str(error)`` spells it as the parameter
    (``holdout``), the command line as its flag (``--holdout``), from one table in the CLI."""
    return "{option:" + name + "}"


class UnisubError(Exception):
    """Base class of all expected unisub-hub errors."""

    hint: str | None = None

    @property
    def options(self) -> tuple[str, ...]:
        """The library parameters the message names (see :func:`option`)."""
        return tuple(_OPTION.findall(self._template()))

    def render(self, spell: Callable[[str], str] = str, *, with_hint: bool = False) -> str:
        """The message (and hint) with each named parameter spelled by ``spell`` (the CLI gives its flags)."""
        text = self._template() + (f" (hint: {self.hint})" if with_hint and self.hint else "")
        return _OPTION.sub(lambda match: spell(match[1]), text)

    def _template(self) -> str:
        return str(self.args[0]) if self.args else ""

    def __str__(self) -> str:
        return self.render()


# --- artifacts and format -------------------------------------------------------------------


class FormatError(UnisubError, ValueError):
    """An artifact or manifest does not follow the unisub-hub format."""

    def __init__(self, message: str, *, path: str | Path | None = None) -> None:
        self.path = str(path) if path is not None else None
        super().__init__(f"{self.path}: {message}" if self.path else message)


class SchemaError(FormatError):
    """A manifest fails its JSON Schema."""


class UnsupportedVersionError(FormatError):
    """A manifest's major ``format_version`` is not the one this reader understands."""


class ContentIdMismatchError(FormatError):
    """The tensor files' bytes do not hash to the content id the manifest states."""


class ArtifactExistsError(UnisubError, FileExistsError):
    """The output folder already exists and would be overwritten."""

    def __init__(self, path: str | Path, detail: str = "") -> None:
        self.path = str(path)
        super().__init__(
            f"{self.path}: output folder already exists{' and ' + detail if detail else ''} (remove it or choose "
            f"another {option('out')})"
        )


# --- sources --------------------------------------------------------------------------------


class SourceError(UnisubError, ValueError):
    """A source model (checkpoint or adapter) cannot be used."""

    def __init__(self, message: str, *, source: str | None = None) -> None:
        self.source = source
        super().__init__(f"{source}: {message}" if source else message)


class PickleRefusedError(SourceError):
    """A source holds only pickle files and ``allow_pickle`` was not given."""

    hint = f"pickle files can run code when loaded; convert them to safetensors or pass {option('allow_pickle')}"


class NonFiniteError(SourceError):
    """A tensor holds NaN or Inf values."""


class IncompatibleSourcesError(SourceError):
    """Sources of one collection disagree (shapes, kinds, or duplicates)."""


# --- engine ---------------------------------------------------------------------------------


class EngineError(UnisubError, ValueError):
    """A decomposition cannot be computed as asked (rank, modes, empty selection)."""


class DeviceError(UnisubError, RuntimeError):
    """The requested device is not available."""


class ExecutorError(UnisubError, RuntimeError):
    """The requested executor cannot run: Dask is missing, or its scheduler cannot be reached."""


class AdaptError(UnisubError, ValueError):
    """A basis cannot be attached to a model, or a task does not fit the attached model."""


class MergeError(UnisubError, ValueError):
    """Tasks cannot be merged as asked (other bases, weights, method parameters, heads)."""


class TrainingDataError(UnisubError, ValueError):
    """A training or evaluation data file cannot be used as asked."""

    def __init__(self, message: str, *, path: str | Path | None = None) -> None:
        self.path = str(path) if path is not None else None
        super().__init__(f"{self.path}: {message}" if self.path else message)


class MissingDependencyError(UnisubError, ImportError):
    """A command needs a package of an extra that is not installed (see :mod:`unisub_hub.extras`)."""

    def __init__(self, message: str, *, module: str, extra: str) -> None:
        self.module = module
        self.extra = extra
        super().__init__(message)


class ServeError(UnisubError, ValueError):
    """A server request cannot be answered as asked; ``status`` is its HTTP status."""

    def __init__(self, message: str, *, status: int = 400) -> None:
        self.status = status
        super().__init__(message)


# --- registry -------------------------------------------------------------------------------


class RegistryError(UnisubError, LookupError):
    """A registry lookup or change failed."""


class ReferenceNotFoundError(RegistryError, KeyError):
    """A registry reference matches nothing."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it one plain line.
        return self.render()


class AmbiguousReferenceError(RegistryError):
    """A content id prefix or name matches several artifacts."""


class DependencyError(RegistryError):
    """An artifact cannot be removed because others depend on it."""


# --- hub ------------------------------------------------------------------------------------


class HubError(UnisubError):
    """A Hugging Face Hub operation failed; the subclasses say how, and which builtin fits.

    Only :class:`HubConnectionError` is a ``ConnectionError``: a caller that retries on
    connection errors must not retry a typo in a repo id.
    """

    def __init__(self, message: str, *, repo_id: str | None = None, revision: str | None = None) -> None:
        self.repo_id = repo_id
        self.revision = revision
        super().__init__(message)


class HubConnectionError(HubError, ConnectionError):
    """The Hub cannot be reached (network down, offline mode and nothing stored)."""


class HubNotFoundError(HubError, LookupError):
    """A repository, revision or file does not exist on the Hub (or is private)."""


class HubAuthError(HubError, PermissionError):
    """The Hub refused the token, or the repository is gated."""


class HubUsageError(HubError, ValueError):
    """What was asked of the Hub cannot be done as asked: a malformed repo id, a task pushed
    before its basis, a basis where a coefficient set is needed, a malformed answer."""
