"""A coefficient set ("task") on disk: per-layer coefficients plus passthrough tensors."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..constants import COEFFICIENTS_FORMAT, DEFAULT_SHARD_SIZE
from ..errors import FormatError
from .artifact import ArtifactView, read_artifact, write_artifact
from .card import coefficients_card
from .common import ROLE_SEPARATOR, manifest_header, stored_name
from .dtypes import dtype_name
from .verified import VerifiedIds

__all__ = ["CoefficientSet", "load_coefficients", "save_coefficients"]


def save_coefficients(  # noqa: PLR0913 (keyword-only manifest fields, each optional, as the schema lists them)
    out: str | Path,
    coefficients: Mapping[str, torch.Tensor],
    passthrough: Mapping[str, torch.Tensor],
    *,
    name: str,
    basis_manifest: Mapping[str, Any],
    source: Mapping[str, Any] | None = None,
    lora: Mapping[str, Any] | None = None,
    layer_extras: Mapping[str, Mapping[str, Any]] | None = None,
    passthrough_reasons: Mapping[str, str] | None = None,
    metrics: Mapping[str, Any] | None = None,
    sizes: Mapping[str, int] | None = None,
    command: str | None = None,
    lineage: str = "projected",
    training: Mapping[str, Any] | None = None,
    rebased_from: Mapping[str, Any] | None = None,
    merged_from: Sequence[Mapping[str, Any]] | None = None,
    merge: Mapping[str, Any] | None = None,
    config: Mapping[str, Any] | None = None,
    tied: Mapping[str, str] | None = None,
    shard_size: int = DEFAULT_SHARD_SIZE,
) -> CoefficientSet:
    """Write a coefficient set that refers to the basis described by ``basis_manifest``.

    Coefficients are stored float32; passthrough tensors keep their own dtype and name.
    ``layer_extras`` adds per-layer fields (``lora_rank``, ``rel_error``). ``lineage`` says
    how the coefficients came about (``projected`` from a fine-tune, ``trained`` on the frozen
    basis, ``rebased`` from another basis); ``training`` records what produced a trained set,
    ``rebased_from`` the set a rebased one was moved from,
    ``merged_from`` and ``merge`` the sets (content id, name, weight) and the method a merged
    one combines. ``config`` is the member's own model
    config, which ``materialize`` writes (its head may differ from the base's). ``tied`` maps a
    tensor of the member to the layer it equals (``materialize`` writes it as a copy).
    """
    tensors: dict[str, torch.Tensor] = {}
    layers = []
    for layer, coef in coefficients.items():
        tensors[stored_name(layer, "coef")] = coef.detach().to(device="cpu", dtype=torch.float32).contiguous()
        layers.append(
            {
                "name": layer,
                "tensor": stored_name(layer, "coef"),
                "shape": list(coef.shape),
                **dict((layer_extras or {}).get(layer, {})),
            }
        )
    entries = []
    for key, value in passthrough.items():
        if ROLE_SEPARATOR in key:
            raise FormatError(f"passthrough tensor name {key!r} contains {ROLE_SEPARATOR!r}")
        tensors[key] = value.detach().to("cpu").contiguous()
        entry = {"name": key, "shape": list(value.shape), "dtype": dtype_name(value.dtype)}
        if passthrough_reasons and key in passthrough_reasons:
            entry["reason"] = passthrough_reasons[key]
        entries.append(entry)
    basis_ref = {"content_id": basis_manifest["content_id"], "name": basis_manifest.get("name")}
    if hub := basis_manifest.get("hub"):
        basis_ref.update(repo_id=hub["repo_id"], revision=hub["revision"])
    manifest: dict[str, Any] = {
        **manifest_header(COEFFICIENTS_FORMAT, name),
        "basis": basis_ref,
        "architecture": basis_manifest["architecture"],
        "source_kind": basis_manifest["source_kind"],
        "layers": layers,
        "passthrough": entries,
        "lineage": lineage,
    }
    optional: dict[str, object] = {
        "tied": tied or None,
        "config": config,
        "training": training,
        "rebased_from": rebased_from,
        "merged_from": [dict(entry) for entry in merged_from] if merged_from else None,
        "merge": merge,
        "source": source,
        "lora": lora,
        "metrics": metrics,
        "sizes": sizes,
        "command": command,
    }
    for key, extra in optional.items():
        if extra is not None:
            manifest[key] = dict(extra) if isinstance(extra, Mapping) else extra
    artifact = write_artifact(Path(out), manifest, tensors, shard_size=shard_size, card=coefficients_card)
    return CoefficientSet(artifact)


@dataclass
class CoefficientSet(ArtifactView):
    """A coefficient-set folder opened for reading."""

    @property
    def basis_id(self) -> str:
        return self.manifest["basis"]["content_id"]

    @property
    def passthrough_names(self) -> list[str]:
        return [entry["name"] for entry in self.manifest["passthrough"]]

    def coefficient(self, layer: str, device: str | torch.device = "cpu") -> torch.Tensor:
        for entry in self.manifest["layers"]:
            if entry["name"] == layer:
                return self.artifact.tensor(entry["tensor"], device)
        raise FormatError(f"layer {layer!r} has no coefficients in this set", path=self.path)

    def coefficients(self, device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
        """Every layer's coefficients, keyed by layer, read in one pass over the tensor files."""
        stored = {entry["name"]: entry["tensor"] for entry in self.manifest["layers"]}
        values = self.artifact.tensors(list(stored.values()), device)
        return {layer: values[tensor] for layer, tensor in stored.items()}

    def passthrough(self, name: str, device: str | torch.device = "cpu") -> torch.Tensor:
        return self.artifact.tensor(name, device)


def load_coefficients(path: str | Path, *, verify: bool = True, known: VerifiedIds | None = None) -> CoefficientSet:
    """Open a coefficient-set folder for use.

    Its manifest is validated and its tensor files checked against its content id.

    The check is remembered per unchanged file (:mod:`unisub_hub.format.verified`): in this
    process, and in ``known`` (the registry's memory) across processes, so opening the same
    artifact again costs no hashing. ``verify=False`` skips it (for tools that report a
    mismatch themselves, such as ``validate``).

    Raises:
        ContentIdMismatchError: the tensor bytes do not hash to the manifest's content id.
    """
    return CoefficientSet(read_artifact(path, COEFFICIENTS_FORMAT, verify=verify, cached=True, known=known))
