"""``merge``: tasks of one basis combined into one coefficient set, data-free.

The coefficients are merged by a method of :mod:`unisub_hub.merge`. Passthrough tensors
(heads, a checkpoint task's norms and embeddings) follow ``heads``:

- ``average``: the weighted average, only when every task has the same tensors, shapes and
  label names; never for LoRA factors of modules outside the basis (averaging ``B`` and
  ``A`` apart is not averaging ``B A``);
- ``first``: the first task's;
- ``none``: none (the base model's apply at ``materialize --base``).

By default tasks whose passthrough tensors are all equal keep them, and tasks whose differ
keep none: nothing is averaged unless asked. The result has lineage ``merged`` and records
its sources (``merged_from``: content id, name, weight) and the method and its parameters.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..constants import COEFFICIENTS_FORMAT
from ..errors import MergeError, option
from ..format import BasisArtifact, CoefficientSet, check_artifact_output, save_coefficients
from ..format.checks import check_pair
from ..format.common import safe_name
from ..format.kinds import source_kind
from ..merge import merge_coefficients, method_named

__all__ = ["HEAD_RULES", "MergeOutcome", "head_rule", "merge"]

HEAD_RULES = ("average", "first", "none")


@dataclass
class MergeOutcome:
    coefficients: CoefficientSet
    method: dict[str, Any]
    heads: str


def check_same_basis(tasks: Sequence[CoefficientSet]) -> str:
    """The content id of the basis every task refers to.

    Raises:
        MergeError: tasks of different bases (they are moved onto one with ``rebase``).
    """
    bases = list(dict.fromkeys(task.basis_id for task in tasks))
    if len(bases) > 1:
        listed = ", ".join(f"{task.manifest['name']} -> {task.basis_id[:19]}..." for task in tasks)
        raise MergeError(
            f"the tasks refer to {len(bases)} different bases ({listed}); merging needs one: move them onto one "
            "with `unisub-hub rebase TASK --basis BASIS` first"
        )
    return bases[0]


def merge(
    tasks: Sequence[CoefficientSet],
    basis: BasisArtifact,
    out: str | Path,
    *,
    method: str = "linear",
    weights: Sequence[float] | None = None,
    density: float | None = None,
    seed: int | None = None,
    heads: str | None = None,
    name: str | None = None,
    repo_ids: Sequence[str | None] | None = None,
    tuned: dict[str, Any] | None = None,
    command: str | None = None,
) -> MergeOutcome:
    """Merge ``tasks`` (of ``basis``) into a coefficient set at ``out``.

    Args:
        weights: one per task (default: equal, summing to 1).
        density: kept share for ``ties`` and ``dare-*``; ``seed`` the draws of ``dare-*``.
        heads: ``average``, ``first`` or ``none`` (default: see the module docstring).
        repo_ids: where each task lives on the Hub, when known (the card's model tree).
        tuned: how ``weights`` were learned (:func:`~unisub_hub.pipeline.tune.tune_weights`), recorded
            with the method's parameters.

    Raises:
        MergeError: other bases, bad weights or parameters, or heads that cannot be merged as asked.
        ArtifactExistsError: ``out`` exists.

    Example:
        >>> merge([load_coefficients("a"), load_coefficients("b")], load_basis("basis"), "ab", method="ties")
    """
    check_artifact_output(out, COEFFICIENTS_FORMAT)
    check_same_basis(tasks)
    for task in tasks:
        check_pair(task, basis)
    weights = list(weights) if weights is not None else [1.0 / len(tasks)] * len(tasks)
    merger = method_named(method, density=density, seed=seed)
    layers = tasks[0].layer_names
    merged = merge_coefficients(
        [{layer: task.coefficient(layer) for layer in layers} for task in tasks],
        weights,
        merger,
        centered=bool(basis.manifest["centered"]),
    )
    for layer, value in merged.items():
        if not bool(torch.isfinite(value).all()):
            raise MergeError(f"layer {layer}: the merged coefficients hold NaN or Inf; nothing written")
    rule, passthrough, reasons = _passthrough(tasks, weights, heads)
    first = tasks[0].manifest
    kinds = {entry["name"]: entry["lora_kind"] for entry in first["layers"] if "lora_kind" in entry}
    bases = {layer: basis.layer(layer, dtype=torch.float64) for layer in layers}
    fields, lora = source_kind(basis.manifest).computed_fields(bases, merged, lora_kinds=kinds, block=first.get("lora"))
    parameters = {**merger.parameters(), "weights": weights, "heads": rule, **({"tuned": tuned} if tuned else {})}
    sources = [
        {"content_id": task.content_id, "name": task.manifest["name"], "weight": weight, "repo_id": repo}
        for task, weight, repo in zip(tasks, weights, repo_ids or [None] * len(tasks), strict=True)
    ]
    saved = save_coefficients(
        out,
        {layer: value.float() for layer, value in merged.items()},
        passthrough,
        name=name or safe_name(Path(out).name),
        basis_manifest=basis.manifest,
        lora=lora,
        layer_extras=fields,
        passthrough_reasons=reasons,
        command=command,
        lineage="merged",
        merged_from=sources,
        merge=parameters,
        config=_config(tasks, rule),
    )
    return MergeOutcome(saved, parameters, rule)


def _same_passthrough(tasks: Sequence[CoefficientSet]) -> bool:
    """Whether every task has the same passthrough tensor names and shapes."""
    names = [task.passthrough_names for task in tasks]
    return all(sorted(n) == sorted(names[0]) for n in names) and all(
        tuple(task.artifact.tensor_info(key)["shape"]) == tuple(tasks[0].artifact.tensor_info(key)["shape"])
        for task in tasks
        for key in names[0]
    )


def head_rule(tasks: Sequence[CoefficientSet], heads: str | None) -> str:
    """The passthrough rule a merge applies: ``heads`` when given, else ``first`` when every task's
    passthrough tensors are equal and ``none`` when they differ (see the module docstring)."""
    if heads is not None:
        return heads
    first = tasks[0]
    identical = _same_passthrough(tasks) and all(
        torch.equal(task.passthrough(key), first.passthrough(key))
        for task in tasks[1:]
        for key in first.passthrough_names
    )
    return "first" if identical else "none"


def _passthrough(
    tasks: Sequence[CoefficientSet], weights: Sequence[float], heads: str | None
) -> tuple[str, dict[str, torch.Tensor], dict[str, str]]:
    """The rule applied, the merged passthrough tensors and their reasons (see the module docstring)."""
    if heads is not None and heads not in HEAD_RULES:
        raise MergeError(f"{option('heads')} {heads!r}: use one of {', '.join(HEAD_RULES)}")
    names = [task.passthrough_names for task in tasks]
    same = _same_passthrough(tasks)
    first = tasks[0]
    reasons = {entry["name"]: entry.get("reason", "") for entry in first.manifest["passthrough"]}
    heads = head_rule(tasks, heads)
    if heads == "none":
        return heads, {}, {}
    if heads == "first":
        return heads, {key: first.passthrough(key) for key in names[0]}, reasons
    if not same:
        raise MergeError(
            f"{option('heads')} average needs the same passthrough tensors in every task; they differ (other "
            f"heads or label sets?): use {option('heads')} first or none"
        )
    factors = [key for key in names[0] if ".lora_" in key]
    if factors:
        raise MergeError(
            f"{option('heads')} average would average LoRA factors apart ({factors[0]}); the mean of B times the "
            f"mean of A is not the mean of B A: use {option('heads')} first or none"
        )
    labels = [(task.manifest.get("config") or {}).get("id2label") for task in tasks]
    if any(label != labels[0] for label in labels):
        raise MergeError(f"{option('heads')} average: the tasks' heads have different label sets")
    total = sum(weights)
    tensors = {}
    for key in names[0]:
        values = [task.passthrough(key) for task in tasks]
        mixed = sum(
            (w * v.double() for w, v in zip(weights, values, strict=True)),
            torch.zeros(values[0].shape, dtype=torch.float64),
        )
        tensors[key] = (mixed / total).to(values[0].dtype)
    return heads, tensors, {key: f"{reason}, averaged" if reason else "averaged" for key, reason in reasons.items()}


def _config(tasks: Sequence[CoefficientSet], heads: str) -> dict[str, Any] | None:
    """The model config the merged set carries: the first task's when the head follows it or all agree."""
    configs = [task.manifest.get("config") for task in tasks]
    if heads == "first" or all(config == configs[0] for config in configs):
        return configs[0]
    return None
