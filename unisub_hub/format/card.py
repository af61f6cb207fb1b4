"""Model cards (``README.md``) for artifacts: Hub metadata in YAML front matter, numbers in the body."""

from __future__ import annotations

from typing import Any

__all__ = ["basis_card", "coefficients_card"]


def _front_matter(base_model: str | None, extra: dict[str, Any] | None = None) -> str:
    """The Hub's card metadata, written by ``huggingface_hub`` (quoting included: a base model
    id is text from a config file, and a colon in it would break hand-written YAML)."""
    from huggingface_hub import ModelCardData

    data = ModelCardData(
        library_name="unisub-hub",
        tags=["unisub-hub", "universal-subspace"],
        base_model=base_model or None,
        **(extra or {}),
    )
    return f"---\n{data.to_yaml()}\n---\n\n"


def _base_model(manifest: dict[str, Any]) -> str | None:
    base = manifest["architecture"].get("base_model")
    return base["id"] if base else None


def _usage(manifest: dict[str, Any], commands: list[str]) -> list[str]:
    """The "Use" section, and the command that made the artifact when known."""
    lines = ["## Use", "", "```bash", *commands, "```"]
    if command := manifest.get("command"):
        lines += ["", "Made with:", "", "```bash", command, "```"]
    return lines


def basis_card(manifest: dict[str, Any]) -> str:
    """Card of a basis: what it is, its layers and quality, how to use it."""
    quality = manifest.get("quality", {})
    rows = []
    for layer in manifest["layers"]:
        q = quality.get(layer["name"], {})
        ev = ", ".join(f"mode {m}: {v:.3f}" for m, v in q.get("explained_variance", {}).items())
        null = ", ".join(f"{v:.3f}" for v in q.get("null_explained_variance", {}).values())
        ranks = ", ".join(f"{m}:{r}" for m, r in layer["ranks"].items())
        rows.append(f"| `{layer['name']}` | {'x'.join(map(str, layer['shape']))} | {ranks} | {ev} | {null or '-'} |")
    sources = manifest["sources"]
    train = sum(1 for s in sources if s.get("role", "train") == "train")
    body = [
        f"# {manifest['name']}: a unisub-hub basis",
        "",
        f"A shared per-layer subspace of **{manifest['architecture']['name']}** built from {train} "
        f"{'LoRA adapters' if manifest['source_kind'] == 'lora' else 'checkpoints'} "
        f"(modes {','.join(map(str, manifest['modes']))}, {'centred' if manifest['centered'] else 'uncentred'}, "
        f"{manifest['dtype']}). Content id `{manifest['content_id']}`.",
        "",
        "| layer | shape | ranks | explained variance | Gaussian null |",
        "|---|---|---|---|---|",
        *rows,
        "",
        *_usage(
            manifest, ["unisub-hub pull <this repo>", "unisub-hub project MY_MODEL --basis <this repo> --out my-task"]
        ),
    ]
    return _front_matter(_base_model(manifest)) + "\n".join(body) + "\n"


def coefficients_card(manifest: dict[str, Any]) -> str:
    """Card of a coefficient set: its basis, size, errors, how to materialize it."""
    basis = manifest["basis"]
    where = f"[{basis['repo_id']}](../{basis['repo_id']})" if basis.get("repo_id") else f"`{basis['content_id']}`"
    metrics = manifest.get("metrics", {})
    sizes = manifest.get("sizes", {})
    body = [
        f"# {manifest['name']}: a unisub-hub coefficient set",
        "",
        f"A fine-tune of **{manifest['architecture']['name']}** stored as coefficients on the basis {where}.",
        "",
    ]
    if sizes:
        body += [f"- {key.replace('_', ' ')}: {value:,} bytes" for key, value in sizes.items()] + [""]
    if "mean_rel_error" in metrics:
        body += [f"- mean relative reconstruction error: {metrics['mean_rel_error']:.4g}", ""]
    body += _usage(manifest, ["unisub-hub pull <this repo> --materialize --base BASE_MODEL --out my-model"])
    extra = {"basis_repo": basis["repo_id"]} if basis.get("repo_id") else None
    return _front_matter(_base_model(manifest), extra) + "\n".join(body) + "\n"
