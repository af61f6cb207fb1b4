"""Pulling artifacts from the Hub into the registry, pinned and verified.

A pull resolves the revision to a commit sha, downloads that snapshot into a temporary
folder under the registry home, checks the content id, and only then registers it. A
coefficient set's basis is looked up in the registry by content id first and downloaded
only if it is not stored yet.
"""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path

from ..constants import BASIS_FORMAT, COEFFICIENTS_FORMAT, QUALITY_REPORT
from ..errors import ContentIdMismatchError, HubConnectionError, HubUsageError
from ..format import read_artifact
from ..format.artifact import MANIFEST_NAMES, Artifact
from ..format.checks import check_tensor_table
from ..hf import api, endpoint, hub_errors, is_offline, matching_files, split_revision
from ..registry import DOWNLOADS, Entry, Registry

__all__ = ["pull"]


def pull(spec: str, registry: Registry, *, token: str | None = None, expected_id: str | None = None) -> Entry:
    """Pull ``org/name[@revision]`` (and its basis, when needed) into ``registry``.

    Raises:
        HubError: the repo, revision or network is unavailable, or offline and not stored.
        ContentIdMismatchError: downloaded bytes do not match the manifest (nothing registered).
    """

    repo_id, revision = split_revision(spec)
    if is_offline():
        pinned = revision if revision and len(revision) == 40 else None
        entry = registry.find_by_hub(repo_id, pinned)
        if entry is None:
            raise HubConnectionError(f"{spec}: HF_HUB_OFFLINE is set and this repo is not in the registry")
        return entry
    with hub_errors(spec):
        info = api(token).repo_info(repo_id, revision=revision)
    sha = info.sha
    if (entry := registry.find_by_hub(repo_id, sha)) is not None:
        return entry
    downloads = registry.home / DOWNLOADS
    downloads.mkdir(parents=True, exist_ok=True)
    folder = downloads / f"{repo_id.replace('/', '--')}-{uuid.uuid4().hex[:8]}"
    # The shared lease keeps gc, which clears what killed pulls left in downloads/, off this one.
    with registry.store.lease():
        files = matching_files(
            (sibling.rfilename for sibling in info.siblings or []), ARTIFACT_FILE_PATTERNS, top_level=True
        )
        return _download_and_register(spec, repo_id, sha, files, folder, registry, token=token, expected_id=expected_id)


def _download_and_register(
    spec: str,
    repo_id: str,
    sha: str,
    files: list[str],
    folder: Path,
    registry: Registry,
    *,
    token: str | None,
    expected_id: str | None,
) -> Entry:
    from huggingface_hub import snapshot_download

    try:
        with hub_errors(spec):  # an artifact's own files only: nothing else of the repo is fetched or kept
            snapshot_download(
                repo_id, revision=sha, local_dir=folder, token=token, endpoint=endpoint(), allow_patterns=files
            )
        shutil.rmtree(folder / ".cache", ignore_errors=True)
        try:
            artifact = read_artifact(folder, verify=True)
        except ContentIdMismatchError:
            raise ContentIdMismatchError(
                "downloaded tensor files do not hash to the manifest's content id (modified or corrupt)",
                path=f"{repo_id}@{sha}",
            ) from None
        check_tensor_table(artifact)
        if expected_id is not None and artifact.kind != BASIS_FORMAT:
            # Only a coefficient set names a basis, and a basis names none: requiring a basis here
            # also ends any chain of repos that name each other.
            raise HubUsageError(
                f"{spec}: is a coefficient set, not the basis {expected_id[:19]}... that was asked for",
                repo_id=repo_id,
                revision=sha,
            )
        if expected_id is not None and artifact.content_id != expected_id:
            raise ContentIdMismatchError(
                f"holds {artifact.content_id[:19]}..., but {expected_id[:19]}... was expected", path=f"{repo_id}@{sha}"
            )
        _keep_only_artifact_files(folder, artifact)
        if artifact.kind == COEFFICIENTS_FORMAT:
            _ensure_basis(artifact.manifest, registry, token=token, spec=spec)
        return registry.add(folder, hub_repo=repo_id, hub_revision=sha, verify=False)  # verified just above
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _ensure_basis(manifest: dict, registry: Registry, *, token: str | None, spec: str) -> None:
    basis = manifest["basis"]
    if registry.find("basis", basis["content_id"]) is not None:
        return
    if not basis.get("repo_id"):
        raise HubUsageError(
            f"{spec}: its basis {basis['content_id'][:19]}... is not stored and the manifest does not say where it is"
        )
    location = basis["repo_id"] + (f"@{basis['revision']}" if basis.get("revision") else "")
    pull(location, registry, token=token, expected_id=basis["content_id"])


ARTIFACT_FILE_PATTERNS = [
    "unisub_basis.json",
    "unisub_coefficients.json",
    "*.safetensors",
    "*.safetensors.index.json",
    "README.md",
    QUALITY_REPORT,
]
"""What a pull downloads: an artifact's own files (the tensor files among them are checked below)."""


def _keep_only_artifact_files(folder: Path, artifact: Artifact) -> None:
    """Delete whatever the repo held beside the artifact (a stray ``.safetensors`` the manifest does
    not list, say), so that registering and a later push carry the artifact alone."""
    keep = {MANIFEST_NAMES[artifact.kind], "README.md", QUALITY_REPORT, *artifact.manifest["tensor_files"]}
    keep |= {
        f"{name.split('-0000')[0].removesuffix('.safetensors')}.safetensors.index.json"
        for name in artifact.manifest["tensor_files"]
    }
    for path in sorted(folder.rglob("*"), reverse=True):
        relative = path.relative_to(folder).as_posix()
        if path.is_file() and relative not in keep:
            path.unlink()
        elif path.is_dir() and not any(path.iterdir()):
            path.rmdir()
