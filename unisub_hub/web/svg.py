"""A spectrum plot as inline SVG: cumulative explained variance against rank, with the null.

Drawn from the singular values a basis stores, so a page needs no plotting library and no
asset from elsewhere; the numbers are the plot's only input, and everything in it is escaped
by the template that embeds it.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["spectrum_svg"]

WIDTH, HEIGHT, PAD = 320, 180, 28


def spectrum_svg(singular_values: Sequence[float], *, kept: int, null_at_kept: float | None, label: str) -> str:
    """Cumulative explained variance of ``singular_values`` (a curve), the rank kept (a vertical
    line) and the Gaussian null's explained variance at that rank (a dashed horizontal line)."""
    energy = [value * value for value in singular_values]
    total = sum(energy) or 1.0
    curve, running = [], 0.0
    for value in energy:
        running += value
        curve.append(running / total)
    count = max(len(curve), 1)

    def x(rank: float) -> float:
        return PAD + (WIDTH - 2 * PAD) * (rank / count)

    def y(fraction: float) -> float:
        return HEIGHT - PAD - (HEIGHT - 2 * PAD) * fraction

    points = " ".join(f"{x(rank + 1):.1f},{y(value):.1f}" for rank, value in enumerate(curve))
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="spectrum" width="{WIDTH}" height="{HEIGHT}" '
        f'viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="spectrum of {_attr(label)}">',
        f'<rect x="0" y="0" width="{WIDTH}" height="{HEIGHT}" fill="#ffffff"/>',
        f'<line x1="{PAD}" y1="{y(0)}" x2="{WIDTH - PAD}" y2="{y(0)}" stroke="#888"/>',
        f'<line x1="{PAD}" y1="{y(0)}" x2="{PAD}" y2="{y(1)}" stroke="#888"/>',
        '<polyline class="curve" fill="none" stroke="#1f6feb" stroke-width="2" '
        f'points="{x(0):.1f},{y(0):.1f} {points}"/>',
        f'<line class="kept" x1="{x(kept):.1f}" y1="{y(0)}" x2="{x(kept):.1f}" y2="{y(1)}" stroke="#d29922"/>',
    ]
    if null_at_kept is not None:
        parts.append(
            f'<line class="null" x1="{PAD}" y1="{y(null_at_kept):.1f}" x2="{WIDTH - PAD}" y2="{y(null_at_kept):.1f}" '
            'stroke="#cf222e" stroke-dasharray="4 3"/>'
        )
    parts += [
        f'<text x="{PAD}" y="{PAD - 10}" font-size="11">{_text(label)}: explained variance by rank (k={kept})</text>',
        f'<text x="{WIDTH - PAD}" y="{HEIGHT - 8}" font-size="10" text-anchor="end">rank (of {count})</text>',
        "</svg>",
    ]
    return "".join(parts)


def _text(value: str) -> str:
    return value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _attr(value: str) -> str:
    return _text(value).replace('"', "&quot;")
