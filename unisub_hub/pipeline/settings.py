"""Settings of an operation, declared once: each field of an options dataclass says how a user sets it.

As a peft tuner's config class is the one place a tuner's settings live, an operation's
options dataclass (:class:`~unisub_hub.pipeline.build.BuildSettings`,
:class:`~unisub_hub.pipeline.train.TrainOptions`, ...) is the one place its settings are
spelled: name, default, help, allowed values. :func:`setting` attaches that description to a
field; the command line builds its options from it (:func:`unisub_hub.cli.options.settings_options`)
and the library reads the same defaults. Nothing here imports click.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import Field, dataclass, field, fields
from typing import Any

__all__ = ["Setting", "parse_size", "setting", "settings_of"]


@dataclass(frozen=True)
class Setting:
    """How a user sets one field (the command line's flag, help and checks)."""

    help: str
    flag: str | None = None
    """The flag, when it is not ``--`` plus the field name with dashes; ``--x/--no-x`` for a switch."""
    choices: Sequence[str] | None = None
    minimum: float | None = None
    maximum: float | None = None
    minimum_open: bool = False
    switch: bool = False
    """A boolean flag (``--allow-pickle``) or a ``--x/--no-x`` pair when ``flag`` names both."""
    multiple: bool = False
    number: type | None = None
    """``int`` or ``float`` for a numeric option (implied by the default when it is a number)."""
    parse: Callable[[str], Any] | None = None
    """Turns the typed text into the value (``ValueError`` for bad text)."""
    metavar: str | None = None
    from_parent: bool = False
    """Decided by the parent basis when a basis grows (``build --update``)."""
    show_default: bool = True


def setting(default: Any, help: str, **how: Any) -> Any:
    """A dataclass field whose value users set as :class:`Setting` says."""
    return field(default=default, metadata={"setting": Setting(help, **how)})


def settings_of(options: type) -> list[tuple[Field, Setting]]:
    """The fields of an options dataclass that users set, with how."""
    return [(item, item.metadata["setting"]) for item in fields(options) if "setting" in item.metadata]


_UNITS = {
    "": 1,
    "b": 1,
    "k": 1000,
    "kb": 1000,
    "m": 1000**2,
    "mb": 1000**2,
    "g": 1000**3,
    "gb": 1000**3,
    "kib": 1024,
    "mib": 1024**2,
    "gib": 1024**3,
}


def parse_size(value: str | int) -> int:
    """``1000000``, ``500MB``, ``2GiB`` as a number of bytes.

    Raises:
        ValueError: not a size, or under one byte.
    """
    if isinstance(value, int):
        return value
    text = value.strip().lower().replace("_", "")
    number = text.rstrip("abcdefghijklmnopqrstuvwxyz")
    unit = text[len(number) :]
    try:
        size = int(float(number) * _UNITS[unit])
    except (ValueError, KeyError, OverflowError):  # "1e400" is inf: no number of bytes
        raise ValueError(f"{value!r} is not a size in bytes (e.g. 500000000, 500MB, 2GiB)") from None
    if size < 1:
        raise ValueError(f"{value!r} must be at least 1 byte")
    return size
