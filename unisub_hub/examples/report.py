"""The demo's report folder: ``report.md``, ``numbers.json`` and PNG plots."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

from ..format.kinds import source_kind
from ..pipeline.plots import plot_accuracy_vs_k, plot_accuracy_vs_parameters, plot_scree
from .results import CollectionResult, DemoResult

__all__ = ["collection_rows", "write_report"]


def collection_rows(collection: CollectionResult) -> list[list[str]]:
    """Rows ``[variant, accuracy]`` plus the size and variance lines, for tables."""
    rows = [[variant, f"{value:.3f}"] for variant, value in collection.accuracy.items()]
    sizes = collection.sizes
    rows.append(["size of the original", f"{sizes['original_bytes'] / 1024:,.1f} KiB"])
    rows.append(
        ["size of the coefficient file", f"{sizes['coefficients_bytes'] / 1024:,.1f} KiB (passthrough included)"]
    )
    rows.append(
        [
            "compression ratio",
            f"{sizes['ratio']:.1f}x (the shared basis, {sizes['basis_bytes'] / 1024:,.0f} KiB, is stored once)",
        ]
    )
    rows.append(
        [
            "held-out relative error (centred)",
            f"{collection.heldout_error:.3f} (of each held-out update, what the basis misses)",
        ]
    )
    for mode, value in collection.explained_variance.items():
        null = collection.null_explained_variance.get(mode)
        rows.append(
            [
                f"explained variance at k, mode {mode}",
                f"{value:.3f} (Gaussian null {null:.3f})" if null is not None else f"{value:.3f}",
            ]
        )
    return rows


def _reading(collection: CollectionResult) -> str:
    """One honest paragraph on what the numbers say, computed from them."""
    accuracy, k = collection.accuracy, collection.k
    universal, original, mean = accuracy[f"universal k={k}"], accuracy["original"], accuracy["mean only"]
    secondary = accuracy.get(f"secondary k={k}", mean)
    kept = max(0.0, 1 - collection.heldout_error**2)
    gap = original - universal
    verdict = (
        f"The universal subspace keeps the held-out members within {gap * 100:.1f} points of their own accuracy"
        if gap <= 0.03
        else f"The held-out members lose {gap * 100:.1f} points against their originals"
    )
    what = "difference from the mean" if source_kind(collection.kind).centered_by_default else "update"
    return (
        f"**Reading the numbers.** {verdict}, at {collection.sizes['ratio']:.0f}x less storage. The top-{k} basis "
        "holds about "
        f"{kept:.0%} of a held-out member's {what}; that share lifts accuracy {(universal - mean) * 100:+.1f} points "
        "over the "
        f"mean alone, while the next {k} (secondary) directions lift it {(secondary - mean) * 100:+.1f}. "
        f"{collection.note}"
    ).strip()


def _trained_section(collection: CollectionResult, out: Path) -> list[str]:
    """The held-out tasks learned on the frozen basis, against the controls: a table, a plot, a reading."""
    trained = collection.trained
    points = {variant: (int(row["parameters"]), row["accuracy"]) for variant, row in trained.items()}
    plot = plot_accuracy_vs_parameters(
        points, out / f"trained-{collection.name}.png", title=f"{collection.name}: learned held-out tasks"
    )
    lines = [
        f"### {collection.name}: held-out tasks learned as coefficients",
        "",
        "| variant | accuracy | parameters per task |",
        "|---|---|---|",
    ]
    lines += [f"| {variant} | {row['accuracy']:.3f} | {int(row['parameters']):,} |" for variant, row in trained.items()]
    universal, random, head = (trained[v]["accuracy"] for v in ("trained universal", "trained random", "head only"))
    gain = universal - random
    verdict = (
        f"the universal directions beat random ones of the same shape by {gain * 100:.1f} points"
        if gain > 0.01
        else f"the universal directions do no better than random ones of the same shape ({gain * 100:+.1f} points)"
    )
    lines += [
        "",
        f"**Reading.** Trained with the same steps and learning rate, {verdict}; against the head alone they add "
        f"{(universal - head) * 100:+.1f} points, and against the original fine-tune they are "
        f"{(universal - trained['original']['accuracy']) * 100:+.1f} "
        f"points with {trained['original']['parameters'] / max(trained['trained universal']['parameters'], 1):.0f}x "
        "fewer trainable parameters.",
        "",
        f"![trained]({plot.name})",
        "",
    ]
    return lines


def write_report(result: DemoResult) -> Path:
    out = result.report_dir
    out.mkdir(parents=True, exist_ok=True)
    lines = ["# unisub-hub demo report", ""]
    lines += [
        f"Total time {result.seconds['total']:.0f} s (LoRA collection {result.seconds['lora']:.0f} s, digits zoos "
        f"{result.seconds['digits']:.0f} s).",
        "",
    ]
    for collection in result.collections:
        scree = plot_scree(
            collection.scree,
            out / f"scree-{collection.name}.png",
            title=f"{collection.name}: explained variance vs Gaussian null",
        )
        refs = {"original": collection.accuracy["original"], "mean only": collection.accuracy["mean only"]}
        accuracy = plot_accuracy_vs_k(
            collection.sweep,
            refs,
            out / f"accuracy-{collection.name}.png",
            title=f"{collection.name}: held-out accuracy",
        )
        lines += [
            f"## {collection.name}",
            "",
            f"Held out: {', '.join(collection.heldout)}. Accuracy is the mean over the held-out members.",
            "",
        ]
        lines += ["| | |", "|---|---|"] + [f"| {a} | {b} |" for a, b in collection_rows(collection)] + [""]
        sweep = collection.sweep
        ks = sorted(sweep["universal"])
        lines += ["| k | " + " | ".join(map(str, ks)) + " |", "|---|" + "---|" * len(ks)]
        for label, points in sweep.items():
            lines.append(f"| {label} | " + " | ".join(f"{points[k]:.3f}" if k in points else "-" for k in ks) + " |")
        lines += ["", _reading(collection), "", f"![scree]({scree.name})", f"![accuracy]({accuracy.name})", ""]
        if collection.trained:
            lines += _trained_section(collection, out)
    hub = result.hub
    lines += [
        "## Through the Hub",
        "",
        f"The LoRA basis and held-out coefficient sets were pushed to a local Hub server; `{hub['task']}` was pulled "
        "into an empty "
        f"registry ({hub['pulled_bytes_with_basis']:,} bytes with its basis; a second task then took "
        f"{hub['pulled_bytes_basis_stored']:,} bytes), "
        f"materialized as a PEFT adapter and scored {hub['materialized_accuracy']:.3f} "
        f"(the local reconstruction of the same task scored {hub['local_accuracy']:.3f}).",
        "",
    ]
    (out / "report.md").write_text("\n".join(lines))
    numbers = {"seconds": result.seconds, "hub": hub, "collections": [asdict(c) for c in result.collections]}
    (out / "numbers.json").write_text(json.dumps(numbers, indent=2, default=str) + "\n")
    return out / "report.md"
