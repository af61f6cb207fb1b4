"""What an artifact's ``source_kind`` decides: one object per kind of source.

As :mod:`unisub_hub.engine.modes` is for mode sets, this is the one place that knows how
full checkpoints and LoRA adapters differ once they are in a basis: whether a build centres
and in what precision it sums by default, whether a layer's weight *is* the basis's
reconstruction or is *added* to the base model's, how heads and passthrough tensors are
named in a coefficient set, which per-layer and ``lora`` manifest fields a set carries, and
which ``materialize`` formats it can be written as. Callers ask the kind
(:func:`source_kind`), never compare kind names; a new kind of source is one class here.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import torch

from ..engine import update_rank
from ..engine.basis import LayerBasis
from ..errors import FormatError, option

__all__ = ["CHECKPOINT", "KINDS", "LORA", "PEFT_KEY_PREFIX", "SourceKind", "source_kind"]

PEFT_KEY_PREFIX = "base_model.model."
"""How PEFT prefixes every key of an adapter (and a task's heads under ``modules_to_save``)."""

OUTPUT_FORMATS = ("auto", "hf", "lora", "peft", "merged")
"""What ``materialize`` writes (see :mod:`unisub_hub.pipeline.materialize`)."""


class SourceKind:
    """The decisions that depend on what a basis was built from (see the module docstring)."""

    name: ClassVar[str]
    centered_by_default: ClassVar[bool]
    """Whether a build subtracts the members' mean unless told otherwise."""
    precision: ClassVar[str]
    """The dtype of a build's sums under ``precision="auto"``."""
    adds_to_base: ClassVar[bool]
    """True: a layer's weight is the base model's plus the reconstruction (an update);
    False: the reconstruction is the weight itself (``M + U C V^T``)."""
    keeps_whole_model: ClassVar[bool]
    """Whether a task stores every tensor the basis does not decompose (and the model's config),
    so that it materializes without the base model."""

    def head_key(self, name: str) -> str:
        """How a head or passthrough tensor of the model is keyed in a coefficient set."""
        raise NotImplementedError

    def layer_fields(self, rank: int, lora_kind: str) -> dict[str, Any]:
        """Per-layer manifest fields of a coefficient set beyond the coefficients."""
        raise NotImplementedError

    def lora_block(
        self,
        *,
        r: int,
        key_prefix: str = PEFT_KEY_PREFIX,
        layout: str | None = None,
        weights_file: str | None = None,
        task_type: str | None = None,
        modules_to_save: list[str] | None = None,
        **kept: Any,
    ) -> dict[str, Any] | None:
        """The manifest's ``lora`` block of a coefficient set (``None`` for a kind without one).

        ``r`` is the largest rank of the set's updates; ``kept`` carries fields of a block the
        set already had (a rebased or merged set keeps its source's)."""
        raise NotImplementedError

    def computed_fields(
        self,
        bases: Mapping[str, LayerBasis],
        coefficients: Mapping[str, torch.Tensor],
        *,
        lora_kinds: Mapping[str, str] | None = None,
        block: Mapping[str, Any] | None = None,
    ) -> tuple[dict[str, dict[str, Any]], dict[str, Any] | None]:
        """Per-layer fields and ``lora`` block of a set whose coefficients were computed (trained,
        rebased, merged) rather than read from an adapter: ranks come from the updates themselves.

        Args:
            bases: each layer's basis.
            coefficients: each layer's coefficients on it.
            lora_kinds: each layer's LoRA module kind where known (``linear`` otherwise).
            block: the ``lora`` block the set's source had, whose other fields are kept.
        """
        fields = {
            layer: self.layer_fields(self._rank(bases[layer], coef), (lora_kinds or {}).get(layer, "linear"))
            for layer, coef in coefficients.items()
        }
        top = max((entry.get("lora_rank", 0) for entry in fields.values()), default=0)
        return fields, self.lora_block(**{**(block or {}), "r": top})

    def _rank(self, basis: LayerBasis, coef: torch.Tensor) -> int:
        return 0

    def output_format(self, asked: str, layout: str, path: str | Path | None = None) -> str:
        """The format ``materialize`` writes when ``asked`` for one.

        Raises:
            FormatError: the kind cannot be written as ``asked``.
        """
        raise NotImplementedError


class _Checkpoint(SourceKind):
    name = "checkpoint"
    centered_by_default = True  # the mean absorbs the base weights
    precision = "float64"  # centred sums of large weights whose fine-tuning deltas are small
    adds_to_base = False
    keeps_whole_model = True

    def head_key(self, name: str) -> str:
        return name

    def layer_fields(self, rank: int, lora_kind: str) -> dict[str, Any]:
        return {}

    def lora_block(self, *, r: int, **fields: Any) -> dict[str, Any] | None:
        return None

    def output_format(self, asked: str, layout: str, path: str | Path | None = None) -> str:
        if asked in ("peft", "lora"):
            raise FormatError(
                f"{option('fmt')} {asked} needs a coefficient set made from LoRA adapters; this one is from full "
                "checkpoints",
                path=path,
            )
        return "hf" if asked == "auto" else asked


class _Lora(SourceKind):
    name = "lora"
    centered_by_default = False  # updates are already differences from the base
    precision = "float32"  # thin products of small factors: float32 finds the same subspaces, about 2x faster
    adds_to_base = True
    keeps_whole_model = False

    def head_key(self, name: str) -> str:
        return PEFT_KEY_PREFIX + name

    def _rank(self, basis: LayerBasis, coef: torch.Tensor) -> int:
        return update_rank(basis, coef.double())

    def layer_fields(self, rank: int, lora_kind: str) -> dict[str, Any]:
        return {"lora_rank": rank, "lora_kind": lora_kind}

    def lora_block(
        self,
        *,
        r: int,
        key_prefix: str = PEFT_KEY_PREFIX,
        layout: str | None = None,
        weights_file: str | None = None,
        task_type: str | None = None,
        modules_to_save: list[str] | None = None,
        **kept: Any,
    ) -> dict[str, Any] | None:
        block: dict[str, Any] = {**kept, "r": r, "key_prefix": key_prefix, "task_type": task_type}
        block["modules_to_save"] = modules_to_save or None
        if layout is not None:
            block["layout"] = layout
        if weights_file is not None:
            block["weights_file"] = weights_file
        return block

    def output_format(self, asked: str, layout: str, path: str | Path | None = None) -> str:
        if asked == "peft" and layout != "peft":
            raise FormatError(
                f"this set came from a {layout} LoRA file, whose module names PEFT's cannot be derived from without "
                f"the model; {option('fmt')} lora writes it back in its own layout",
                path=path,
            )
        if asked in ("auto", "lora", "peft"):
            return "peft" if layout == "peft" else "lora"
        if layout == "kohya":  # hf and merged: the base model's weights with the update merged in
            raise FormatError(
                f"{option('fmt')} {asked} needs the base model's tensor names, which kohya's underscored names do not "
                f"give; {option('fmt')} lora writes the LoRA file, which kohya, A1111 and ComfyUI merge at load time",
                path=path,
            )
        return "merged"


CHECKPOINT: SourceKind = _Checkpoint()
LORA: SourceKind = _Lora()
KINDS: dict[str, SourceKind] = {kind.name: kind for kind in (CHECKPOINT, LORA)}


def source_kind(manifest_or_name: Mapping[str, Any] | str) -> SourceKind:
    """The kind of a manifest (its ``source_kind``) or of a kind name.

    Raises:
        FormatError: a kind this version does not know.
    """
    name = manifest_or_name if isinstance(manifest_or_name, str) else manifest_or_name["source_kind"]
    try:
        return KINDS[name]
    except KeyError:
        raise FormatError(f"unknown source kind {name!r} (known: {', '.join(KINDS)})") from None
