"""The merge methods by name: a new method is one class and one line here."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

from ..errors import MergeError, option
from .base import MergeMethod
from .dare import Dare
from .iso import Iso
from .linear import Linear
from .ties import Ties

__all__ = ["METHODS", "method_named"]

METHODS: dict[str, Callable[..., MergeMethod]] = {
    "linear": Linear,
    "ties": Ties,
    "dare-linear": partial(Dare, sign_consensus=False),
    "dare-ties": partial(Dare, sign_consensus=True),
    "iso": Iso,
}
"""Method name -> what makes it from its parameters (``density``, ``seed``)."""

TAKES: dict[str, tuple[str, ...]] = {
    "linear": (),
    "ties": ("density",),
    "dare-linear": ("density", "seed"),
    "dare-ties": ("density", "seed"),
    "iso": (),
}
"""The parameters each method takes (the rest are not its business)."""


def method_named(name: str, **parameters: Any) -> MergeMethod:
    """The method registered as ``name``, made with the parameters it takes.

    Raises:
        MergeError: no such method, or a parameter it does not take.
    """
    try:
        make = METHODS[name]
    except KeyError:
        raise MergeError(f"unknown {option('method')} {name!r}: use one of {', '.join(METHODS)}") from None
    unused = sorted(key for key, value in parameters.items() if value is not None and key not in TAKES[name])
    if unused:
        raise MergeError(f"{option('method')} {name} does not take {', '.join(option(key) for key in unused)}")
    return make(**{key: value for key, value in parameters.items() if value is not None})
