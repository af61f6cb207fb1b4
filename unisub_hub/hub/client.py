"""One place that talks to ``huggingface_hub``: the client, and its errors as one-line messages.

The endpoint is read from ``HF_ENDPOINT`` at call time (not at import), so a local Hub
started after ``huggingface_hub`` was imported is still used. ``HF_TOKEN``, ``HF_HOME`` and
``HF_HUB_OFFLINE`` are honoured by the library itself. Tokens never appear in messages.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

from ..errors import (
    HubAuthError,
    HubConnectionError,
    HubError,
    HubNotFoundError,
    HubUsageError,
)

__all__ = ["api", "cache_dir", "endpoint", "hub_errors", "is_offline", "split_revision"]

_DEFAULT_ENDPOINT = "https://huggingface.co"


def endpoint() -> str:
    return os.environ.get("HF_ENDPOINT", _DEFAULT_ENDPOINT).rstrip("/")


def cache_dir() -> str:
    """The Hugging Face cache, from ``HF_HUB_CACHE`` or ``HF_HOME`` as set now (the library reads them once)."""
    if hub_cache := os.environ.get("HF_HUB_CACHE"):
        return hub_cache
    home = os.environ.get("HF_HOME") or os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "huggingface")
    return os.path.join(home, "hub")


def is_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}


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


@contextmanager
def hub_errors(what: str) -> Iterator[None]:
    """Turn ``huggingface_hub`` and network exceptions into :class:`HubError` naming ``what``."""
    from huggingface_hub.errors import (
        EntryNotFoundError,
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        OfflineModeIsEnabled,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    try:
        yield
    except GatedRepoError:
        raise HubAuthError(f"{what}: gated repository; accept its terms on the Hub and set HF_TOKEN") from None
    except RepositoryNotFoundError:
        raise HubNotFoundError(f"{what}: repository not found on {endpoint()} (or private: set HF_TOKEN or --token)") from None
    except RevisionNotFoundError:
        raise HubNotFoundError(f"{what}: revision not found on {endpoint()}") from None
    except EntryNotFoundError as error:
        raise HubNotFoundError(f"{what}: file not found on {endpoint()} ({_first_line(error)})") from None
    except OfflineModeIsEnabled:
        raise HubConnectionError(f"{what}: HF_HUB_OFFLINE is set and this is not stored locally") from None
    except LocalEntryNotFoundError:
        raise HubConnectionError(f"{what}: cannot reach {endpoint()} and nothing is cached (network down?)") from None
    except HfHubHTTPError as error:
        status = error.response.status_code if error.response is not None else None
        if status in (401, 403):
            raise HubAuthError(f"{what}: unauthorized on {endpoint()} (HTTP {status}): check HF_TOKEN or --token") from None
        raise HubError(f"{what}: the Hub answered HTTP {status}: {_first_line(error)}") from None
    except OSError as error:  # httpx/requests connection errors derive from OSError or wrap it
        if _is_network_error(error):
            raise HubConnectionError(f"{what}: cannot reach {endpoint()} (network down?)") from None
        raise
    except Exception as error:
        if _is_network_error(error):
            raise HubConnectionError(f"{what}: cannot reach {endpoint()} (network down?)") from None
        raise


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0] if text else error.__class__.__name__


def _is_network_error(error: BaseException) -> bool:
    names = {cls.__name__ for cls in type(error).__mro__}
    return bool(names & {"ConnectError", "ConnectTimeout", "TimeoutException", "NetworkError", "ConnectionError", "ReadTimeout"})
