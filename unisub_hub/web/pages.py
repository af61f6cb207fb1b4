"""What the web view shows, as plain data: the front page, a basis and a task.

These dicts are the ``/api`` answers and what the templates render, so a page and its JSON
never disagree. Listings come from the registry's own queries (one per kind), so the front
page costs the same whatever the number of manifests on disk; only a basis or task page opens
its artifact.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from safetensors import safe_open

from ..errors import ReferenceNotFoundError
from ..format.tensorfile import sha256_files
from ..registry import Registry

__all__ = ["FILTERS", "basis_page", "front_page", "task_page"]

FILTERS = ("architecture", "base_model", "lineage", "name")
"""Query parameters of the front page; each narrows the listings to rows equal to it (name: containing it)."""


def front_page(registry: Registry, filters: dict[str, str] | None = None) -> dict[str, Any]:
    """Bases and tasks, newest first, narrowed by ``filters``, with counts and sizes."""
    given = {key: value for key, value in (filters or {}).items() if key in FILTERS and value}
    architectures = registry.list("architectures")
    base_of = {arch["name"]: arch["base_model"] for arch in architectures}
    bases = [dict(row, base_model=base_of.get(row["architecture"])) for row in registry.list("bases")]
    tasks = [dict(row, base_model=base_of.get(row["architecture"])) for row in registry.list("tasks")]
    bases = [row for row in bases if _matches(row, given, lineage=False)]
    tasks = [row for row in tasks if _matches(row, given, lineage=True)]
    return {
        "filters": given,
        "choices": {
            "architecture": sorted(base_of),
            "base_model": sorted({b for b in base_of.values() if b}),
            "lineage": sorted({row["lineage"] for row in tasks if row["lineage"]} | {"projected", "trained"}),
        },
        "counts": {"bases": len(bases), "tasks": len(tasks)},
        "sizes": {"bases": sum(r["size_bytes"] for r in bases), "tasks": sum(r["size_bytes"] for r in tasks)},
        "bases": [_public(row) for row in bases],
        "tasks": [_public(row) for row in tasks],
    }


def _matches(row: dict[str, Any], given: dict[str, str], *, lineage: bool) -> bool:
    for key, value in given.items():
        if key == "name":
            if value.lower() not in row["name"].lower():
                return False
        elif key == "lineage":
            if not lineage or row.get("lineage") != value:
                return False
        elif row.get(key) != value:
            return False
    return True


def _public(row: dict[str, Any]) -> dict[str, Any]:
    """A listing row without the machine's paths."""
    return {key: value for key, value in row.items() if key != "path"} | {"ref": f"{row['name']}:{row['version']}"}


def basis_page(registry: Registry, ref: str) -> dict[str, Any]:
    """One basis: its card, layers with spectra and null, sources, versions, aliases, its tasks."""
    shown = _show(registry, ref, "basis")
    folder = Path(shown.pop("path"))
    manifest = json.loads((folder / "unisub_basis.json").read_text())
    quality = manifest.get("quality") or {}
    spectra = _spectra(folder, manifest)
    layers = []
    for entry in manifest["layers"]:
        name = entry["name"]
        layer_quality = quality.get(name) or {}
        layers.append(
            {
                "name": name,
                "shape": entry["shape"],
                "modes": entry["modes"],
                "ranks": entry["ranks"],
                "explained_variance": entry.get("explained_variance", {}),
                "null_explained_variance": layer_quality.get("null_explained_variance") or {},
                "mean_rel_error": layer_quality.get("mean_rel_error"),
                "spectra": spectra.get(name, {}),
            }
        )
    ref_text = f"{shown['name']}:{shown['version']}"
    tasks = [row for row in registry.list("tasks") if row["basis"] == ref_text]
    versions = [row for row in registry.list("bases", name=shown["name"])]
    return {
        **shown,
        "ref": ref_text,
        "base_model": (manifest["architecture"].get("base_model") or {}).get("id"),
        "source_kind": manifest["source_kind"],
        "card": _card(folder),
        "layers": layers,
        "sources": [
            {key: source.get(key) for key in ("id", "revision", "sha256", "role", "kind")}
            for source in manifest["sources"]
        ],
        "versions": [{"ref": f"{r['name']}:{r['version']}", "content_id": r["content_id"]} for r in versions],
        "tasks": [_public(row) for row in tasks],
        "stale_tasks": sum(1 for row in tasks if row["stale"]),
        "files": _files(folder),
        "commands": _commands(shown, "basis"),
    }


def task_page(registry: Registry, ref: str) -> dict[str, Any]:
    """One task: lineage with links, errors, evaluations, training record, sizes, files, commands."""
    shown = _show(registry, ref, "task")
    folder = Path(shown.pop("path"))
    manifest = json.loads((folder / "unisub_coefficients.json").read_text())
    known = registry.known_ids()
    lineage = manifest.get("lineage", "projected")
    links: list[dict[str, Any]] = [{"relation": "basis", **_link(registry, manifest["basis"]["content_id"], known)}]
    if manifest.get("source"):
        links.append({"relation": "projected from", "label": manifest["source"].get("id"), "href": None})
    if manifest.get("training"):
        data_hash = manifest["training"].get("data_sha256")
        links.append(
            {"relation": "trained on data", "label": f"sha256:{data_hash}" if data_hash else None, "href": None}
        )
    if manifest.get("rebased_from"):
        links.append({"relation": "rebased from", **_link(registry, manifest["rebased_from"]["content_id"], known)})
    for source in manifest.get("merged_from") or []:
        link = _link(registry, source["content_id"], known)
        links.append({"relation": f"merged from (weight {source['weight']:g})", **link})
    sizes = dict(manifest.get("sizes") or {})
    return {
        **shown,
        "ref": f"{shown['name']}:{shown['version']}",
        "lineage": lineage,
        "links": links,
        "layers": [
            {key: entry.get(key) for key in ("name", "shape", "rel_error", "lora_rank")} for entry in manifest["layers"]
        ],
        "passthrough": [
            {key: p.get(key) for key in ("name", "shape", "dtype", "reason")} for p in manifest.get("passthrough", [])
        ],
        "training": manifest.get("training"),
        "merge": manifest.get("merge"),
        "sizes": sizes,
        "card": _card(folder),
        "files": _files(folder),
        "commands": _commands(shown, "task"),
    }


def _show(registry: Registry, ref: str, kind: str) -> dict[str, Any]:
    shown = registry.show(ref)
    if shown["kind"] != kind:
        raise ReferenceNotFoundError(f"{ref}: a {shown['kind']}, not a {kind}")
    return shown


def _link(registry: Registry, content_id: str, known: set[str]) -> dict[str, Any]:
    """A link to a registered artifact by content id; text only when it is not registered here."""
    if content_id not in known:
        return {"label": content_id[:19] + "...", "href": None}
    for kind in ("task", "basis"):
        entry = registry.find(kind, content_id)
        if entry is not None:
            return {"label": entry.ref, "href": (kind, entry.ref)}
    return {"label": content_id[:19] + "...", "href": None}


def _spectra(folder: Path, manifest: dict[str, Any]) -> dict[str, dict[str, list[float]]]:
    """Per layer and mode, the stored singular values (``<layer>::S<mode>``), read without the factors."""
    out: dict[str, dict[str, list[float]]] = {}
    for file_name in manifest["tensor_files"]:
        with safe_open(str(folder / file_name), "pt") as handle:
            for key in handle.keys():
                layer, _, role = key.rpartition("::")
                if role.startswith("S") and role[1:].isdigit():
                    out.setdefault(layer, {})[role[1:]] = [float(v) for v in handle.get_tensor(key).double().tolist()]
    return out


def _card(folder: Path) -> str:
    card = folder / "README.md"
    return card.read_text(errors="replace") if card.is_file() else ""


def _files(folder: Path) -> list[dict[str, Any]]:
    return [
        {"name": path.name, "size": path.stat().st_size, "sha256": sha256_files([path])}
        for path in sorted(folder.iterdir())
        if path.is_file()
    ]


def _commands(shown: dict[str, Any], kind: str) -> dict[str, str]:
    """What a reader runs next; registry references and Hub ids only, never a path of this machine."""
    ref = f"{shown['name']}:{shown['version']}"
    where = shown.get("hub_repo") or ref
    commands = {"pull": f"unisub-hub pull {shown['hub_repo']}"} if shown.get("hub_repo") else {}
    if kind == "task":
        commands["materialize"] = f"unisub-hub materialize {where} --out {shown['name']}-model"
        commands["serve"] = f"unisub-hub serve {shown['basis']['ref']} --base MODEL --task {shown['name']}={where}"
        commands["eval"] = f"unisub-hub eval {where} --base MODEL --data DATA"
    else:
        commands["project"] = f"unisub-hub project FINE-TUNE --basis {where} --out TASK"
        commands["serve"] = f"unisub-hub serve {where} --base MODEL"
    return commands
