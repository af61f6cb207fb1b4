"""``validate``: every check of an artifact, each reported as pass or fail with the reason.

The cheap checks (schema, version, content id, tensor names/shapes/dtypes, basis pairing)
also run implicitly before ``materialize`` and ``push`` and after ``pull``; ``--deep`` adds
orthonormality of the factors and finiteness of every tensor.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..constants import BASIS_FORMAT
from ..engine import all_finite
from ..errors import FormatError, IncompatibleSourcesError, UnisubError, option
from ..format import (
    BasisArtifact,
    CoefficientSet,
    architecture_fingerprint,
    load_basis,
    read_artifact,
)
from ..format.artifact import Artifact
from ..format.checks import check_pair, check_tensor_table
from ..format.dtypes import DTYPE_CODES
from ..format.names import prefix_map

__all__ = ["Check", "ValidationReport", "check_base_model", "validate"]

_TOLERANCE = {"F64": 1e-8, "F32": 1e-4, "F16": 5e-3, "BF16": 3e-2}


@dataclass
class Check:
    name: str
    ok: bool
    detail: str = ""
    error: UnisubError | None = field(default=None, repr=False, compare=False)
    """What failed, so that a caller can word it its own way (the CLI names its flags)."""

    def to_dict(self, spell: Callable[[str], str] = str) -> dict[str, Any]:
        detail = self.error.render(spell) if self.error is not None else self.detail
        return {"name": self.name, "ok": self.ok, "detail": detail}


@dataclass
class ValidationReport:
    target: str
    kind: str | None
    checks: list[Check] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(check.ok for check in self.checks)

    def to_dict(self, spell: Callable[[str], str] = str) -> dict[str, Any]:
        """Plain data; ``spell`` words the parameters failed checks name (see :meth:`UnisubError.render`)."""
        return {
            "target": self.target,
            "kind": self.kind,
            "ok": self.ok,
            "checks": [c.to_dict(spell) for c in self.checks],
        }

    def run(self, name: str, function: Callable[[], str | None]) -> bool:
        """Run one check; an expected error becomes a failed check with its one-line message."""
        try:
            detail = function() or ""
        except UnisubError as error:
            self.checks.append(Check(name, False, str(error), error))
            return False
        self.checks.append(Check(name, True, detail))
        return True


def _check_orthonormal(basis: BasisArtifact) -> str:
    worst = 0.0
    code = DTYPE_CODES[basis.manifest["dtype"]]
    for name in basis.layer_names:
        layer = basis.layer(name, dtype=torch.float64)
        for label, factor in (
            ("U", layer.left),
            ("V", layer.right),
            (
                "components",
                None if layer.components is None else layer.components.reshape(layer.components.shape[0], -1).T,
            ),
        ):
            if factor is None:
                continue
            gram = factor.T @ factor
            error = float((gram - torch.eye(gram.shape[0], dtype=gram.dtype)).abs().max())
            worst = max(worst, error)
            if error > _TOLERANCE[code]:
                raise FormatError(
                    f"layer {name}: {label} is not orthonormal (max |F^T F - I| = {error:.2e}, tolerance "
                    f"{_TOLERANCE[code]:.0e})",
                    path=basis.path,
                )
    return f"max |F^T F - I| = {worst:.1e}"


def _check_finite(artifact: Artifact) -> str:
    from ..errors import NonFiniteError

    for name in artifact.tensor_names():
        tensor = artifact.tensor(name)
        if tensor.is_floating_point() and not all_finite(tensor):
            raise NonFiniteError(f"tensor {name} holds NaN or Inf", source=str(artifact.path))
    return f"{len(artifact.tensor_names())} tensors finite"


def _check_config_shapes(coefficients: CoefficientSet, basis_path: Path | None) -> str:
    """The model the carried config builds has every tensor of the set at the set's shape.

    A member's head (``num_labels``, ``id2label``) lives in its config and in a passed-through
    tensor; if they disagree, ``from_pretrained`` fails on the size or loads a random head. The
    model is built on the meta device, so this costs no memory.
    """
    config = coefficients.manifest.get("config")
    if not isinstance(config, dict) or not config.get("architectures"):
        return "no model config carried: nothing to check"
    architectures = config["architectures"]
    try:
        import transformers

        model_class = getattr(transformers, architectures[0])
        settings = transformers.AutoConfig.for_model(**config)
        with torch.device("meta"):
            built = {name: tuple(value.shape) for name, value in model_class(settings).state_dict().items()}
    except Exception as error:  # not installed, an architecture transformers does not know, a config it cannot build
        return f"not checked: transformers cannot build {architectures[0]} ({error.__class__.__name__})"
    ours = {entry["name"]: tuple(entry["shape"]) for entry in coefficients.manifest["passthrough"]}
    if basis_path is not None:  # a layer's weight shape is the basis's (the set stores coefficient shapes)
        ours |= {entry["name"]: tuple(entry["shape"]) for entry in load_basis(basis_path).manifest["layers"]}
    shared = sorted(set(ours) & set(built))
    for name in shared:
        if built[name] != ours[name]:
            raise FormatError(
                f"tensor {name} is {'x'.join(map(str, ours[name]))} but the carried config builds "
                f"{'x'.join(map(str, built[name]))} "
                "(num_labels / id2label or another size disagrees): from_pretrained would fail or load a random head",
                path=coefficients.path,
            )
    return f"{len(shared)} tensors have the shapes {architectures[0]} of the carried config builds"


def _check_pairing(coefficients: CoefficientSet, basis: BasisArtifact) -> str:
    check_pair(coefficients, basis)
    return f"basis {basis.content_id[:19]}... matches ids, layers and ranks"


def check_base_model(basis_manifest: dict[str, Any], base: str) -> str:
    """Every basis layer exists in the base model with its shape (headers only; remote if a Hub id)."""
    table = _base_table(base)
    layers = [(entry["name"], tuple(entry["shape"])) for entry in basis_manifest["layers"]]
    names = prefix_map([name for name, _ in layers], set(table))
    if names is None:
        raise IncompatibleSourcesError(
            f"has no tensor matching basis layer {layers[0][0]} (wrong base model?)", source=base
        )
    to_base = names.forward
    for name, shape in layers:
        key = to_base(name)
        if key not in table:
            raise IncompatibleSourcesError(f"has no tensor {key} (basis layer {name})", source=base)
        if tuple(table[key]) != shape:
            raise IncompatibleSourcesError(
                f"tensor {key} is {'x'.join(map(str, table[key]))}, the basis layer is {'x'.join(map(str, shape))}",
                source=base,
            )
    fingerprint = architecture_fingerprint((name, tuple(table[to_base(name)])) for name, _ in layers)
    if fingerprint != basis_manifest["architecture"]["fingerprint"]:
        raise IncompatibleSourcesError("layer table fingerprint differs from the basis architecture", source=base)
    return f"{len(layers)} layers found with matching shapes"


def _base_table(base: str) -> dict[str, tuple[int, ...]]:
    path = Path(base)
    if path.exists():
        from ..io.checkpoint import CheckpointSource

        return {name: tuple(info.shape) for name, info in CheckpointSource(path, name=base).tensors.items()}
    from ..hf import api, hub_errors, split_revision

    repo_id, revision = split_revision(base)
    with hub_errors(base):
        metadata = api().get_safetensors_metadata(repo_id, revision=revision)
    return {name: tuple(info.shape) for file in metadata.files_metadata.values() for name, info in file.tensors.items()}


def validate(
    target: str | Path,
    *,
    against: str | None = None,
    deep: bool = False,
    basis_lookup: Callable[[str], Path | None] | None = None,
) -> ValidationReport:
    """Check an artifact folder; ``against`` is a basis folder (for a coefficient set) or a base model.

    ``basis_lookup`` finds a coefficient set's basis by content id (e.g. in the registry)
    when ``against`` is not given.
    """
    report = ValidationReport(str(target), None)
    holder: dict[str, Any] = {}

    def open_it() -> str:
        holder["artifact"] = read_artifact(target)
        report.kind = holder["artifact"].kind
        return f"{holder['artifact'].kind} format {holder['artifact'].manifest['format_version']}"

    if not report.run("manifest schema and format version", open_it):
        return report
    artifact: Artifact = holder["artifact"]

    def verify_content() -> str:
        artifact.verify()
        return f"{artifact.content_id[:19]}... verified"

    report.run("content id", verify_content)
    tensors_ok = report.run("tensor names, shapes and dtypes", lambda: check_tensor_table(artifact))
    if artifact.kind == BASIS_FORMAT:
        basis = BasisArtifact(artifact)
        if deep and tensors_ok:
            report.run("orthonormal factors", lambda: _check_orthonormal(basis))
        if against is not None:
            report.run(f"layers present in base model {against}", lambda: check_base_model(artifact.manifest, against))
    elif tensors_ok:
        _check_coefficients(report, CoefficientSet(artifact), against, basis_lookup)
    if deep and tensors_ok:
        report.run("finite values", lambda: _check_finite(artifact))
    return report


def _check_coefficients(
    report: ValidationReport,
    coefficients: CoefficientSet,
    against: str | None,
    basis_lookup: Callable[[str], Path | None] | None,
) -> None:
    """A coefficient set's checks: its basis is there and matches, its config fits, and, given a
    base model, the basis's layers are in it."""
    basis_path = Path(against) if against is not None and (Path(against) / "unisub_basis.json").is_file() else None
    if basis_path is None and basis_lookup is not None:
        basis_path = basis_lookup(coefficients.basis_id)

    def pairing() -> str:
        if basis_path is None:
            raise FormatError(
                f"its basis {coefficients.basis_id[:19]}... is not available (give {option('against')} BASIS or "
                "register it)",
                path=coefficients.path,
            )
        return _check_pairing(coefficients, load_basis(basis_path))

    report.run("basis present and matching", pairing)
    report.run("carried config fits the tensors", lambda: _check_config_shapes(coefficients, basis_path))
    if against is not None and basis_path is not None and Path(against) != basis_path:
        report.run(
            f"layers present in base model {against}",
            lambda: check_base_model(load_basis(basis_path).manifest, against),
        )
