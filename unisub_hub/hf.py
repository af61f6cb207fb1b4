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
import json
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
    """Turn ``huggingface_hub`` and network exceptions into :class:`HubError` naming ``what``."""
    from huggingface_hub.errors import (
        EntryNotFoundError,
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        NotASafetensorsRepoError,
        OfflineModeIsEnabled,
        RepositoryNotFoundError,
        RevisionNotFoundError,
        SafetensorsParsingError,
    )

    try:
        yield
    except GatedRepoError:
        raise HubAuthError(f"{what}: gated repository; accept its terms on the Hub and set HF_TOKEN") from None
    except RepositoryNotFoundError:
        raise HubNotFoundError(
            f"{what}: repository not found on {endpoint()} (or private: set HF_TOKEN or {option('token')})"
        ) from None
    except RevisionNotFoundError:
        raise HubNotFoundError(f"{what}: revision not found on {endpoint()}") from None
    except EntryNotFoundError as error:
        raise HubNotFoundError(f"{what}: file not found on {endpoint()} ({_first_line(error)})") from None
    except NotASafetensorsRepoError:
        raise HubNotFoundError(
            f"{what}: no safetensors weights found on {endpoint()} (no such repo, or not a safetensors model)"
        ) from None
    except SafetensorsParsingError as error:
        raise HubError(f"{what}: its safetensors header cannot be read ({_first_line(error)})") from None
    except OfflineModeIsEnabled:
        raise HubConnectionError(f"{what}: HF_HUB_OFFLINE is set and this is not stored locally") from None
    except LocalEntryNotFoundError:
        raise HubConnectionError(f"{what}: cannot reach {endpoint()} and nothing is cached (network down?)") from None
    except HfHubHTTPError as error:
        status = error.response.status_code if error.response is not None else None
        if status in (401, 403):
            raise HubAuthError(
                f"{what}: unauthorized on {endpoint()} (HTTP {status}): check HF_TOKEN or {option('token')}"
            ) from None
        raise HubError(f"{what}: the Hub answered HTTP {status}: {_first_line(error)}") from None
    except UnicodeEncodeError:  # the only text we send that a user types whole is the token, in a header
        raise HubAuthError(
            f"{what}: the token holds characters an HTTP header cannot carry (non-ASCII); check HF_TOKEN or "
            f"{option('token')}"
        ) from None
    except json.JSONDecodeError:
        raise HubError(
            f"{what}: {endpoint()} answered with something that is not JSON (not a Hub API, or a proxy's error page); "
            "nothing was changed here"
        ) from None
    except Exception as error:  # httpx/requests errors: some derive from OSError, others only from their own base
        if _is_broken_transfer(error):
            raise HubConnectionError(
                f"{what}: the connection to {endpoint()} broke off mid-transfer ({_first_line(error)}); try again"
            ) from None
        if _is_network_error(error):
            raise HubConnectionError(f"{what}: cannot reach {endpoint()} (network down?)") from None
        raise


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0] if text else error.__class__.__name__


def _error_names(error: BaseException) -> set[str]:
    """Class names along the error's MRO: httpx, requests and urllib3 are matched by name, not imported."""
    return {cls.__name__ for cls in type(error).__mro__}


def _is_network_error(error: BaseException) -> bool:
    return bool(
        _error_names(error)
        & {"ConnectError", "ConnectTimeout", "TimeoutException", "NetworkError", "ConnectionError", "ReadTimeout"}
    )


def _is_broken_transfer(error: BaseException) -> bool:
    """The server closed or garbled a connection it had accepted (it died, or cut a download short)."""
    return bool(
        _error_names(error) & {"RemoteProtocolError", "ProtocolError", "ChunkedEncodingError", "IncompleteRead"}
    )
