"""Model cards (``README.md``) for artifacts: Hub metadata in YAML front matter, numbers in the body.

The metadata is written by ``huggingface_hub``'s :class:`~huggingface_hub.ModelCardData`
(quoting included) and puts each repo where the Hub's model tree looks for it:
``base_model`` and ``base_model_relation`` (``adapter`` for a basis and a task of a base
model, ``merge`` for a merged task, whose ``base_model`` lists what it merged),
``library_name: unisub-hub``, tags, and ``model-index`` from the scores ``eval`` recorded.

Nothing of the user's file system reaches a card: a base model is named by its Hub id when it
has one and left out otherwise, and paths in the command that made an artifact are cut to
their last part.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = ["basis_card", "coefficients_card", "hub_model_id", "public_command"]

TAGS = ["unisub-hub", "universal-subspace"]
KIND_TAGS = {"basis": "unisub-basis", "task": "unisub-task"}
"""The tag that says what a repo holds, so that a Hub listing can be narrowed to bases or tasks."""
_TASK_TYPES = {
    "causal-lm": "text-generation",
    "messages": "text-generation",
    "prompt-completion": "text-generation",
    "text": "text-generation",
    "classification": "text-classification",
}


def hub_model_id(name: str | None) -> str | None:
    """``name`` when it reads as a Hub model id (``org/name``) and is not a path on this machine."""
    if not name or name.startswith(("/", ".", "~")) or "\\" in name or name.count("/") != 1:
        return None
    if Path(name).expanduser().exists():
        return None
    org, _, model = name.partition("/")
    allowed = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.")
    return name if org and model and set(org) <= allowed and set(model) <= allowed else None


def public_command(command: str | None) -> str | None:
    """The command that made an artifact, with every path cut to its last part."""
    if not command:
        return None
    try:
        words = shlex.split(command)
    except ValueError:
        return None
    return shlex.join(_public_word(word) for word in words)


def _public_word(word: str) -> str:
    if word.startswith("-") or "/" not in word and "\\" not in word:
        return word
    if hub_model_id(word.split("@")[0]) is not None:
        return word
    return Path(word.replace("\\", "/")).name or word


def _front_matter(
    manifest: Mapping[str, Any],
    *,
    kind: str,
    base_models: Sequence[str],
    relation: str | None,
    evaluations: Sequence[Mapping[str, Any]] = (),
    extra: Mapping[str, Any] | None = None,
) -> str:
    from huggingface_hub import EvalResult, ModelCardData

    results = [
        EvalResult(
            task_type=_TASK_TYPES.get(str(e["objective"]), "text-generation"),
            dataset_type="local",
            dataset_name=str(e["data_name"]),
            dataset_revision=str(e["data_sha256"]),
            metric_type=str(e["metric"]),
            metric_value=round(float(e["value"]), 6),
        )
        for e in evaluations
    ]
    fields: dict[str, Any] = {"unisub_content_id": manifest["content_id"], **(extra or {})}
    if base_models:
        fields["base_model"] = list(base_models) if len(base_models) > 1 else base_models[0]
        if relation:
            fields["base_model_relation"] = relation
    data = ModelCardData(
        library_name="unisub-hub",
        tags=[*TAGS, KIND_TAGS[kind], f"unisub-{manifest.get('source_kind', 'lora')}"],
        model_name=manifest["name"] if results else None,
        eval_results=results or None,
        **fields,
    )
    return f"---\n{data.to_yaml()}\n---\n\n"


def _base_model(manifest: Mapping[str, Any]) -> str | None:
    base = manifest["architecture"].get("base_model")
    return hub_model_id(base["id"]) if base else None


def _usage(manifest: Mapping[str, Any], commands: list[str]) -> list[str]:
    """The "Use" section, and the command that made the artifact when known."""
    lines = ["## Use", "", "```bash", *commands, "```"]
    if command := public_command(manifest.get("command")):
        lines += ["", "Made with:", "", "```bash", command, "```"]
    return lines


def _evaluation_lines(evaluations: Sequence[Mapping[str, Any]]) -> list[str]:
    if not evaluations:
        return []
    rows = [
        f"| {e['data_name']} (`{str(e['data_sha256'])[:12]}`) | {e['objective']} | {e['metric']} | "
        f"{float(e['value']):.4f} | {e['count']} | {str(e.get('created', ''))[:10]} |"
        for e in evaluations
    ]
    return [
        "## Evaluation",
        "",
        "| data | objective | metric | value | count | date |",
        "|---|---|---|---|---|---|",
        *rows,
        "",
    ]


def basis_card(manifest: dict[str, Any], evaluations: Sequence[Mapping[str, Any]] = ()) -> str:
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
    held = len(sources) - train
    body = [
        f"# {manifest['name']}: a unisub-hub basis",
        "",
        f"A shared per-layer subspace of **{manifest['architecture']['name']}** built from {train} "
        f"{'LoRA adapters' if manifest['source_kind'] == 'lora' else 'checkpoints'}"
        f"{f' ({held} more held out)' if held else ''} "
        f"(modes {','.join(map(str, manifest['modes']))}, {'centred' if manifest['centered'] else 'uncentred'}, "
        f"{manifest['dtype']}). Content id `{manifest['content_id']}`.",
        "",
        "| layer | shape | ranks | explained variance | Gaussian null |",
        "|---|---|---|---|---|",
        *rows,
        "",
        *_evaluation_lines(evaluations),
        *_usage(
            manifest, ["unisub-hub pull <this repo>", "unisub-hub project MY_MODEL --basis <this repo> --out my-task"]
        ),
    ]
    base = _base_model(manifest)
    front = _front_matter(
        manifest, kind="basis", base_models=[base] if base else [], relation="adapter", evaluations=evaluations
    )
    return front + "\n".join(body) + "\n"


def coefficients_card(manifest: dict[str, Any], evaluations: Sequence[Mapping[str, Any]] = ()) -> str:
    """Card of a coefficient set: its basis, size, lineage, training and scores, how to use it."""
    basis = manifest["basis"]
    where = f"[{basis['repo_id']}](../{basis['repo_id']})" if basis.get("repo_id") else f"`{basis['content_id']}`"
    body = [
        f"# {manifest['name']}: a unisub-hub coefficient set",
        "",
        f"A fine-tune of **{manifest['architecture']['name']}** stored as coefficients on the basis {where} "
        f"(lineage: {manifest.get('lineage', 'projected')}).",
        "",
    ]
    if sizes := manifest.get("sizes", {}):
        body += [f"- {key.replace('_', ' ')}: {value:,} bytes" for key, value in sizes.items()] + [""]
    if "mean_rel_error" in (metrics := manifest.get("metrics") or {}):
        body += [f"- mean relative reconstruction error: {metrics['mean_rel_error']:.4g}", ""]
    body += _training_lines(manifest)
    body += _merge_lines(manifest)
    body += _evaluation_lines(evaluations)
    body += _usage(manifest, ["unisub-hub pull <this repo> --materialize --base BASE_MODEL --out my-model"])
    extra = {"basis_repo": basis["repo_id"]} if basis.get("repo_id") else {}
    extra["basis_content_id"] = basis["content_id"]
    merged = manifest.get("merged_from") or []
    sources = [hub_model_id(m.get("repo_id")) for m in merged]
    if merged and all(sources):
        bases, relation = [s for s in sources if s], "merge"
    else:
        base = _base_model(manifest)
        bases, relation = ([base] if base else []), "adapter"
    front = _front_matter(
        manifest, kind="task", base_models=bases, relation=relation, evaluations=evaluations, extra=extra
    )
    return front + "\n".join(body) + "\n"


def _training_lines(manifest: Mapping[str, Any]) -> list[str]:
    training = manifest.get("training")
    if not training:
        return []
    hyper = training.get("hyperparameters") or {}
    shown = ", ".join(
        f"{key} {hyper[key]}"
        for key in ("epochs", "max_steps", "lr", "batch_size", "seed", "max_length")
        if hyper.get(key) is not None
    )
    metrics = {k: v for k, v in (manifest.get("metrics") or {}).items() if isinstance(v, int | float)}
    lines = [
        "## Training",
        "",
        f"- objective: {training.get('objective', 'classification')}, {training.get('steps')} steps "
        f"from `{training.get('init', 'zero')}`",
        f"- hyper-parameters: {shown}",
        f"- data sha256: `{training.get('data_sha256')}`",
    ]
    if metrics:
        lines.append("- final metrics: " + ", ".join(f"{k} {v:.4g}" for k, v in metrics.items()))
    return [*lines, ""]


def _merge_lines(manifest: Mapping[str, Any]) -> list[str]:
    merged = manifest.get("merged_from")
    if not merged:
        return []
    method = manifest.get("merge") or {}
    rows = [f"| {m.get('name')} | `{str(m.get('content_id'))[:19]}...` | {m.get('weight')} |" for m in merged]
    params = ", ".join(f"{k} {v}" for k, v in method.items())
    return [
        "## Merge",
        "",
        f"Merged in coefficient space ({params}) from:",
        "",
        "| task | content id | weight |",
        "|---|---|---|",
        *rows,
        "",
    ]
