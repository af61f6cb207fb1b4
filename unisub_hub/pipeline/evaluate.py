"""``eval``: score anything unisub-hub touches on one data file, under the same rules.

A model to score is one of:

- a coefficient set (a folder, registry reference or Hub id): the base with the task attached;
- a basis (the same three): the base plus the basis mean alone, the baseline every report
  needs (for a LoRA basis built uncentred, the mean is zero: the base itself);
- a PEFT adapter folder (``adapter_config.json``): loaded with peft onto the base;
- the word ``base``: the base model as it is.

Classification data gives ``accuracy``, ``loss`` (mean cross entropy) and ``examples``;
causal-LM data gives ``loss`` (the mean over the tokens that carry loss), ``perplexity`` and
``tokens``. Tasks and bases of one basis share one attached model (switching a task costs
nothing); the data is read once. Scores of registered artifacts are recorded in the registry.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..constants import BASIS_FORMAT
from ..engine import resolve_device
from ..errors import FormatError, TrainingDataError, option
from ..format import BasisArtifact, CoefficientSet, load_basis, load_coefficients, read_artifact
from ..format.kinds import source_kind
from ..format.tensorfile import sha256_files
from ..io.peft_adapter import ADAPTER_CONFIG
from ..registry import Registry
from .objectives import BaseModel, Data, load_base, scores
from .validate import check_base_model

__all__ = ["BASE", "EvalOutcome", "Scored", "evaluate"]

BASE = "base"
"""The model name that means the base model as it is."""


@dataclass
class Scored:
    """One model's scores."""

    model: str
    """As the user named it."""
    kind: str
    """``task``, ``basis`` (mean only), ``peft`` or ``base``."""
    metrics: dict[str, Any]
    content_id: str | None = None
    recorded: bool = False
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "kind": self.kind,
            **self.metrics,
            "content_id": self.content_id,
            "recorded": self.recorded,
            "seconds": round(self.seconds, 3),
        }


@dataclass
class EvalOutcome:
    objective: str
    data_sha256: str
    results: list[Scored] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


@dataclass
class _Target:
    spec: str
    kind: str
    path: Path | None = None
    artifact: BasisArtifact | CoefficientSet | None = None

    @property
    def basis_id(self) -> str | None:
        if isinstance(self.artifact, CoefficientSet):
            return self.artifact.basis_id
        return self.artifact.content_id if self.artifact is not None else None


def evaluate(
    models: list[str],
    base: str | Path,
    data: str | Path,
    *,
    registry: Registry | None = None,
    batch_size: int = 16,
    max_examples: int | None = None,
    max_length: int = 512,
    device: str = "auto",
    record: bool = True,
    command: str | None = None,
) -> EvalOutcome:
    """Score each of ``models`` (see the module docstring) on ``data`` with ``base``.

    Args:
        registry: where references are resolved, Hub ids pulled, and scores of registered
            artifacts recorded (default: the one at ``UNISUB_HOME``).
        record: record scores in the registry (a read-only registry records nothing).

    Raises:
        TrainingDataError: bad data, a base that does not load, a model that does not fit it.
        ReferenceNotFoundError: a model that is no folder, registered artifact or Hub id.

    Example:
        >>> outcome = evaluate(["my-task", "my-basis", "base"], "base-model", "test.jsonl")
        >>> [(r.model, r.metrics["loss"]) for r in outcome.results]
    """
    if not models:
        raise TrainingDataError("give at least one model to score (a task, a basis, a PEFT folder or 'base')")
    if batch_size < 1 or (max_examples is not None and max_examples < 1):
        raise TrainingDataError(f"{option('batch_size')} and {option('max_examples')} must be at least 1")
    opened_registry = registry if registry is not None else Registry()
    try:
        targets = [_target(spec, opened_registry) for spec in models]
        given = {t.artifact.content_id: t.artifact for t in targets if isinstance(t.artifact, BasisArtifact)}
        bases = {t.basis_id: _basis_of(t, opened_registry, given) for t in targets if t.basis_id is not None}
        opened = load_base(base, max_length=max_length)
        for basis in bases.values():
            check_base_model(basis.manifest, str(base))
        examples = opened.family.read(data, opened, {}, opened.max_length)
        if max_examples is not None:
            examples.examples = examples.examples[:max_examples]
        outcome = EvalOutcome(examples.objective, sha256_files([Path(data)]), notes=list(opened.notes))
        target_device = resolve_device(device)
        for target, metrics, seconds in _score_all(targets, opened, examples, batch_size, target_device, bases):
            content_id = target.artifact.content_id if target.artifact is not None else None
            scored = Scored(target.spec, target.kind, metrics, content_id, seconds=seconds)
            if record and content_id is not None and _registered(opened_registry, target.kind, content_id):
                scored.recorded = (
                    opened_registry.record_evaluation(
                        content_id,
                        data_sha256=outcome.data_sha256,
                        data_name=Path(data).name,
                        objective=examples.objective,
                        metrics=_recorded(metrics),
                        count=metrics.get("tokens", metrics["examples"]),
                        command=command,
                    )
                    > 0
                )
            outcome.results.append(scored)
        return outcome
    finally:
        if registry is None:
            opened_registry.close()


def _recorded(metrics: dict[str, Any]) -> dict[str, float]:
    return {key: float(metrics[key]) for key in ("accuracy", "loss", "perplexity") if key in metrics}


def _registered(registry: Registry, kind: str, content_id: str) -> bool:
    return registry.find("basis" if kind == "basis" else "task", content_id) is not None


def _target(spec: str, registry: Registry) -> _Target:
    """What a model name stands for (see the module docstring)."""
    from ..hub.resolve import resolve_artifact

    if spec == BASE:
        return _Target(spec, "base")
    path = Path(spec)
    if path.is_dir() and (path / ADAPTER_CONFIG).is_file():
        return _Target(spec, "peft", path)
    folder = resolve_artifact(spec, registry=registry)
    kind = read_artifact(folder).kind
    if kind == BASIS_FORMAT:
        return _Target(spec, "basis", folder, load_basis(folder, known=registry.verified))
    return _Target(spec, "task", folder, load_coefficients(folder, known=registry.verified))


def _basis_of(target: _Target, registry: Registry, given: dict[str, BasisArtifact] | None = None) -> BasisArtifact:
    """A task's basis: one given among the models, else the registry's (by content id)."""
    from ..hub.resolve import open_basis

    assert target.basis_id is not None
    if given and target.basis_id in given:
        return given[target.basis_id]
    try:
        return open_basis(target.basis_id, registry=registry)
    except LookupError:
        raise FormatError(
            f"its basis {target.basis_id[:19]}... is neither among the models given nor registered here: give its "
            "basis too, or pull or register it",
            path=target.spec,
        ) from None


def _score_all(
    targets: list[_Target],
    base: BaseModel,
    data: Data,
    batch_size: int,
    device: torch.device,
    bases: dict[str, BasisArtifact],
) -> Any:
    """``(target, metrics, seconds)`` in the order given; tasks and bases of one basis share one model."""
    from ..adapt import attach

    attached: dict[str, Any] = {}
    for target in targets:
        started = time.perf_counter()
        if target.kind in ("base", "peft"):
            model = base.load_model()
            if target.kind == "peft":
                model = _with_peft(model, target)
            model.to(device)
        else:
            basis_id = target.basis_id
            assert basis_id is not None
            if basis_id not in attached:
                model = base.load_model()
                attached[basis_id] = (model, attach(model, bases[basis_id], heads=base.family.heads(model)))
                model.to(device)
            model, adapter = attached[basis_id]
            name = f"{target.kind}:{target.spec}"
            if name not in adapter.tasks:
                if target.kind == "basis":
                    _check_has_mean(target)
                    adapter.add_task(name, init="zero", train_head=False)
                else:
                    adapter.load_task(target.artifact, name, train_head=False, frozen=True)
            adapter.set_task(name)
        metrics = scores(model, base, data, batch_size=batch_size, device=device)
        yield target, metrics, time.perf_counter() - started


def _check_has_mean(target: _Target) -> None:
    assert target.artifact is not None
    manifest = target.artifact.manifest
    if not source_kind(manifest).adds_to_base and not manifest["centered"]:
        raise FormatError(
            "is an uncentred checkpoint basis: it has no mean to stand for a model (score a task of it instead)",
            path=target.spec,
        )


def _with_peft(model: torch.nn.Module, target: _Target) -> torch.nn.Module:
    from ..extras import require

    require("peft", "scoring a PEFT adapter")
    from peft import PeftModel

    try:
        return PeftModel.from_pretrained(model, str(target.path)).eval()
    except (ValueError, RuntimeError, KeyError, OSError) as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else error.__class__.__name__
        raise TrainingDataError(f"peft cannot load it onto the base model ({first[:200]})", path=target.spec) from None
