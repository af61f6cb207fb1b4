"""Format v1: manifests, tensor files, content ids (see ``specs/FORMAT.md``)."""

from .artifact import (
    Artifact,
    check_artifact_output,
    detect_kind,
    read_artifact,
    write_artifact,
)
from .atomic import atomic_folder, check_output
from .basis import BasisArtifact, load_basis, save_basis
from .coefficients import CoefficientSet, load_coefficients, save_coefficients
from .common import architecture_fingerprint
from .schema import validate_manifest
from .tensorfile import canonical_bytes, content_id, read_header

__all__ = [
    "Artifact",
    "BasisArtifact",
    "CoefficientSet",
    "architecture_fingerprint",
    "atomic_folder",
    "check_artifact_output",
    "check_output",
    "canonical_bytes",
    "content_id",
    "detect_kind",
    "load_basis",
    "load_coefficients",
    "read_artifact",
    "read_header",
    "save_basis",
    "save_coefficients",
    "validate_manifest",
    "write_artifact",
]
