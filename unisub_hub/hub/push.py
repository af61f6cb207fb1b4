"""Publishing an artifact folder as a Hub repo, in one commit, with a generated model card."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..constants import COEFFICIENTS_FORMAT
from ..errors import HubUsageError, option
from ..format import read_artifact
from ..format.artifact import MANIFEST_NAMES, Artifact
from ..format.card import basis_card, coefficients_card
from ..format.checks import check_tensor_table
from ..format.schema import validate_manifest
from ..hf import api, hub_errors, split_revision

if TYPE_CHECKING:
    from ..registry import Registry

__all__ = ["PushResult", "publish", "push_artifact"]


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
    evaluations: list[dict[str, Any]] | None = None,
) -> PushResult:
    """Upload an artifact folder to ``repo_id`` (created if needed) in one commit.

    For a coefficient set, ``basis_location`` (repo id, commit sha) is written into the
    uploaded manifest, so that a pull can find the basis; the content id is unchanged since
    it covers tensor bytes only. ``evaluations`` (the registry's records) become the card's
    ``model-index``. The artifact is re-hashed before anything is sent.
    """
    from huggingface_hub import CommitOperationAdd

    _check_target(repo_id)
    artifact = read_artifact(folder, verify=True)
    check_tensor_table(artifact)
    manifest = dict(artifact.manifest)
    if artifact.kind == COEFFICIENTS_FORMAT and basis_location is not None:
        manifest["basis"] = {**manifest["basis"], "repo_id": basis_location[0], "revision": basis_location[1]}
        manifest = validate_manifest(manifest, artifact.kind, path=artifact.path / MANIFEST_NAMES[artifact.kind])
    make_card = coefficients_card if artifact.kind == COEFFICIENTS_FORMAT else basis_card
    card = make_card(manifest, evaluations or ())
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


def publish(
    folder: str | Path,
    repo_id: str,
    registry: Registry,
    *,
    private: bool = False,
    revision: str | None = None,
    create_pr: bool = False,
    commit_message: str | None = None,
    token: str | None = None,
    push_basis_to: str | None = None,
) -> list[tuple[str, PushResult]]:
    """Register and push an artifact; for a coefficient set, find (or first push) its basis on the Hub.

    A coefficient set names its basis repo and commit, so the basis must be on the Hub: the
    registry's record of where it was pushed or pulled from is used, else the manifest's own
    location, else it is pushed to ``push_basis_to``. The registry records where each pushed
    artifact now lives (not for a pull request, which is not the branch's content).

    Returns:
        ``(kind, result)`` per pushed repo, the basis first when it was pushed too.

    Raises:
        HubUsageError: the basis is not on the Hub and ``push_basis_to`` is not given, or a
            target carries ``@revision``.
    """
    _check_target(repo_id)
    if push_basis_to is not None:
        _check_target(push_basis_to)
    entry = registry.add(folder)  # re-hashes the tensor files; push_artifact checks them again before upload
    artifact = read_artifact(folder)
    results: list[tuple[str, PushResult]] = []
    basis_location = None
    if artifact.kind == COEFFICIENTS_FORMAT:
        basis_id = artifact.manifest["basis"]["content_id"]
        basis_entry = registry.find("basis", basis_id)
        recorded = artifact.manifest["basis"]
        if basis_entry is not None and basis_entry.hub_repo and basis_entry.hub_revision:
            basis_location = (basis_entry.hub_repo, basis_entry.hub_revision)
        elif recorded.get("repo_id") and recorded.get("revision"):
            basis_location = (recorded["repo_id"], recorded["revision"])
        elif push_basis_to:
            if basis_entry is None:
                raise HubUsageError(
                    f"{folder}: its basis {basis_id[:19]}... is not in the registry; register or pull it first"
                )
            pushed_basis = push_artifact(
                basis_entry.path,
                push_basis_to,
                private=private,
                token=token,
                commit_message=commit_message,
                evaluations=registry.evaluations(basis_id),
            )
            registry.set_hub(basis_id, pushed_basis.repo_id, pushed_basis.commit)
            basis_location = (pushed_basis.repo_id, pushed_basis.commit)
            results.append(("basis", pushed_basis))
        else:
            raise HubUsageError(
                f"{folder}: its basis {basis_id[:19]}... is not on the Hub yet; push it first or pass "
                f"{option('push_basis_to')} REPO_ID"
            )
    pushed = push_artifact(
        folder,
        repo_id,
        private=private,
        revision=revision,
        create_pr=create_pr,
        commit_message=commit_message,
        token=token,
        basis_location=basis_location,
        evaluations=registry.evaluations(entry.content_id),
    )
    if not create_pr:
        registry.set_hub(entry.content_id, pushed.repo_id, pushed.commit)
    results.append((entry.kind, pushed))
    return results


def _check_target(repo_id: str) -> None:
    """A push names a repo only: the branch is its own option, and ``@main`` would be read as part of the name."""
    name, revision = split_revision(repo_id)
    if revision is not None:
        raise HubUsageError(
            f"{repo_id}: a push target is a repo id without @revision; give the branch with {option('revision')} "
            f"{revision}",
            repo_id=name,
        )


def _payload_files(artifact: Artifact) -> list[str]:
    """Every file of the folder but the manifest and card (regenerated) and hidden files."""
    skip = {MANIFEST_NAMES[artifact.kind], "README.md"}
    return sorted(
        p.name for p in artifact.path.iterdir() if p.is_file() and p.name not in skip and not p.name.startswith(".")
    )
