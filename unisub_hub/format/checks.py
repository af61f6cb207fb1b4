"""Consistency checks between a manifest and its tensor files, and between a task and its basis.

They read headers and manifests only (no tensor data), so every command can afford them
before it uses an artifact; ``validate`` reports them one by one.
"""

from __future__ import annotations

from ..constants import BASIS_FORMAT
from ..engine.matrix import matrix_shape
from ..engine.modes import mode_set
from ..errors import FormatError
from .artifact import Artifact
from .basis import BasisArtifact
from .coefficients import CoefficientSet
from .dtypes import DTYPE_CODES

__all__ = ["check_pair", "check_tensor_table", "coefficient_shape"]


def coefficient_shape(entry: dict) -> tuple[int, ...]:
    """The shape of one task's coefficients for a basis manifest's layer entry."""
    ranks = {int(m): r for m, r in entry["ranks"].items()}
    return mode_set(entry["modes"]).coefficient_shape(*matrix_shape(entry["shape"]), ranks)


def _expected_basis_tensors(artifact: Artifact) -> dict[str, tuple[tuple[int, ...] | None, str]]:
    manifest = artifact.manifest
    code = DTYPE_CODES[manifest["dtype"]]
    expected: dict[str, tuple[tuple[int, ...] | None, str]] = {}
    for layer in manifest["layers"]:
        p, q = matrix_shape(layer["shape"])
        ranks = {int(m): r for m, r in layer["ranks"].items()}
        shapes = {"mean": (p, q), **mode_set(layer["modes"]).factor_shapes(p, q, ranks)}
        for role, stored in layer["tensors"].items():
            if role.startswith("S"):
                expected[stored] = (None, "F32")  # spectra: any length
            elif role in shapes:
                expected[stored] = (shapes[role], code)
            else:
                raise FormatError(
                    f"layer {layer['name']}: role {role!r} does not belong to modes {layer['modes']}",
                    path=artifact.path,
                )
    return expected


def check_tensor_table(artifact: Artifact) -> str:
    """Every tensor the manifest implies is stored with its shape and dtype, and nothing else is.

    Raises:
        FormatError: naming the first tensor missing, extra, or of the wrong shape or dtype.
    """
    if artifact.kind == BASIS_FORMAT:
        expected = _expected_basis_tensors(artifact)
    else:
        expected = {e["tensor"]: (tuple(e["shape"]), "F32") for e in artifact.manifest["layers"]}
        # A passthrough tensor keeps its own dtype, which the manifest records: the two must agree.
        expected.update(
            {
                e["name"]: (tuple(e["shape"]), DTYPE_CODES.get(e.get("dtype", "")))
                for e in artifact.manifest["passthrough"]
            }
        )
    stored = set(artifact.tensor_names())
    missing = sorted(set(expected) - stored)
    extra = sorted(stored - set(expected))
    if missing:
        raise FormatError(
            f"tensor {missing[0]!r} named in the manifest is not in the tensor files ({len(missing)} missing)",
            path=artifact.path,
        )
    if extra:
        raise FormatError(
            f"tensor {extra[0]!r} in the tensor files is not in the manifest ({len(extra)} extra)", path=artifact.path
        )
    layers = {e["name"] for e in artifact.manifest["layers"]}
    for alias, target in (artifact.manifest.get("tied") or {}).items():
        if target not in layers or alias in layers or alias in expected:
            raise FormatError(
                f"tie {alias} -> {target}: a tie copies a decomposed layer into a tensor the artifact holds no other "
                "way",
                path=artifact.path,
            )
    for name, (shape, dtype) in expected.items():
        info = artifact.tensor_info(name)
        if shape is not None and tuple(info["shape"]) != tuple(shape):
            raise FormatError(
                f"tensor {name!r} has shape {info['shape']}, the manifest implies {list(shape)}", path=artifact.path
            )
        if dtype is not None and info["dtype"] != dtype:
            raise FormatError(f"tensor {name!r} is {info['dtype']}, the manifest says {dtype}", path=artifact.path)
    return f"{len(expected)} tensors match the manifest"


def check_pair(coefficients: CoefficientSet, basis: BasisArtifact) -> None:
    """The coefficient set must name this basis and fit its layer table (and both their manifests).

    Raises:
        FormatError: another basis, a layer the basis lacks, or coefficients of the wrong shape.
    """
    check_tensor_table(coefficients.artifact)
    check_tensor_table(basis.artifact)
    if coefficients.basis_id != basis.content_id:
        raise FormatError(
            f"coefficient set refers to basis {coefficients.basis_id[:19]}..., but the basis given is "
            f"{basis.content_id[:19]}...",
            path=coefficients.path,
        )
    entries = {entry["name"]: entry for entry in basis.manifest["layers"]}
    for entry in coefficients.manifest["layers"]:
        if entry["name"] not in entries:
            raise FormatError(f"layer {entry['name']} is not in the basis", path=coefficients.path)
        expected = coefficient_shape(entries[entry["name"]])
        if tuple(entry["shape"]) != expected:
            raise FormatError(
                f"layer {entry['name']}: coefficients are {entry['shape']}, the basis expects {list(expected)}",
                path=coefficients.path,
            )
