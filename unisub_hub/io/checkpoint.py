"""Full checkpoints on disk: safetensors (single file or HF-style shards), read lazily.

Only the tensors asked for are read (safetensors' ``safe_open``), and row slices are read
without loading the rest of the tensor. Pickle files are refused unless explicitly allowed,
and then loaded with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Sequence
from functools import cached_property
from pathlib import Path
from typing import Any, NamedTuple

import torch

from ..engine.matrix import Dense, matrix_view, row_index
from ..errors import FormatError, PickleRefusedError, SourceError
from ..format.tensorfile import open_tensor_file, sha256_files
from .files import LocalFile, LocalTree, SourceTree, WeightFile, read_config, source_sha256

__all__ = [
    "PICKLE_SUFFIXES",
    "CheckpointSource",
    "TensorInfo",
    "find_tensor_files",
    "load_pickle_safely",
    "provenance_id",
]

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")


def load_pickle_safely(path: Path, source: str) -> dict[str, torch.Tensor]:
    """``torch.load`` with ``weights_only=True`` (no code runs); any refusal or damage becomes one line."""
    try:
        with warnings.catch_warnings():  # torch warns about pickle protocols; the one line below is what the user needs
            warnings.simplefilter("ignore")
            loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # UnpicklingError for a payload the safe loader blocks, RuntimeError/EOFError for damage
        first = str(error).strip().splitlines()[0] if str(error).strip() else error.__class__.__name__
        raise SourceError(
            f"{path.name}: not a plain tensor file the safe loader accepts ({first:.200})", source=source
        ) from None
    if not isinstance(loaded, dict) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in loaded.items()
    ):
        raise SourceError(f"{path.name}: does not hold a mapping of names to tensors", source=source)
    return loaded


class TensorInfo(NamedTuple):
    """Shape and dtype name of a stored tensor, as its file header gives them."""

    shape: tuple[int, ...]
    dtype: str


def provenance_id(name: str, revision: str | None) -> str:
    """The id a manifest records: a Hub source's repo id (its revision is a field of its own), else the name."""
    return name.split("@", 1)[0] if revision is not None else name


def find_tensor_files(tree: SourceTree, stem: str = "model", sub: str = "") -> list[str]:
    """The safetensors files of a checkpoint folder: the index's shards, ``<stem>.safetensors``, or all.

    ``sub`` is a component subfolder (``unet/``) or empty for the top level. One rule for
    single files and shards alike: a file is named by a bare file name inside its folder; a
    name in an index that climbs out of the folder is refused.
    """
    index = f"{sub}{stem}.safetensors.index.json"
    if index in tree.names:
        return [sub + name for name in sorted(set(_shard_names(tree, index).values()))]
    if (single := f"{sub}{stem}.safetensors") in tree.names:
        return [single]
    return sorted(
        name
        for name in tree.names
        if name.startswith(sub) and "/" not in name[len(sub) :] and name.endswith(".safetensors")
    )


def _shard_names(tree: SourceTree, index: str) -> dict[str, str]:
    """The index's ``weight_map`` (tensor -> shard file name), checked to name existing files in its folder."""
    where = tree.folder / index
    try:
        weight_map = json.loads(tree.read_text(index)).get("weight_map")
    except (ValueError, AttributeError) as error:  # ValueError: bad JSON or UTF-8, or an integer past the digit limit
        raise FormatError(f"not a valid safetensors index ({error.__class__.__name__})", path=where) from None
    if not isinstance(weight_map, dict) or not weight_map:
        raise FormatError(
            "not a valid safetensors index (weight_map must map tensor names to shard file names)", path=where
        )
    folder = index.rpartition("/")[0]
    for tensor, name in weight_map.items():
        if not isinstance(name, str) or Path(name).name != name or name in {"", ".", ".."} or "\\" in name:
            raise FormatError(
                f"tensor {tensor!r:.80} is mapped to {name!r:.80}, which is not a file name in the index's folder",
                path=where,
            )
        if (f"{folder}/{name}" if folder else name) not in tree.names:
            raise FormatError(f"shard {name} named in the index is missing", path=where)
    return weight_map


def _component_files(tree: SourceTree) -> dict[str, str]:
    """Weight files of a diffusers-style folder, one component per subfolder, with name prefixes."""
    found: dict[str, str] = {}
    for component in sorted({name.split("/")[0] for name in tree.names if "/" in name}):
        sub = f"{component}/"
        diffusers = any(
            f"{sub}diffusion_pytorch_model{suffix}" in tree.names
            for suffix in (".safetensors", ".safetensors.index.json")
        )
        files = find_tensor_files(tree, "diffusion_pytorch_model" if diffusers else "model", sub)
        found.update({name: f"{component}." for name in files})
    return found


class CheckpointSource:
    """A full checkpoint folder (or one ``.safetensors`` file) as a :class:`MatrixSource`.

    Args:
        path: folder with ``model.safetensors``, HF-style shards and index, or any
            ``*.safetensors``; a diffusers-style folder whose components sit in subfolders
            (``unet/diffusion_pytorch_model.safetensors``, ...; their tensors are named
            ``<subfolder>.<tensor>``); a single ``.safetensors`` file; or the
            :class:`~.files.SourceTree` of a Hub repo, whose weights are downloaded when first read.
        name: how reports refer to it (defaults to the path).
        revision: a Hub commit sha when the folder is a Hub snapshot.
        allow_pickle: accept ``.bin``/``.pt`` weights (loaded with ``weights_only=True``).
    """

    kind = "checkpoint"
    factored = False

    def __init__(
        self,
        path: str | Path | SourceTree,
        *,
        name: str | None = None,
        revision: str | None = None,
        allow_pickle: bool = False,
    ) -> None:
        tree: SourceTree | None = None
        if isinstance(path, str | os.PathLike):
            self.path = Path(path)
        else:
            tree, self.path = path, path.folder
        self.name = name or str(self.path)
        self.revision = revision
        self._pickled: dict[str, torch.Tensor] | None = None
        self.prefixes: dict[str, str] = {}
        """Weight file name -> tensor name prefix, for the components of a diffusers-style folder."""
        if tree is None:
            if not self.path.exists():
                raise SourceError("no such file or folder", source=self.name)
            tree = LocalTree.at(self.path)
        single = isinstance(tree, LocalTree) and tree.only is not None and self.path.suffix not in PICKLE_SUFFIXES
        names = [self.path.name] if single else find_tensor_files(tree)
        if not names:
            self.prefixes = _component_files(tree)
            names = sorted(self.prefixes)
        self.files: list[WeightFile] = [tree.weight(name) for name in names]
        if not self.files:
            pickles = sorted(name for name in tree.names if "/" not in name and Path(name).suffix in PICKLE_SUFFIXES)
            if not pickles:
                raise SourceError("no .safetensors weights found", source=self.name)
            if not allow_pickle:
                raise PickleRefusedError(f"{pickles[0]} is a pickle file; refusing to load it", source=self.name)
            self.files = [tree.weight(name) for name in pickles]
            self._pickled = {}
            for file in self.files:
                self._pickled.update(load_pickle_safely(file.local(), self.name))

    @property
    def tensors(self) -> dict[str, TensorInfo]:
        """Every tensor's shape and dtype, from the file headers alone."""
        return self._index[0]

    @cached_property
    def _index(self) -> tuple[dict[str, TensorInfo], dict[str, tuple[WeightFile, str]]]:
        if self._pickled is not None:
            return {
                n: TensorInfo(tuple(t.shape), str(t.dtype).removeprefix("torch.")) for n, t in self._pickled.items()
            }, {}
        table: dict[str, TensorInfo] = {}
        where: dict[str, tuple[WeightFile, str]] = {}
        for file in self.files:
            header = file.header()
            header.pop("__metadata__", None)
            prefix = self.prefixes.get(file.name, "")
            for tensor_name, entry in header.items():
                table[prefix + tensor_name] = TensorInfo(tuple(entry["shape"]), entry["dtype"])
                where[prefix + tensor_name] = (file, tensor_name)
        return table, where

    def _location(self, name: str) -> tuple[WeightFile, str]:
        """The file holding tensor ``name`` and its key inside that file."""
        try:
            return self._index[1][name]
        except KeyError:
            raise SourceError(f"tensor {name} not found", source=self.name) from None

    def tensor(self, name: str) -> torch.Tensor:
        """One tensor, read from its file."""
        if self._pickled is not None:
            return self._pickled[name]
        file, key = self._location(name)
        with open_tensor_file(file.local()) as handle:
            return handle.get_tensor(key)

    def load(self, names: Sequence[str]) -> dict[str, Dense]:
        if self._pickled is not None:
            return {n: Dense(matrix_view(self._pickled[n])) for n in names}
        out: dict[str, Dense] = {}
        by_file: dict[str, list[str]] = {}
        for name in names:
            by_file.setdefault(self._location(name)[0].name, []).append(name)
        for file_names in by_file.values():
            with open_tensor_file(self._location(file_names[0])[0].local()) as handle:
                for name in file_names:
                    out[name] = Dense(matrix_view(handle.get_tensor(self._location(name)[1])))
        return out

    def load_rows(self, name: str, start: int, stop: int) -> torch.Tensor:
        if self._pickled is not None:
            return matrix_view(self._pickled[name])[start:stop]
        file, key = self._location(name)
        with open_tensor_file(file.local()) as handle:
            part = handle.get_slice(key)[row_index(self.tensors[name].shape, start, stop)]
        return part.reshape(stop - start, -1)

    def provenance(self) -> dict[str, Any]:
        """``id``, ``revision``, ``sha256`` (over the weight files) and ``kind`` for manifests."""
        return {
            "id": provenance_id(self.name, self.revision),
            "revision": self.revision,
            "sha256": self.sha256,
            "kind": self.kind,
        }

    @cached_property
    def sha256(self) -> str:
        return source_sha256(self.files)

    @cached_property
    def legacy_sha256(self) -> str | None:
        """The identity unisub-hub before 0.2 recorded: sha256 over the files' bytes concatenated in file-name order.

        The same as :attr:`sha256` for a single file; ``None`` for a Hub source with several,
        whose bytes are not on this machine.
        """
        if len(self.files) == 1:
            return self.sha256
        if not all(isinstance(file, LocalFile) for file in self.files):
            return None
        return sha256_files([file.local() for file in self.files])

    def size_bytes(self) -> int:
        return sum(file.size for file in self.files)

    # --- what a coefficient set of this source keeps (see unisub_hub.format.kinds) ------------

    def missing_layer(self, layer: str) -> str:
        """Why a layer the basis decomposes may be missing here."""
        return f"has no tensor {layer}, which the basis decomposes (wrong architecture?)"

    def layer_fields(self, layer: str) -> dict[str, Any]:
        """Per-layer manifest fields a projection of this source records (none for a checkpoint)."""
        return {}

    def lora_block(self) -> dict[str, Any] | None:
        """The ``lora`` manifest block of a projection (none for a checkpoint)."""
        return None

    def passthrough(self, covered: set[str]) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
        """Every tensor outside ``covered``, stored whole, and why: a task materializes without the base model."""
        tensors: dict[str, torch.Tensor] = {}
        reasons: dict[str, str] = {}
        for key, info in self.tensors.items():
            if key not in covered:
                tensors[key] = self.tensor(key)
                reasons[key] = f"{len(info.shape)}-D tensor" if len(info.shape) < 2 else "not in the basis"
        return tensors, reasons

    def stored(self, key: str) -> torch.Tensor | None:
        """The tensor stored under ``key``, if the checkpoint has one."""
        return self.tensor(key) if key in self.tensors else None

    def member_config(self) -> dict[str, Any] | None:
        """The checkpoint's own ``config.json`` when it has a readable one: a member's head
        (``num_labels``, ``id2label``) may differ from the base's, and only its own config loads it."""
        return read_config(self.path / "config.json") if self.path.is_dir() else None

    def architecture(self) -> tuple[str, dict[str, Any] | None]:
        """Architecture name (the config's first ``architectures`` entry or ``model_type``) and base model."""
        folder = self.path if self.path.is_dir() else self.path.parent
        config = read_config(folder / "config.json") or {}
        architectures = config.get("architectures")
        first = architectures[0] if isinstance(architectures, list) and architectures else None
        name = (first if isinstance(first, str) else None) or config.get("model_type")
        return (str(name), None) if name else ("unknown", None)
