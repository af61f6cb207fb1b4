"""LoRA adapters on disk: PEFT folders, and kohya/A1111 or diffusers files (see ``lora_layouts``).

Each adapted module becomes one layer named after the base weight it changes
(``<module>.weight``), in canonical low-rank form ``P diag(s) Q^T`` of ``scale * B A``,
so the engine never forms ``B A``. Linear, conv (``out x in*kh*kw``), embedding
(``lora_embedding_A/B``) and ``fan_in_fan_out`` (GPT-2 ``Conv1D``) modules are understood;
per-module ``rank_pattern``/``alpha_pattern`` and rsLoRA set each module's scale in a PEFT
folder, a module's ``.alpha`` tensor in the other layouts. Tensors that are not LoRA factors
(``modules_to_save`` heads, ...) are passthrough.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import torch

from ..engine.matrix import Factored, lora_scale
from ..errors import PickleRefusedError, SourceError
from ..format.kinds import LORA
from ..format.tensorfile import open_tensor_file, read_tensors
from .checkpoint import TensorInfo, load_pickle_safely, provenance_id
from .files import LocalTree, SourceTree, WeightFile, source_sha256
from .lora_layouts import LAYOUTS, detect_lora_layout

__all__ = ["ADAPTER_CONFIG", "ADAPTER_WEIGHTS", "LoraModule", "LoraSource", "is_lora", "pattern_value"]

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"


def is_lora(where: Path | SourceTree) -> bool:
    """A PEFT adapter folder, or a kohya/diffusers LoRA file (or a folder holding one)."""
    tree = LocalTree.at(where) if isinstance(where, Path) else where
    return ADAPTER_CONFIG in tree.names or detect_lora_layout(tree) is not None


def pattern_value(patterns: dict[str, Any], module: str, default: Any) -> Any:
    """PEFT's ``rank_pattern``/``alpha_pattern`` lookup: a key matches a module name's dotted suffix."""
    for key, value in patterns.items():
        if re.match(rf"(.*\.)?({key})$", module):
            return value
    return default


@dataclass(frozen=True)
class LoraModule:
    """One adapted module: its keys in the adapter file, its kind and its shape.

    Its scale is :attr:`LoraSource.scales`.
    """

    module: str
    """Module name (the layer name without ``.weight``).

    PEFT's without ``base_model.model.``, else as the file spells it.
    """
    kind: str
    """``linear``, ``conv`` or ``embedding``."""
    rank: int
    tensor_shape: tuple[int, ...]
    transposed: bool
    """``fan_in_fan_out``: the base weight is ``in x out`` and the update is ``(B A)^T``."""
    key_a: str
    """The file's key of the down factor ``A`` (``lora_A``, ``lora_down``, ``lora_embedding_A``)."""
    key_b: str
    """The file's key of the up factor ``B``."""
    alpha_key: str | None = None
    """The file's key of the module's alpha, in layouts that store one."""

    @property
    def keys(self) -> tuple[str, ...]:
        """Every key of the file that belongs to this module."""
        return (self.key_a, self.key_b) + ((self.alpha_key,) if self.alpha_key else ())

    @property
    def layer(self) -> str:
        return f"{self.module}.weight"


@dataclass(frozen=True)
class _LoraSettings:
    """The parts of ``adapter_config.json`` that decide each module's rank and scale, checked once."""

    r: int
    alpha: float
    use_rslora: bool
    fan_in_fan_out: bool
    rank_pattern: dict[str, int]
    alpha_pattern: dict[str, float]

    @classmethod
    def read(cls, config: dict[str, Any], source: str) -> _LoraSettings:
        def fail(problem: str) -> SourceError:
            return SourceError(f"{ADAPTER_CONFIG}: {problem}", source=source)

        def rank(value: Any, where: str) -> int:
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise fail(f"{where} must be a positive integer, got {value!r:.60}")
            return value

        def alpha(value: Any, where: str) -> float:
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value == 0:
                raise fail(f"{where} must be a finite non-zero number, got {value!r:.60}")
            return float(value)

        def flag(name: str) -> bool:
            value = config.get(name, False)
            if not isinstance(value, bool) and value is not None:
                raise fail(f"{name} must be true or false, got {value!r:.60}")
            return bool(value)

        def patterns(name: str, check: Any) -> dict[str, Any]:
            table = config.get(name) or {}
            if not isinstance(table, dict):
                raise fail(f"{name} must map module-name patterns to values, got {type(table).__name__}")
            for key in table:
                try:
                    re.compile(key)
                except re.error as error:
                    raise fail(f"{name} key {key!r:.60} is not a valid regular expression ({error})") from None
            return {
                key: check(value, f"{name}[{key!r:.60}]") for key, value in table.items()
            }  # the config itself stays as read

        r = rank(config.get("r", 8), "r")
        return cls(
            r=r,
            alpha=alpha(config.get("lora_alpha", r), "lora_alpha"),
            use_rslora=flag("use_rslora"),
            fan_in_fan_out=flag("fan_in_fan_out"),
            rank_pattern=patterns("rank_pattern", rank),
            alpha_pattern=patterns("alpha_pattern", alpha),
        )


class LoraSource:
    """A LoRA adapter (a PEFT folder, a kohya or diffusers file) as a :class:`MatrixSource` of low-rank updates.

    Args:
        path: the folder or file, or the :class:`~.files.SourceTree` of a Hub repo, whose
            weights are downloaded when first read.
        name: how reports refer to it (defaults to the path).
        revision: a Hub commit sha when the folder is a Hub snapshot.
        allow_pickle: accept ``adapter_model.bin`` (loaded with ``weights_only=True``).
    """

    kind = "lora"
    factored = True

    def __init__(
        self,
        path: str | Path | SourceTree,
        *,
        name: str | None = None,
        revision: str | None = None,
        allow_pickle: bool = False,
    ) -> None:
        tree = LocalTree.at(Path(path)) if isinstance(path, str | os.PathLike) else path
        self.path = Path(path) if isinstance(path, str | os.PathLike) else tree.folder
        self.name = name or str(self.path)
        self.revision = revision
        self._pickled: dict[str, torch.Tensor] | None = None
        self.config: dict[str, Any] = {}
        self.settings: _LoraSettings | None = None
        self.weights: WeightFile
        if ADAPTER_CONFIG not in tree.names and (found := detect_lora_layout(tree)) is not None:
            self.layout, self.weights = (
                found[0],
                tree.weight(found[1]),
            )  # kohya or diffusers: alphas are in the file, there is no config
            return
        self.layout = LAYOUTS["peft"]
        if ADAPTER_CONFIG not in tree.names:
            raise SourceError(
                f"no {ADAPTER_CONFIG}: not a PEFT adapter folder (nor a kohya or diffusers LoRA file)", source=self.name
            )
        try:
            self.config = json.loads(tree.read_text(ADAPTER_CONFIG))
        except ValueError as error:  # bad JSON, bad UTF-8, or an integer past Python's digit limit
            raise SourceError(
                f"{ADAPTER_CONFIG} is not valid JSON ({error.__class__.__name__})", source=self.name
            ) from None
        if not isinstance(self.config, dict):
            raise SourceError(f"{ADAPTER_CONFIG} is not a JSON object", source=self.name)
        if str(self.config.get("peft_type", "LORA")).upper() != "LORA":
            raise SourceError(
                f"peft_type is {self.config.get('peft_type')!r}; only LoRA adapters are supported", source=self.name
            )
        if self.config.get("use_dora"):
            raise SourceError(
                "DoRA adapters (use_dora) are not a plain low-rank update; not supported", source=self.name
            )
        if ADAPTER_WEIGHTS in tree.names:
            self.weights = tree.weight(ADAPTER_WEIGHTS)
        else:
            pickled = "adapter_model.bin"
            if pickled not in tree.names:
                raise SourceError(f"no {ADAPTER_WEIGHTS} found", source=self.name)
            if not allow_pickle:
                raise PickleRefusedError(f"{pickled} is a pickle file; refusing to load it", source=self.name)
            self.weights = tree.weight(pickled)
            self._pickled = load_pickle_safely(self.weights.local(), self.name)
        self.settings = _LoraSettings.read(self.config, self.name)

    @cached_property
    def header(self) -> dict[str, TensorInfo]:
        if self._pickled is not None:
            return {
                n: TensorInfo(tuple(t.shape), str(t.dtype).removeprefix("torch.")) for n, t in self._pickled.items()
            }
        raw = self.weights.header()
        raw.pop("__metadata__", None)
        return {n: TensorInfo(tuple(e["shape"]), e["dtype"]) for n, e in raw.items()}

    @cached_property
    def modules(self) -> dict[str, LoraModule]:
        """Adapted modules keyed by layer name (``<module>.weight``)."""
        layout = self.layout
        parts: dict[str, dict[str, tuple[str, TensorInfo]]] = {}
        for key, info in self.header.items():
            if match := layout.key.match(key):
                parts.setdefault(match["stem"], {})[layout.roles[match["part"]]] = (key, info)
        tucker = sorted(stem for stem in parts if f"{stem}.lora_mid.weight" in self.header)
        if tucker:  # LyCORIS LoCon with a Tucker core: the update is up x mid x down, not up x down
            raise SourceError(
                f"module {layout.module(tucker[0])} has a lora_mid core (LyCORIS Tucker LoCon, {len(tucker)} such "
                "modules): unisub-hub reads two-factor LoRA only; convert or merge these modules first",
                source=self.name,
            )
        out: dict[str, LoraModule] = {}
        for stem, found in parts.items():
            module = layout.module(stem)
            embedding = "embedding_A" in found
            (key_a, a), (key_b, b) = (
                found.get("embedding_A" if embedding else "A", ("", None)),
                found.get("embedding_B" if embedding else "B", ("", None)),
            )
            if a is None or b is None:
                raise SourceError(f"module {module} has only one of its LoRA factors", source=self.name)
            if len(a.shape) < 2 or len(b.shape) < 2:
                raise SourceError(
                    f"module {module}: LoRA factors must be matrices, got shapes {list(a.shape)} and {list(b.shape)}",
                    source=self.name,
                )
            shape: tuple[int, ...]
            if embedding:  # A: r x num_embeddings, B: dim x r; base weight num_embeddings x dim
                rank, shape, kind = a.shape[0], (a.shape[1], b.shape[0]), "embedding"
            else:
                rank = a.shape[0]
                kind = "conv" if len(a.shape) > 2 else "linear"
                shape = (b.shape[0], *a.shape[1:])
            if b.shape[1] != rank or any(d != 1 for d in b.shape[2:]):
                raise SourceError(
                    f"module {module}: the down factor has rank {rank} but the up factor has shape {list(b.shape)} "
                    f"(down {list(a.shape)})",
                    source=self.name,
                )
            transposed = self.settings is not None and self.settings.fan_in_fan_out and kind == "linear"
            if transposed:
                shape = (shape[1], shape[0])
            alpha_key = (
                stem + layout.alpha_suffix
                if layout.alpha_suffix and stem + layout.alpha_suffix in self.header
                else None
            )
            if (
                self.settings is not None
                and (r_config := pattern_value(self.settings.rank_pattern, module, self.settings.r)) != rank
            ):
                raise SourceError(
                    f"module {module}: factors have rank {rank} but the config says r={r_config}", source=self.name
                )
            out[f"{module}.weight"] = LoraModule(module, kind, rank, tuple(shape), transposed, key_a, key_b, alpha_key)
        return out

    @cached_property
    def scales(self) -> dict[str, float]:
        """Each layer's scale.

        PEFT's config rules (patterns, rsLoRA); other layouts alpha / rank, or 1 without an alpha.

        Kept apart from :attr:`modules` because kohya and diffusers files store alphas as
        tensors: planning a build needs only the header, and a Hub file is then downloaded
        where it is read, not where the build is planned.
        """
        if self.settings is not None:
            settings = self.settings
            return {
                layer: lora_scale(
                    pattern_value(settings.alpha_pattern, m.module, settings.alpha),
                    m.rank,
                    use_rslora=settings.use_rslora,
                )
                for layer, m in self.modules.items()
            }
        keys = [m.alpha_key for m in self.modules.values() if m.alpha_key is not None]
        values = read_tensors(self.weights.local(), keys) if keys else {}
        scales = {}
        for layer, m in self.modules.items():
            alpha = None if m.alpha_key is None else self._alpha(m.alpha_key, values[m.alpha_key])
            if alpha == 0 and self.layout.name == "kohya":
                alpha = None  # kohya-ss reads an alpha of 0 (or none) as alpha = rank: scale 1
            if alpha is not None and (not math.isfinite(alpha) or alpha == 0):
                raise SourceError(
                    f"module {m.module}: alpha is {alpha}, not a finite non-zero number", source=self.name
                )
            scales[layer] = lora_scale(alpha if alpha is not None else m.rank, m.rank, use_rslora=False)
        return scales

    def _alpha(self, key: str, value: torch.Tensor) -> float:
        """A module's alpha tensor as a number (it must hold exactly one)."""
        if value.numel() != 1 or not value.is_floating_point() and value.dtype not in (torch.int64, torch.int32):
            raise SourceError(
                f"{key}: an alpha must be one number, got a {value.dtype} tensor of shape {list(value.shape)}",
                source=self.name,
            )
        return float(value.reshape(()))

    @property
    def tensors(self) -> dict[str, TensorInfo]:
        """Layer table: each adapted module's base weight shape (what the update has)."""
        return {layer: TensorInfo(m.tensor_shape, "float32") for layer, m in self.modules.items()}

    @property
    def passthrough_names(self) -> list[str]:
        """Keys in the adapter file that belong to no module (e.g. ``modules_to_save`` heads)."""
        owned = {key for module in self.modules.values() for key in module.keys}
        return [key for key in self.header if key not in owned]

    def raw_tensor(self, key: str) -> torch.Tensor:
        if self._pickled is not None:
            return self._pickled[key]
        with open_tensor_file(self.weights.local()) as handle:
            return handle.get_tensor(key)

    def _keys(self, layer: str) -> tuple[str, str]:
        try:
            module = self.modules[layer]
        except KeyError:
            raise SourceError(f"no LoRA update for {layer}", source=self.name) from None
        return module.key_a, module.key_b

    def _orient(self, layer: str, a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(B, A)`` as ``p x r`` and ``r x q`` matrices of the layer's matrix view (unscaled)."""
        module = self.modules[layer]
        if module.kind == "embedding":
            return a.T, b.T  # update (B A)^T = A^T B^T
        a, b = a.flatten(1), b.flatten(1)
        return (a.T, b.T) if module.transposed else (b, a)

    def factors(self, layer: str) -> tuple[torch.Tensor, torch.Tensor]:
        """``(B, A)`` of one layer's matrix view (unscaled)."""
        key_a, key_b = self._keys(layer)
        return self._orient(layer, self.raw_tensor(key_a), self.raw_tensor(key_b))

    def load(self, names: Sequence[str]) -> dict[str, Factored]:
        """The updates in raw factors, read in one opening of the file (the engine casts them)."""
        keys = {layer: self._keys(layer) for layer in names}
        raw = (
            self._pickled
            if self._pickled is not None
            else read_tensors(self.weights.local(), [key for pair in keys.values() for key in pair])
        )
        out = {}
        for layer, (key_a, key_b) in keys.items():
            left, right = self._orient(layer, raw[key_a], raw[key_b])
            out[layer] = Factored(left, right, self.scales[layer])
        return out

    def load_rows(self, name: str, start: int, stop: int) -> torch.Tensor:
        left, right = self.factors(name)
        return (left[start:stop].double() @ right.double()) * self.scales[name]

    def provenance(self) -> dict[str, Any]:
        return {
            "id": provenance_id(self.name, self.revision),
            "revision": self.revision,
            "sha256": self.sha256,
            "kind": self.kind,
        }

    @property
    def files(self) -> list[WeightFile]:
        """The weight files the adapter is read from (one)."""
        return [self.weights]

    @cached_property
    def sha256(self) -> str:
        return source_sha256(self.files)

    @property
    def legacy_sha256(self) -> str:
        """The identity unisub-hub before 0.2 recorded: an adapter's one file's sha256, as now."""
        return self.sha256

    def size_bytes(self) -> int:
        return self.weights.size

    @property
    def base_model(self) -> str | None:
        return self.config.get("base_model_name_or_path")

    # --- what a coefficient set of this source keeps (see unisub_hub.format.kinds) ------------

    def missing_layer(self, layer: str) -> str:
        """Why a layer the basis decomposes may be missing here: same architecture, other target modules."""
        return (
            f"has no LoRA update for {layer}, which the basis decomposes: the adapter targets other modules than the "
            "adapters the basis was built from"
        )

    def layer_fields(self, layer: str) -> dict[str, Any]:
        """A projection's per-layer fields: the module's LoRA rank and kind, to write it back alike."""
        module = self.modules[layer]
        return LORA.layer_fields(module.rank, "linear_fan_in_fan_out" if module.transposed else module.kind)

    def lora_block(self) -> dict[str, Any] | None:
        """The ``lora`` manifest block of a projection: how to write the adapter back in its own layout."""
        peft = self.layout.name == "peft"
        return LORA.lora_block(
            r=max(m.rank for m in self.modules.values()),
            key_prefix=self.layout.module_prefix,
            layout=self.layout.name,
            weights_file=ADAPTER_WEIGHTS if peft else self.weights.name,
            task_type=self.config.get("task_type"),
            modules_to_save=self.config.get("modules_to_save"),
        )

    def passthrough(self, covered: set[str]) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
        """The adapter's own other tensors (``modules_to_save`` heads) and the raw factors of modules
        outside ``covered``, and why: a task keeps what the adapter had beside the basis's layers."""
        tensors: dict[str, torch.Tensor] = {}
        reasons: dict[str, str] = {}
        for key in self.passthrough_names:
            tensors[key] = self.raw_tensor(key)
            reasons[key] = "not a LoRA factor"
        for layer, module in self.modules.items():
            if layer not in covered:
                for key in module.keys:
                    tensors[key] = self.raw_tensor(key)
                    reasons[key] = "module outside the basis"
        return tensors, reasons

    def stored(self, key: str) -> torch.Tensor | None:
        """The tensor stored under ``key`` in the adapter file (a factor or a head), if there is one."""
        return self.raw_tensor(key) if key in self.header else None

    def member_config(self) -> dict[str, Any] | None:
        """An adapter carries no model config (its base model's applies)."""
        return None

    def architecture(self) -> tuple[str, dict[str, Any] | None]:
        """The base model the adapter names is its architecture."""
        if self.base_model:
            return self.base_model, {"id": self.base_model, "revision": None}
        return "unknown", None
