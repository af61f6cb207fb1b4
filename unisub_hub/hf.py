"""One place that talks to ``huggingface_hub``: its settings, the client, repo ids, and its
errors as one-line messages.

Hugging Face settings (``HF_ENDPOINT``, ``HF_HOME``/``HF_HUB_CACHE``, ``HF_HUB_OFFLINE``,
``HF_TOKEN``) are the library's own: read once, when ``huggingface_hub`` is imported, into
``huggingface_hub.constants``, and read here from there, so unisub-hub and the library never
disagree. Code that points a running process at another Hub (the tests' local Hub) patches
those constants, as ``huggingface_hub``'s own tests do
(:meth:`unisub_hub.testing.LocalHub.activate`). Tokens never appear in messages.

Packages below the Hub layer (``io`` reads Hub sources) use this module; pushing and pulling
artifacts live in :mod:`unisub_hub.hub`.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager

from .errors import (
    HubAuthError,
    HubConnectionError,
    HubError,
    HubNotFoundError,
    HubUsageError,
    option,
)

__all__ = [
    "api",
    "cache_dir",
    "endpoint",
    "endpoint_settings",
    "hub_errors",
    "is_offline",
    "is_repo_id",
    "matching_files",
    "split_revision",
]


def endpoint() -> str:
    """The Hub this process talks to (``HF_ENDPOINT``)."""
    from huggingface_hub import constants

    return constants.ENDPOINT.rstrip("/")


def endpoint_settings(url: str) -> dict[str, str]:
    """The ``huggingface_hub.constants`` that name the Hub, as they read for ``url``: what a process
    patches to talk to another Hub after the library was imported (a download URL is built from
    the template, not from ``ENDPOINT``)."""
    url = url.rstrip("/")
    return {"ENDPOINT": url, "HUGGINGFACE_CO_URL_TEMPLATE": url + "/{repo_id}/resolve/{revision}/{filename}"}


def cache_dir() -> str:
    """The Hugging Face cache (``HF_HUB_CACHE``, else ``HF_HOME/hub``)."""
    from huggingface_hub import constants

    return constants.HF_HUB_CACHE


def is_offline() -> bool:
    """Whether ``HF_HUB_OFFLINE`` forbids network calls."""
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def api(token: str | None = None):
    """An ``HfApi`` for the current endpoint (the token defaults to ``HF_TOKEN`` / the login)."""
    from huggingface_hub import HfApi

    return HfApi(endpoint=endpoint(), token=token)


def split_revision(spec: str) -> tuple[str, str | None]:
    """``"org/name@rev"`` -> ``("org/name", "rev")``; the repo id is checked by ``huggingface_hub``'s own rules.

    Raises:
        HubUsageError: not ``org/name`` (a namespace is required), or a name the Hub refuses.
    """
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    repo_id, _, revision = spec.partition("@")
    try:
        validate_repo_id(repo_id)
    except HFValidationError:
        raise HubUsageError(f"{spec}: not a Hub repo id (expected org/name[@revision])", repo_id=repo_id) from None
    if repo_id.count("/") != 1:
        raise HubUsageError(f"{spec}: not a Hub repo id (expected org/name[@revision])", repo_id=repo_id)
    return repo_id, revision or None


def is_repo_id(spec: str) -> bool:
    """Whether ``spec`` reads as ``org/name[@revision]`` (the rule :func:`split_revision` applies)."""
    try:
        split_revision(spec)
    except HubUsageError:
        return False
    return True


def matching_files(names: Iterable[str], patterns: Sequence[str], *, top_level: bool = False) -> list[str]:
    """The repo file names to fetch: those matching ``patterns`` whose path stays inside the folder.

    A repo listing is not trusted: a name that is absolute, holds a ``..`` segment or a
    backslash (or, with ``top_level``, any folder) is left out, so it reaches neither the
    downloader (which would raise on it) nor the disk.
    """

    def safe(name: str) -> bool:
        parts = name.split("/")
        return (
            bool(name)
            and "\\" not in name
            and not name.startswith("/")
            and all(part not in {"", ".", ".."} for part in parts)
            and (len(parts) == 1 or not top_level)
        )

    return sorted(
        name for name in names if safe(name) and any(fnmatch.fnmatchcase(name, pattern) for pattern in patterns)
    )


@contextmanager
def hub_errors(what: str) -> Iterator[None]:
    """Turn ``huggingface_hub`` and network exceptions into :class:`HubError` naming ``what``.

    Anything not in :func:`_translated`'s table is a bug, and propagates as itself.
    """
    try:
        yield
    except Exception as error:
        translated = _translated(what, error)
        if translated is None:
            raise
        raise translated from None


def _translated(what: str, error: Exception) -> HubError | None:
    """The one-line error for ``error``: the first row of the table whose class names it bears (subclasses
    come before their bases); ``None`` for anything else, a bug."""
    where = endpoint()
    names = _error_names(error)
    if "HfHubHTTPError" in names and not names & _SPECIFIC_HUB_ERRORS:
        status = error.response.status_code if getattr(error, "response", None) is not None else None  # type: ignore[attr-defined]
        if status in (401, 403):
            return HubAuthError(f"{what}: unauthorized on {where} (HTTP {status}): check HF_TOKEN or {option('token')}")
        return HubError(f"{what}: the Hub answered HTTP {status}: {_first_line(error)}")
    table: list[tuple[set[str], type[HubError], str]] = [
        ({"GatedRepoError"}, HubAuthError, "gated repository; accept its terms on the Hub and set HF_TOKEN"),
        (
            {"RepositoryNotFoundError"},
            HubNotFoundError,
            f"repository not found on {where} (or private: set HF_TOKEN or {option('token')})",
        ),
        ({"RevisionNotFoundError"}, HubNotFoundError, f"revision not found on {where}"),
        (
            {"LocalEntryNotFoundError"},
            HubConnectionError,
            f"cannot reach {where} and nothing is cached (network down?)",
        ),
        ({"EntryNotFoundError"}, HubNotFoundError, f"file not found on {where} ({_first_line(error)})"),
        (
            {"NotASafetensorsRepoError"},
            HubNotFoundError,
            f"no safetensors weights found on {where} (no such repo, or not a safetensors model)",
        ),
        (
            {"SafetensorsParsingError"},
            HubError,
            f"its safetensors header cannot be read ({_first_line(error)})",
        ),
        ({"OfflineModeIsEnabled"}, HubConnectionError, "HF_HUB_OFFLINE is set and this is not stored locally"),
        (  # the only text we send that a user types whole is the token, in a header
            {"UnicodeEncodeError"},
            HubAuthError,
            f"the token holds characters an HTTP header cannot carry (non-ASCII); check HF_TOKEN or {option('token')}",
        ),
        (
            {"JSONDecodeError"},
            HubError,
            f"{where} answered with something that is not JSON (not a Hub API, or a proxy's error page); "
            "nothing was changed here",
        ),
        (
            _BROKEN_TRANSFER,
            HubConnectionError,
            f"the connection to {where} broke off mid-transfer ({_first_line(error)}); try again",
        ),
        (_NETWORK_ERRORS, HubConnectionError, f"cannot reach {where} (network down?)"),
    ]
    for matches, kind, message in table:
        if names & matches:
            return kind(f"{what}: {message}")
    return None


_SPECIFIC_HUB_ERRORS = {
    "GatedRepoError",
    "RepositoryNotFoundError",
    "RevisionNotFoundError",
    "EntryNotFoundError",
    "LocalEntryNotFoundError",
}
"""HTTP errors the table below words better than by their status."""

_NETWORK_ERRORS = {
    "ConnectError",
    "ConnectTimeout",
    "TimeoutException",
    "NetworkError",
    "ConnectionError",
    "ReadTimeout",
}
_BROKEN_TRANSFER = {"RemoteProtocolError", "ProtocolError", "ChunkedEncodingError", "IncompleteRead"}
"""The server closed or garbled a connection it had accepted (it died, or cut a download short)."""


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0] if text else error.__class__.__name__


def _error_names(error: BaseException) -> set[str]:
    """Class names along the error's MRO: httpx, requests and urllib3 are matched by name, not imported."""
    return {cls.__name__ for cls in type(error).__mro__}
