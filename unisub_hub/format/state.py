"""A basis's growth state on disk: ``<basis>/state/`` (``unisub_state.json`` + ``state.safetensors``).

The state is what ``build --update`` needs to add members without reading the old ones
(see :mod:`unisub_hub.engine.grow`): per layer the member count, the total variance and
per side a Gram or a sketch with its test matrix. It lives in a subfolder of the basis, outside
the basis's content id (the basis means the same with or without it) and outside what a push
publishes (it is large, and only its builder grows the basis). It is bound to its basis by the
basis's content id and checked by two sha256: of its tensor file, and of its numbers (each
layer's member count, total variance and sides), so an edited count or total is refused
rather than grown from.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import uuid
from pathlib import Path
from typing import Any

from ..constants import FORMAT_VERSION
from ..engine.grow import LayerState, SideState
from ..errors import FormatError, option
from .common import stored_name
from .tensorfile import content_id, read_tensors, write_tensor_file

__all__ = ["STATE_FOLDER", "has_state", "load_state", "save_state"]

STATE_FOLDER = "state"
_MANIFEST = "unisub_state.json"
_TENSORS = "state.safetensors"
_FORMAT = "unisub-hub/state"


def has_state(basis_folder: Path) -> bool:
    return (Path(basis_folder) / STATE_FOLDER / _MANIFEST).is_file()


def save_state(basis_folder: Path, basis_id: str, states: dict[str, LayerState]) -> dict[str, Any]:
    """Write the state beside the basis's files (atomically: a temporary folder renamed into place)."""
    tensors = {}
    layers: dict[str, Any] = {}
    for name, state in states.items():
        sides = {}
        for mode, side in state.sides.items():
            tensors[stored_name(name, f"G{mode}")] = side.sums.double().contiguous()
            entry: dict[str, Any] = {"kind": side.kind, "dim": side.sums.shape[0], "bytes": side.sums.numel() * 8}
            if side.test is not None:
                tensors[stored_name(name, f"O{mode}")] = side.test.double().contiguous()
                entry.update(width=side.test.shape[1], bytes=entry["bytes"] * 2)
            sides[str(mode)] = entry
        layers[name] = {"count": state.count, "total": state.total, "sides": sides}
    folder = Path(basis_folder)
    tmp = folder / f".{STATE_FOLDER}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        size = write_tensor_file(tmp / _TENSORS, tensors, {"format": _FORMAT, "format_version": FORMAT_VERSION})
        manifest = {
            "format": _FORMAT,
            "format_version": FORMAT_VERSION,
            "basis": basis_id,
            "sha256": content_id([tmp / _TENSORS]),
            "numbers_sha256": _numbers_digest(layers),
            "bytes": size,
            "layers": layers,
        }
        (tmp / _MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
        if (folder / STATE_FOLDER).exists():
            shutil.rmtree(folder / STATE_FOLDER)
        os.replace(tmp, folder / STATE_FOLDER)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return manifest


def load_state(basis_folder: Path, basis_id: str) -> dict[str, LayerState]:
    """The state of the basis at ``basis_folder`` whose content id is ``basis_id``, checked.

    Raises:
        FormatError: no state (built without ``keep_state``), a state of another basis, or
            one whose bytes changed.
    """
    folder = Path(basis_folder) / STATE_FOLDER
    if not (folder / _MANIFEST).is_file():
        raise FormatError(
            f"this basis has no growth state (build it with {option('keep_state')} to add members later)",
            path=basis_folder,
        )
    try:
        manifest = json.loads((folder / _MANIFEST).read_text())
    except ValueError as error:
        raise FormatError(f"state manifest is not valid JSON ({str(error)[:120]})", path=folder / _MANIFEST) from None
    if (
        not isinstance(manifest, dict)
        or manifest.get("format") != _FORMAT
        or not isinstance(manifest.get("layers"), dict)
    ):
        raise FormatError("not a growth-state manifest", path=folder / _MANIFEST)
    if manifest.get("basis") != basis_id:
        raise FormatError(
            f"the state belongs to basis {str(manifest.get('basis'))[:19]}..., not to {basis_id[:19]}...", path=folder
        )
    _check_numbers(manifest["layers"], folder / _MANIFEST)
    if "numbers_sha256" not in manifest:
        raise FormatError(
            "the state was written before its numbers were checksummed (unisub-hub < 0.3): rebuild the basis with "
            f"{option('keep_state')} to grow it",
            path=folder / _MANIFEST,
        )
    if manifest["numbers_sha256"] != _numbers_digest(manifest["layers"]):
        raise FormatError(
            "the state's numbers (member counts, totals, sides or layers) changed since they were written",
            path=folder / _MANIFEST,
        )
    if not (folder / _TENSORS).is_file() or content_id([folder / _TENSORS]) != manifest.get("sha256"):
        raise FormatError("the state's tensors are missing or changed since they were written", path=folder)
    names = [
        stored_name(layer, f"{role}{mode}")
        for layer, entry in manifest["layers"].items()
        for mode, side in entry["sides"].items()
        for role in ("G", "O")
        if role == "G" or side["kind"] == "sketch"
    ]
    tensors = read_tensors(folder / _TENSORS, names)
    states = {}
    for layer, entry in manifest["layers"].items():
        sides = {
            int(mode): SideState(tensors[stored_name(layer, f"G{mode}")], tensors.get(stored_name(layer, f"O{mode}")))
            for mode in entry["sides"]
        }
        states[layer] = LayerState(count=int(entry["count"]), total=float(entry["total"]), sides=sides)
    return states


def _numbers_digest(layers: dict[str, Any]) -> str:
    """sha256 of the layers block as canonical JSON: every number an update reads."""
    text = json.dumps(layers, sort_keys=True, separators=(",", ":"), allow_nan=True)
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def _check_numbers(layers: dict[str, Any], path: Path) -> None:
    """Each layer has a positive integer count, a finite non-negative total and known sides."""
    for name, entry in layers.items():
        if not isinstance(entry, dict):
            raise FormatError(f"layer {name}: not an object", path=path)
        count, total, sides = entry.get("count"), entry.get("total"), entry.get("sides")
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            raise FormatError(f"layer {name}: count {count!r} is not a positive whole number of members", path=path)
        if isinstance(total, bool) or not isinstance(total, int | float) or not math.isfinite(total) or total < 0:
            raise FormatError(f"layer {name}: total {total!r} is not a finite variance", path=path)
        if not isinstance(sides, dict) or not sides:
            raise FormatError(f"layer {name}: no sides", path=path)
        for mode, side in sides.items():
            if mode not in ("2", "3") or not isinstance(side, dict) or side.get("kind") not in ("gram", "sketch"):
                raise FormatError(f"layer {name}: side {mode!r} is not a mode 2 or 3 Gram or sketch", path=path)
