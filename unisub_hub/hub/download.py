"""Downloading sources (checkpoints, adapters) from the Hub: only the needed files, pinned."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from .client import api, cache_dir, endpoint, hub_errors, is_offline, matching_files, split_revision

__all__ = ["SOURCE_FILES", "download_source"]

SOURCE_FILES = ("*.safetensors", "*.safetensors.index.json", "config.json", "adapter_config.json")
"""What a source needs: weights in safetensors and the configs; pickles are never fetched."""


def download_source(spec: str, *, allow_patterns: Sequence[str] | None = None) -> tuple[Path, str]:
    """Fetch ``org/name[@revision]`` into the Hugging Face cache; return the folder and commit sha.

    The revision is resolved to a commit sha first and the download pinned to it, so the
    files and the recorded provenance always agree.
    """
    from huggingface_hub import snapshot_download

    repo_id, revision = split_revision(spec)
    with hub_errors(spec):
        if is_offline():
            folder = snapshot_download(repo_id, revision=revision, allow_patterns=list(allow_patterns or SOURCE_FILES), endpoint=endpoint(), cache_dir=cache_dir())
            return Path(folder), Path(folder).name
        info = api().repo_info(repo_id, revision=revision)
        files = matching_files((sibling.rfilename for sibling in info.siblings or []), list(allow_patterns or SOURCE_FILES))
        folder = snapshot_download(repo_id, revision=info.sha, allow_patterns=files, endpoint=endpoint(), cache_dir=cache_dir())
        sha = info.sha
    return Path(folder), sha
