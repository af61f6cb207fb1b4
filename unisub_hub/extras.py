"""Optional dependencies: which extra installs each, and one clear line when it is missing.

The core (build, project, materialize, registry, Hub) needs torch, safetensors and the
registry's libraries only; training, scoring, serving and the web view need more. A command
that needs a missing package says which ``pip install`` brings it, instead of a traceback.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from .errors import MissingDependencyError

__all__ = ["EXTRAS", "require"]

EXTRAS: dict[str, str] = {
    "transformers": "train",
    "peft": "train",
    "scipy": "train",
    "fastapi": "serve",
    "uvicorn": "serve",
    "prometheus_client": "serve",
    "jinja2": "serve",
    "distributed": "dask",
    "matplotlib": "demo",
}
"""Module -> the extra of ``unisub-hub`` that installs it."""


def require(module: str, needed_for: str) -> ModuleType:
    """Import ``module``, or say in one line which extra to install.

    Raises:
        MissingDependencyError: the module (or one it needs) cannot be imported.
    """
    try:
        return importlib.import_module(module)
    except ImportError as error:
        extra = EXTRAS.get(module, "demo")
        raise MissingDependencyError(
            f"{needed_for} needs {module} ({error.name or module} is missing): pip install 'unisub-hub[{extra}]'",
            module=module,
            extra=extra,
        ) from None
