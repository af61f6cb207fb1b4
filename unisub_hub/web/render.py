"""Pages as HTML: one Jinja2 environment (autoescaped) for the live site and the static export.

The two differ only in how a page links to another (:class:`Links`), so an exported site is
the live one, frozen.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import quote

from jinja2 import Environment, PackageLoader, select_autoescape

from .svg import spectrum_svg

__all__ = ["LIVE", "STATIC", "Links", "render"]

Links = Callable[..., str]
"""``link('front')`` or ``link('basis' | 'task', ref)``: where that page is."""


def LIVE(kind: str, ref: str = "") -> str:  # noqa: N802 (a constant, callable)
    return "/" if kind == "front" else f"/{kind}/{quote(ref, safe=':@')}"


def STATIC(kind: str, ref: str = "") -> str:  # noqa: N802
    return "index.html" if kind == "front" else f"{kind}-{static_name(ref)}.html"


def static_name(ref: str) -> str:
    """A file name for a reference: ``name:3`` -> ``name-3``; anything but [A-Za-z0-9._-] becomes ``_``."""
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in ref.replace(":", "-"))


_ENV = Environment(loader=PackageLoader("unisub_hub.web", "templates"), autoescape=select_autoescape(default=True))
_ENV.filters["size"] = lambda n: _size(n)


def _size(count: int | None) -> str:
    if count is None:
        return ""
    value = float(count)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GiB"


def render(template: str, page: dict[str, Any], *, link: Links, home_label: str, static: bool = False) -> str:
    extra: dict[str, Any] = {}
    if template == "basis.html":
        extra["plots"] = [
            spectrum_svg(
                values,
                kept=int(layer["ranks"].get(mode, 0)),
                null_at_kept=layer["null_explained_variance"].get(mode),
                label=f"{layer['name']} mode {mode}",
            )
            for layer in page["layers"]
            for mode, values in sorted(layer["spectra"].items())
        ]
    return _ENV.get_template(template).render(page=page, link=link, home_label=home_label, static=static, **extra)


def render_error(status: int, message: str, *, link: Links, home_label: str) -> str:
    return _ENV.get_template("error.html").render(status=status, message=message, link=link, home_label=home_label)
