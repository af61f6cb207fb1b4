"""``unisub-hub push`` and ``unisub-hub pull``."""

from __future__ import annotations

from pathlib import Path

import click

from ..errors import HubUsageError
from ..format import load_basis, load_coefficients
from ..hub.pull import pull
from ..hub.push import publish
from ..pipeline.materialize import FORMATS, materialize
from .options import device_option, json_option, shard_size_option
from .output import emit_json, stdout
from .refs import open_registry, resolve_folder

token_option = click.option(
    "--token", default=None, help="Hub token (default: HF_TOKEN or the saved login). Never printed."
)


@click.command("push")
@click.argument("ref")
@click.argument("repo_id")
@click.option("--private", is_flag=True, help="Create the repo as private.")
@click.option("--revision", default=None, help="Branch to commit to (created if needed; default main).")
@click.option("--create-pr", is_flag=True, help="Open a pull request instead of committing to the branch.")
@click.option("--commit-message", default=None, help="Commit message.")
@click.option(
    "--push-basis",
    "basis_repo",
    default=None,
    help="For a coefficient set whose basis is not on the Hub yet: push the basis to this repo first.",
)
@token_option
@json_option
def push_command(ref, repo_id, private, revision, create_pr, commit_message, basis_repo, token, as_json):
    """Publish a basis or coefficient set (folder or registry reference) as a Hub repo.

    A coefficient set names its basis repo and commit, so the basis must be on the Hub first
    (or pass --push-basis).

    Example:

        unisub-hub push sst2-task me/minilm-sst2 --push-basis me/minilm-basis
    """
    results = publish(
        resolve_folder(ref),
        repo_id,
        open_registry(),
        private=private,
        revision=revision,
        create_pr=create_pr,
        commit_message=commit_message,
        token=token,
        push_basis_to=basis_repo,
    )
    if as_json:
        emit_json(
            [
                {"kind": kind, "repo_id": r.repo_id, "commit": r.commit, "url": r.url, "pr_url": r.pr_url}
                for kind, r in results
            ]
        )
        return
    for kind, result in results:
        stdout.print(
            f"pushed {kind} to {result.repo_id} at {result.commit}"
            + (f" (pull request {result.pr_url})" if result.pr_url else "")
        )


@click.command("pull")
@click.argument("spec", metavar="REPO_ID[@REVISION]")
@click.option("--materialize", "do_materialize", is_flag=True, help="Also materialize the pulled coefficient set.")
@click.option(
    "--base", type=click.Path(exists=True, path_type=Path), default=None, help="Base model folder (with --materialize)."
)
@click.option("--out", type=click.Path(path_type=Path), default=None, help="Output folder (with --materialize).")
@click.option(
    "--format", "fmt", type=click.Choice(FORMATS), default="auto", show_default=True, help="Materialized format."
)
@shard_size_option("5GB")
@device_option
@token_option
@json_option
def pull_command(spec, do_materialize, base, out, fmt, shard_size, device, token, as_json):
    """Download a basis or coefficient set (and its basis) at a pinned commit, verify, register.

    Works offline (HF_HUB_OFFLINE=1) for what is already in the registry.

    Example:

        unisub-hub pull me/minilm-sst2 --materialize --out sst2-adapter
    """
    if do_materialize and out is None:
        raise click.UsageError("--materialize needs --out")
    registry = open_registry()
    entry = pull(spec, registry, token=token)
    result = {"pulled": entry.to_dict()}
    if do_materialize:
        if entry.kind != "task":
            raise HubUsageError(f"{spec}: is a basis; --materialize needs a coefficient set")
        coefficients = load_coefficients(entry.path)
        basis = load_basis(registry.resolve(coefficients.basis_id, "basis").path)
        made = materialize(coefficients, basis, out, base=base, fmt=fmt, shard_size=shard_size, device=device)
        result["materialized"] = {"path": str(made.path), "format": made.format, "files": made.files}
    if as_json:
        emit_json(result)
        return
    stdout.print(
        f"pulled {entry.kind} {entry.ref} ({entry.content_id[:19]}...) from {entry.hub_repo}@{entry.hub_revision}"
    )
    if "materialized" in result:
        stdout.print(f"materialized {result['materialized']['format']} output to {result['materialized']['path']}")
