"""A basis on disk: per-layer factors in safetensors, described by ``unisub_basis.json``."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..constants import BASIS_FORMAT, DEFAULT_SHARD_SIZE, QUALITY_REPORT
from ..engine.basis import LayerBasis
from ..errors import EngineError, FormatError
from .artifact import ArtifactView, read_artifact, write_artifact
from .card import basis_card
from .common import architecture_fingerprint, manifest_header, stored_name
from .dtypes import dtype_name
from .verified import VerifiedIds

__all__ = ["BasisArtifact", "load_basis", "save_basis"]

_FACTOR_ROLES = {"mean": "mean", "U": "left", "V": "right", "components": "components"}


def save_basis(  # noqa: PLR0913 (keyword-only manifest fields, each optional, as the schema lists them)
    out: str | Path,
    layers: Mapping[str, LayerBasis],
    *,
    name: str,
    architecture_name: str,
    source_kind: str,
    sources: Sequence[dict[str, Any]],
    base_model: dict[str, Any] | None = None,
    dtype: torch.dtype = torch.float32,
    quality: Mapping[str, Any] | None = None,
    quality_report: Mapping[str, Any] | None = None,
    sizes: Mapping[str, int] | None = None,
    command: str | None = None,
    shard_size: int = DEFAULT_SHARD_SIZE,
    source_dtypes: Mapping[str, str] | None = None,
    tied: Mapping[str, str] | None = None,
    grown_from: Mapping[str, Any] | None = None,
) -> BasisArtifact:
    """Write a basis artifact folder.

    Args:
        out: the folder to create (must not exist or be empty).
        layers: per-layer bases, as the engine returns them.
        name: a short name (letters, digits, ``._-``).
        architecture_name: the model family, e.g. the base model's id.
        source_kind: ``"checkpoint"`` or ``"lora"``.
        sources: provenance entries ``{"id", "revision", "sha256", "role", "kind"}``.
        dtype: storage dtype of the factors and the mean; spectra are always float32.
        source_dtypes: per layer, the dtype its sources stored (``bfloat16`` ...): what a
            materialized model writes the layer in.
        quality: per-layer summary for the manifest; ``quality_report`` goes to ``quality.json``.
        tied: ``{alias: layer}`` for tensors equal to a basis layer in every source (not decomposed again).
        grown_from: for a basis grown from another (``build --update``): the parent's
            ``content_id`` and ``name``, and the ids of the ``added`` sources.

    Returns:
        The written artifact, opened.
    """
    tensors: dict[str, torch.Tensor] = {}
    entries = []
    for layer in layers.values():
        layer.check()
        names: dict[str, str] = {}
        for role, attribute in _FACTOR_ROLES.items():
            value = getattr(layer, attribute)
            if value is not None:
                names[role] = stored_name(layer.name, role)
                tensors[names[role]] = value.detach().to(device="cpu", dtype=dtype).contiguous()
        for mode, spectrum in layer.spectra.items():
            names[f"S{mode}"] = stored_name(layer.name, f"S{mode}")
            tensors[names[f"S{mode}"]] = spectrum.detach().to(device="cpu", dtype=torch.float32).contiguous()
        entry: dict[str, Any] = {
            "name": layer.name,
            "shape": list(layer.tensor_shape),
            "modes": list(layer.modes),
            "ranks": {str(m): r for m, r in layer.ranks.items()},
            "centered": layer.centered,
            "tensors": names,
        }
        if source_dtypes and layer.name in source_dtypes:
            entry["source_dtype"] = source_dtypes[layer.name]
        if quality and layer.name in quality:
            entry["explained_variance"] = quality[layer.name].get("explained_variance", {})
        entries.append(entry)
    modes = sorted({m for layer in layers.values() for m in layer.modes})
    manifest = {
        **manifest_header(BASIS_FORMAT, name),
        "architecture": {
            "name": architecture_name,
            "fingerprint": architecture_fingerprint((layer.name, layer.tensor_shape) for layer in layers.values()),
            "base_model": base_model,
        },
        "source_kind": source_kind,
        "modes": modes,
        "centered": any(layer.centered for layer in layers.values()),
        "dtype": dtype_name(dtype),
        "layers": entries,
        "sources": list(sources),
        "quality": dict(quality or {}),
    }
    if tied:
        manifest["tied"] = dict(tied)
    if grown_from:
        manifest["grown_from"] = dict(grown_from)
    if sizes is not None:
        manifest["sizes"] = dict(sizes)
    if command is not None:
        manifest["command"] = command
    extra = {QUALITY_REPORT: json.dumps(quality_report, indent=1) + "\n"} if quality_report is not None else None
    artifact = write_artifact(Path(out), manifest, tensors, shard_size=shard_size, card=basis_card, extra_files=extra)
    return BasisArtifact(artifact)


@dataclass
class BasisArtifact(ArtifactView):
    """A basis folder opened for reading; layers load on demand."""

    def entry(self, name: str) -> dict[str, Any]:
        for entry in self.manifest["layers"]:
            if entry["name"] == name:
                return entry
        raise FormatError(f"layer {name!r} is not in the basis", path=self.path)

    def layer(self, name: str, *, device: str | torch.device = "cpu", dtype: torch.dtype | None = None) -> LayerBasis:
        """Load one layer's basis, optionally cast to ``dtype`` (e.g. float64 for projection)."""
        entry = self.entry(name)
        load = lambda stored: _cast(self.artifact.tensor(stored, device), dtype)  # noqa: E731
        tensors = entry["tensors"]
        layer = LayerBasis(name=name, tensor_shape=tuple(entry["shape"]), modes=tuple(entry["modes"]))
        for role, attribute in _FACTOR_ROLES.items():
            if role in tensors:
                setattr(layer, attribute, load(tensors[role]))
        layer.spectra = {int(key[1:]): load(value) for key, value in tensors.items() if key.startswith("S")}
        try:
            layer.check()
        except EngineError as error:
            raise FormatError(str(error), path=self.path) from None
        if {str(m): r for m, r in layer.ranks.items()} != entry["ranks"]:
            raise FormatError(
                f"layer {name}: stored factors have ranks {layer.ranks}, manifest says {entry['ranks']}", path=self.path
            )
        return layer

    def quality_report(self) -> dict[str, Any] | None:
        """The build's per-source report (``quality.json``), or None for a basis without one."""
        path = self.path / QUALITY_REPORT
        if not path.is_file():
            return None
        try:
            report = json.loads(path.read_text())
        except ValueError as error:  # bad JSON, bad UTF-8, or an integer past Python's digit limit
            raise FormatError(f"not valid JSON ({str(error)[:200]})", path=path) from None
        if not isinstance(report, dict):
            raise FormatError("not a JSON object", path=path)
        return report


def _cast(tensor: torch.Tensor, dtype: torch.dtype | None) -> torch.Tensor:
    return tensor if dtype is None else tensor.to(dtype)


def load_basis(path: str | Path, *, verify: bool = True, known: VerifiedIds | None = None) -> BasisArtifact:
    """Open a basis folder for use: its manifest validated and its tensor files checked against its content id.

    The check is remembered per unchanged file (:mod:`unisub_hub.format.verified`): in this
    process, and in ``known`` (the registry's memory) across processes, so opening the same
    artifact again costs no hashing. ``verify=False`` skips it (for tools that report a
    mismatch themselves, such as ``validate``).

    Raises:
        ContentIdMismatchError: the tensor bytes do not hash to the manifest's content id.
    """
    return BasisArtifact(read_artifact(path, BASIS_FORMAT, verify=verify, cached=True, known=known))
