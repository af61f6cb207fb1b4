"""The demo's report folder: ``report.md``, ``numbers.json`` and PNG plots."""

from __future__ import annotations

import json
import math
from dataclasses import asdict
from pathlib import Path
from typing import Any

from ..format.kinds import source_kind
from ..pipeline.plots import plot_accuracy_vs_k, plot_accuracy_vs_parameters, plot_scree
from .results import CollectionResult, DemoResult

__all__ = ["collection_rows", "write_report"]

Z95 = 1.96
"""Two-sided 95 % normal quantile, for the intervals of accuracy differences."""


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
    saved = sizes["original_bytes"] - sizes["coefficients_bytes"]
    if saved > 0:
        even = sizes["basis_bytes"] / saved
        rows.append(
            [
                "break-even",
                f"the basis weighs as much as {even:,.1f} originals: from {math.floor(even) + 1} tasks on, basis + "
                "coefficient files take less than the originals",
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
                f"{value:.3f} ({collection.null_label} {null:.3f})" if null is not None else f"{value:.3f}",
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
    examples = int(trained["trained universal"].get("examples", 0))
    lines += [
        "",
        f"**Reading.** Trained with the same steps and learning rate (one training seed per task, {examples:,} test "
        f"examples over the held-out tasks; each interval is 95 %), the universal directions against random ones "
        f"of the same shape: {_margin(universal, random, examples)}; against the head alone: "
        f"{_margin(universal, head, examples)}; against the original fine-tune: "
        f"{_margin(universal, trained['original']['accuracy'], examples)}, "
        f"with {trained['original']['parameters'] / max(trained['trained universal']['parameters'], 1):.0f}x "
        "fewer trainable parameters.",
        "",
        f"![trained]({plot.name})",
        "",
    ]
    return lines


def _margin(first: float, second: float, examples: int) -> str:
    """``first - second`` in points with its 95 % interval, and "within noise" when that holds 0.

    The interval treats the two accuracies as independent proportions over ``examples`` each,
    which is wider than a paired test would be: a margin called real here is real.
    """
    if examples <= 0:
        return f"{(first - second) * 100:+.1f} points"
    half = Z95 * math.sqrt((first * (1 - first) + second * (1 - second)) / examples)
    difference = first - second
    words = "within noise" if abs(difference) <= half else ("ahead" if difference > 0 else "behind")
    low, high = (difference - half) * 100, (difference + half) * 100
    return f"{difference * 100:+.1f} points (95 % interval {low:+.1f} to {high:+.1f}: {words})"


def _served(served: dict[str, Any]) -> list[str]:
    """The serving step: one request whose rows name different tasks, and what came back."""
    if not served:
        return []
    lines = [
        "## Served",
        "",
        f"`{served['command']}` started in {served['start_seconds']:.1f} s on a loopback port. One `POST "
        f"/v1/classify` gave each row its own task ({len(served['results'])} rows, {served['request_ms']:.0f} ms); "
        f"every row's logits are within {served['max_abs_logit_difference']:.1e} of the same task computed in "
        "the library.",
        "",
        "| text | task | label | scores |",
        "|---|---|---|---|",
    ]
    for row, result in zip(served["request"]["inputs"], served["results"], strict=True):
        scores = ", ".join(f"{s:.3f}" for s in result["scores"])
        lines.append(f"| {row['text']} | {result['task']} | {result['label']} | {scores} |")
    return [*lines, ""]


def _generation(generation: dict[str, Any]) -> list[str]:
    """The causal-LM journey: ``eval``'s table for one held-out generation task, and ``openai``'s completions."""
    if not generation:
        return []
    task = generation["eval_task"]
    lines = [
        "## Generation tasks (causal LM)",
        "",
        f"{generation['tasks']} LoRA generation tasks of the example GPT-2 (pretrained here on the example "
        f"sentences, each tagged with what it is about); held out: {', '.join(generation['heldout'])}. Each task "
        f"answers `<sentence> =>` with the word of its label. `unisub-hub eval` on {task}'s test rows (loss per "
        "completion token, lower is better):",
        "",
        "| model | loss | perplexity | tokens |",
        "|---|---|---|---|",
    ]
    for label, scores in generation["eval"].items():
        lines.append(f"| {label} | {scores['loss']:.3f} | {scores['perplexity']:.2f} | {scores['tokens']} |")
    lines += [
        "",
        f"Learned as coefficients: {generation['trainable_parameters']:,} trainable numbers against the LoRA's "
        f"{generation['lora_parameters']:,}.",
    ]
    if generation.get("heldout_warning"):
        lines += ["", f"Build warning: {generation['heldout_warning']}"]
    served = generation["served"]
    lines += [
        "",
        f"`{served['command']}` (the held-out tasks projected, and the one learned as coefficients), then the "
        "`openai` client (`completions.create`, temperature 0, one token); "
        f"models listed: {', '.join(served['models'])}. The served words are "
        f"{'the same as' if served['same_as_library'] else 'NOT the same as'} the library's greedy next words.",
        "",
        "| task | prompt | expected | served |",
        "|---|---|---|---|",
    ]
    for answer in served["completions"]:
        lines.append(f"| {answer['task']} | {answer['prompt']} | {answer['expected']} | {answer['served']} |")
    return [*lines, ""]


def _go_on(places: dict[str, str]) -> list[str]:
    """Where the demo's base model, basis and tasks are, and the commands that go on from them."""
    if not places:
        return []
    return [
        "## Go on from here",
        "",
        f"- base model: `{places['base']}`",
        f"- LoRA basis: `{places['basis']}`",
        f"- a held-out task (coefficients): `{places['task']}`",
        "",
        "```bash",
        f"unisub-hub validate {places['basis']}",
        f"unisub-hub eval {places['task']} {places['basis']} base --base {places['base']} --data YOUR.jsonl",
        f"unisub-hub train {places['basis']} --base {places['base']} --data YOUR.jsonl --out my-task",
        f"unisub-hub serve {places['basis']} --base {places['base']} --task demo={places['task']}",
        "```",
        "",
    ]


def write_report(result: DemoResult) -> Path:
    out = result.report_dir
    out.mkdir(parents=True, exist_ok=True)
    lines = ["# unisub-hub demo report", ""]
    lines += [
        f"Total time {result.seconds['total']:.0f} s (LoRA collection {result.seconds['lora']:.0f} s, digits zoos "
        f"{result.seconds['digits']:.0f} s, generation tasks {result.seconds.get('generation', 0):.0f} s).",
        "",
    ]
    for collection in result.collections:
        scree = plot_scree(
            collection.scree,
            out / f"scree-{collection.name}.png",
            title=f"{collection.name}: explained variance vs {collection.null_label}",
            k=collection.k,
            null_label=collection.null_label,
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
        lines += [
            "",
            _reading(collection),
            "",
            f"![scree]({scree.name})",
            "",
            f"The dotted line marks k = {collection.k}, the directions the basis keeps; dashed lines are the "
            f"{collection.null_label}. A curve ends where the collection has no more directions: a mode has at most "
            "as many as its members hold (members x rank for LoRA updates, one fewer once centred).",
            "",
            f"![accuracy]({accuracy.name})",
            "",
        ]
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
    lines += _served(result.served)
    lines += _generation(result.generation)
    lines += _go_on(result.places)
    (out / "report.md").write_text("\n".join(lines))
    numbers = {
        "seconds": result.seconds,
        "hub": hub,
        "served": result.served,
        "generation": result.generation,
        "collections": [asdict(c) for c in result.collections],
    }
    (out / "numbers.json").write_text(json.dumps(numbers, indent=2, default=str) + "\n")
    return out / "report.md"
