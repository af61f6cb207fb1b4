"""PNG figures for reports: scree curves against the Gaussian null, accuracy against rank.

matplotlib is an optional dependency (the ``demo`` extra); it is imported here only, with
the non-interactive Agg backend.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..errors import UnisubError

__all__ = ["plot_accuracy_vs_k", "plot_accuracy_vs_parameters", "plot_scree"]


def _pyplot():
    try:
        import matplotlib
    except ImportError:
        raise UnisubError("plots need matplotlib: pip install 'unisub-hub[demo]'") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_scree(
    layers: Sequence[Mapping[str, Any]],
    out: Path,
    *,
    title: str,
    max_layers: int = 12,
    k: int | None = None,
    null_label: str = "null",
) -> Path:
    """Explained variance against ``k`` per layer and mode, with the null dashed and the chosen ``k`` marked.

    ``layers`` entries need ``name`` and ``modes: {mode: {explained_variance_curve, null_explained_variance_curve}}``.
    A curve ends where its stored spectrum ends (a collection has at most as many directions
    as its members hold).
    """
    plt = _pyplot()
    shown = list(layers)[:max_layers]
    cols = min(4, len(shown))
    rows = math.ceil(len(shown) / cols)
    figure, axes = plt.subplots(rows, cols, figsize=(4 * cols, 3.2 * rows), squeeze=False)
    for axis, layer in zip(axes.flat, shown, strict=False):
        for mode, data in layer["modes"].items():
            curve = data.get("explained_variance_curve") or []
            line = axis.plot(range(1, len(curve) + 1), curve, label=f"mode {mode}")[0]
            null = data.get("null_explained_variance_curve")
            if null:
                axis.plot(
                    range(1, len(null) + 1),
                    null,
                    linestyle="--",
                    color=line.get_color(),
                    label=f"mode {mode} {null_label}",
                )
        if k is not None:
            axis.axvline(k, color="grey", linewidth=0.8, linestyle=":", label=f"k = {k}")
        axis.set_title(_short(layer["name"]), fontsize=9)
        axis.set_xlabel("k (directions kept)")
        axis.set_ylabel("explained variance")
        axis.set_ylim(0, 1.02)
        axis.grid(alpha=0.3)
        axis.xaxis.get_major_locator().set_params(integer=True)
    for axis in list(axes.flat)[len(shown) :]:
        axis.set_visible(False)
    handles, labels = axes.flat[0].get_legend_handles_labels()  # one legend for the figure: none covers a curve
    figure.legend(handles, labels, loc="lower center", ncol=min(5, len(labels)), fontsize=8, frameon=False)
    figure.suptitle(title)
    figure.tight_layout(rect=(0, 0.06, 1, 1))
    return _save(plt, figure, out)


def plot_accuracy_vs_k(
    series: Mapping[str, Mapping[int, float]], references: Mapping[str, float], out: Path, *, title: str
) -> Path:
    """Accuracy against rank ``k`` for each reconstruction, with flat reference lines."""
    plt = _pyplot()
    figure, axis = plt.subplots(figsize=(6, 4))
    for label, points in series.items():
        ks = sorted(points)
        axis.plot(ks, [points[k] for k in ks], marker="o", label=label)
    for label, value in references.items():
        axis.axhline(value, linestyle=":", label=f"{label} ({value:.3f})", color="grey" if "mean" in label else "black")
    axis.set_xscale("log", base=2)
    axis.set_xlabel("k (rank per mode)")
    axis.set_ylabel("held-out task accuracy")
    axis.set_title(title)
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
    return _save(plt, figure, out)


def plot_accuracy_vs_parameters(points: Mapping[str, tuple[int, float]], out: Path, *, title: str) -> Path:
    """Accuracy against the number of trainable (or stored) parameters, one labelled point per variant."""
    plt = _pyplot()
    figure, axis = plt.subplots(figsize=(6, 4))
    markers = "osD^vP*X"
    for number, (label, (count, value)) in enumerate(points.items()):  # a legend, not labels that overlap
        marker = markers[number % len(markers)]
        axis.scatter([max(count, 1)], [value], s=45, marker=marker, label=f"{label} ({value:.3f})")
    axis.legend(fontsize=8, loc="best")
    axis.set_xscale("log")
    axis.set_xlabel("trainable parameters per task")
    axis.set_ylabel("held-out task accuracy")
    axis.set_title(title)
    axis.grid(alpha=0.3)
    return _save(plt, figure, out)


def _save(plt, figure, out: Path) -> Path:  # noqa: ANN001 (matplotlib is optional: no types at import)
    if not figure.get_layout_engine():
        figure.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, dpi=90)
    plt.close(figure)
    return out


def _short(name: str) -> str:
    return name if len(name) <= 42 else "..." + name[-39:]
