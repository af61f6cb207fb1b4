"""What the demo measured, per collection and in all: the data its report is written from."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["CollectionResult", "DemoResult"]


@dataclass
class CollectionResult:
    name: str
    kind: str
    k: int
    sweep: dict[str, dict[int, float]] = field(default_factory=dict)
    accuracy: dict[str, float] = field(default_factory=dict)
    sizes: dict[str, float] = field(default_factory=dict)
    explained_variance: dict[str, float] = field(default_factory=dict)
    null_explained_variance: dict[str, float] = field(default_factory=dict)
    scree: list[dict[str, Any]] = field(default_factory=list)
    heldout: list[str] = field(default_factory=list)
    per_task: dict[str, dict[str, float]] = field(default_factory=dict)
    note: str = ""
    """What the collection is, for reading its numbers."""
    trained: dict[str, dict[str, float]] = field(default_factory=dict)
    """Per variant (original, trained universal, trained random, head only, projected): mean
    held-out ``accuracy`` and ``parameters`` a task trains (or, for the originals and the
    projections, stores)."""
    null_label: str = "Gaussian null"
    """What the null curves are, in the report's words (for LoRA collections: random updates of
    the adapters' rank, the null a low-rank collection must beat)."""
    heldout_error: float = float("nan")
    """Mean over layers of the held-out members' relative error, centred: the share of their
    own update (or of their difference from the mean) that the basis does not capture."""


@dataclass
class DemoResult:
    collections: list[CollectionResult]
    hub: dict[str, Any]
    seconds: dict[str, float]
    report_dir: Path
    places: dict[str, str] = field(default_factory=dict)
    """Where the demo left what a user can go on from: ``base``, ``basis``, ``task``, ``home``."""
    served: dict[str, Any] = field(default_factory=dict)
    """The serving step: the command, the mixed request, the answers and how far their logits
    are from the library's (:func:`~unisub_hub.examples.served.serve_round_trip`)."""
    generation: dict[str, Any] = field(default_factory=dict)
    """The causal-LM journey: ``eval``'s scores of a held-out generation task and the ``openai``
    client's completions (:func:`~unisub_hub.examples.generation_demo.generation_journey`)."""
