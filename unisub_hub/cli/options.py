"""Options shared by several commands, as reusable decorators, and the options an operation's
settings dataclass declares (:mod:`unisub_hub.pipeline.settings`)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import click

__all__ = [
    "device_option",
    "host_option",
    "json_option",
    "parse_bytes",
    "port_option",
    "register_option",
    "settings_from",
    "settings_options",
    "shard_size_option",
]

F = Callable[..., Any]

json_option: Callable[[F], F] = click.option(
    "--json", "as_json", is_flag=True, help="Print the result as JSON on stdout."
)

register_option: Callable[[F], F] = click.option(
    "--register/--no-register", default=True, show_default=True, help="Record the result in the registry (see --home)."
)

host_option: Callable[[F], F] = click.option(
    "--host", default="127.0.0.1", show_default=True, help="Address to listen on (loopback unless told)."
)

port_option: Callable[[F], F] = click.option(
    "--port", type=click.IntRange(0, 65535), default=8000, show_default=True, help="0 picks a free port."
)

device_option: Callable[[F], F] = click.option(
    "--device",
    type=click.Choice(["auto", "cpu", "cuda"]),
    default="auto",
    show_default=True,
    help="Where the linear algebra runs (auto: CUDA when present).",
)


def parse_bytes(ctx: click.Context | None, param: click.Parameter | None, value: str | int | None) -> int | None:
    """Read ``1000000``, ``500MB``, ``2GiB`` as a number of bytes."""
    from ..pipeline.settings import parse_size

    if value is None:
        return None
    try:
        return parse_size(value)
    except ValueError as error:
        raise click.BadParameter(str(error)) from None


def shard_size_option(default: str) -> Callable[[F], F]:
    return click.option(
        "--shard-size",
        callback=parse_bytes,
        default=default,
        show_default=True,
        help="Bytes per tensor file above which output is sharded HF-style (units: KB, MB, GB, KiB, MiB, GiB).",
    )


def _parsed(parse: Callable[[str], Any]) -> Callable[[click.Context, click.Parameter, Any], Any]:
    def callback(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
        if value is None or not isinstance(value, str):
            return value
        try:
            return parse(value)
        except ValueError as error:
            raise click.BadParameter(str(error)) from None

    return callback


def _number_type(how: Any, default: Any) -> click.ParamType | None:
    if how.parse is not None:  # typed as text, turned into the value by the parser
        return None
    number = how.number or (
        type(default) if isinstance(default, int | float) and not isinstance(default, bool) else None
    )
    if number is int:
        return click.IntRange(min=how.minimum, max=how.maximum)
    if number is float:
        return click.FloatRange(min=how.minimum, max=how.maximum, min_open=how.minimum_open)
    return None


def settings_options(options: type, *, skip: Iterable[str] = ()) -> Callable[[F], F]:
    """The click options of every field of ``options`` that users set (see :func:`setting`).

    Each option's parameter is the field's name, so :func:`settings_from` rebuilds the dataclass
    from the command's keyword arguments.
    """
    from dataclasses import MISSING

    from ..pipeline.settings import settings_of

    skipped = set(skip)
    decorators = []
    for item, how in settings_of(options):
        if item.name in skipped:
            continue
        default = item.default if item.default is not MISSING else None
        flag = how.flag or "--" + item.name.replace("_", "-")
        kwargs: dict[str, Any] = {"help": how.help, "show_default": how.show_default and default not in (None, ())}
        if how.metavar:
            kwargs["metavar"] = how.metavar
        if how.switch:  # a lone flag, or an --x/--no-x pair (which click reads as a flag by itself)
            kwargs.update(default=default, **({} if "/" in flag else {"is_flag": True}))
        elif how.multiple:
            kwargs.update(multiple=True, default=tuple(default or ()))
        else:
            kwargs["default"] = default
            if how.choices is not None:
                kwargs["type"] = click.Choice(list(how.choices))
            elif (number := _number_type(how, default)) is not None:
                kwargs["type"] = number
            if how.parse is not None:  # typed as text (whatever the default's type), parsed by the setting
                kwargs.update(type=click.STRING, callback=_parsed(how.parse))
        decorators.append(click.option(flag, item.name, **kwargs))

    def apply(function: F) -> F:
        for decorator in reversed(decorators):
            function = decorator(function)
        return function

    return apply


def settings_from(options: type, params: dict[str, Any], **overrides: Any) -> Any:
    """``options`` built from a command's keyword arguments (the fields it declares), taking them
    out of ``params``, and ``overrides`` on top."""
    from ..pipeline.settings import settings_of

    values = {item.name: params.pop(item.name) for item, _ in settings_of(options) if item.name in params}
    return options(**{**values, **overrides})
