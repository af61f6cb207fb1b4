"""Publishing an artifact folder as a Hub repo, in one commit, with a generated model card."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from ..constants import COEFFICIENTS_FORMAT
from ..format import read_artifact
from ..format.artifact import MANIFEST_NAMES, Artifact
from ..format.card import basis_card, coefficients_card
from ..format.checks import check_tensor_table
from ..format.schema import validate_manifest
from .client import api, hub_errors, split_revision

__all__ = ["PushResult", "push_artifact"]


@dataclass(frozen=True)
class PushResult:
    repo_id: str
    commit: str
    url: str
    pr_url: str | None


def push_artifact(
    folder: str | Path,
    repo_id: str,
    *,
    private: bool = False,
    revision: str | None = None,
    create_pr: bool = False,
    commit_message: str | None = None,
    token: str | None = None,
    basis_location: tuple[str, str] | None = None,
) -> PushResult:
    """Upload an artifact folder to ``repo_id`` (created if needed) in one commit.

    For a coefficient set, ``basis_location`` (repo id, commit sha) is written into the
    uploaded manifest, so that a pull can find the basis; the content id is unchanged since
    it covers tensor bytes only. The artifact is re-hashed before anything is sent.
    """
    from huggingface_hub import CommitOperationAdd

    split_revision(repo_id)
    artifact = read_artifact(folder, verify=True)
    check_tensor_table(artifact)
    manifest = dict(artifact.manifest)
    if artifact.kind == COEFFICIENTS_FORMAT and basis_location is not None:
        manifest["basis"] = {**manifest["basis"], "repo_id": basis_location[0], "revision": basis_location[1]}
        manifest = validate_manifest(manifest, artifact.kind, path=artifact.path / MANIFEST_NAMES[artifact.kind])
    card = coefficients_card(manifest) if artifact.kind == COEFFICIENTS_FORMAT else basis_card(manifest)
    operations = [
        CommitOperationAdd(MANIFEST_NAMES[artifact.kind], (json.dumps(manifest, indent=2) + "\n").encode()),
        CommitOperationAdd("README.md", card.encode()),
    ]
    operations += [CommitOperationAdd(name, str(artifact.path / name)) for name in _payload_files(artifact)]
    message = commit_message or f"Upload {manifest['name']} ({artifact.content_id[:19]}...) with unisub-hub"
    client = api(token)
    with hub_errors(repo_id):
        client.create_repo(repo_id, private=private, exist_ok=True)
        if revision and revision != "main":
            client.create_branch(repo_id, branch=revision, exist_ok=True)
        info = client.create_commit(repo_id, operations, commit_message=message, revision=revision, create_pr=create_pr)
    return PushResult(repo_id=repo_id, commit=info.oid, url=str(info.commit_url), pr_url=info.pr_url)


def _payload_files(artifact: Artifact) -> list[str]:
    """Every file of the folder but the manifest and card (regenerated) and hidden files."""
    skip = {MANIFEST_NAMES[artifact.kind], "README.md"}
    return sorted(p.name for p in artifact.path.iterdir() if p.is_file() and p.name not in skip and not p.name.startswith("."))
