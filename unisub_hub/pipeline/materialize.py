"""``materialize``: basis + coefficients (+ base model) -> a folder ``transformers``/``peft`` load.

Formats:
- ``hf``: a full checkpoint (``model.safetensors`` or HF shards + index), with the base
  model's config and tokenizer files copied when a base is given;
- ``lora``: a LoRA in the layout its source had (a PEFT adapter folder, a kohya/A1111 file
  or a diffusers file), its factors rebuilt from the basis at each module's original rank,
  scale 1;
- ``peft``: the same for sets made from PEFT adapters (``adapter_model.safetensors`` +
  ``adapter_config.json``);
- ``merged``: the base model's weights with each layer replaced (checkpoint sets) or
  increased by its update (LoRA sets).
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch

from ..constants import DEFAULT_SHARD_SIZE
from ..engine import all_finite, reconstruct_layer, reconstruct_lora, resolve_device
from ..errors import FormatError, NonFiniteError, SourceError, option
from ..format import BasisArtifact, CoefficientSet, atomic_folder, check_output
from ..format.checks import check_pair
from ..format.dtypes import DTYPES, TORCH_DTYPES
from ..format.kinds import OUTPUT_FORMATS, PEFT_KEY_PREFIX, source_kind
from ..format.names import prefix_map
from ..format.schema import format_version
from ..format.shards import ShardWriter
from ..io.checkpoint import PICKLE_SUFFIXES, CheckpointSource
from ..io.lora_layouts import DIFFUSERS_WEIGHTS
from ..io.peft_adapter import ADAPTER_CONFIG, ADAPTER_WEIGHTS
from .validate import check_base_model

__all__ = ["FORMATS", "MaterializeOutcome", "materialize"]

FORMATS = OUTPUT_FORMATS
ADAPTER_FORMATS = ("peft", "lora")
_WEIGHT_FILES = (".safetensors", ".safetensors.index.json", ".bin.index.json", *PICKLE_SUFFIXES)


@dataclass
class MaterializeOutcome:
    path: Path
    format: str
    files: list[str]


def materialize(
    coefficients: CoefficientSet,
    basis: BasisArtifact,
    out: str | Path,
    *,
    base: str | Path | None = None,
    fmt: str = "auto",
    shard_size: int = DEFAULT_SHARD_SIZE,
    device: str = "auto",
) -> MaterializeOutcome:
    """Write a loadable model or adapter for ``coefficients`` into ``out``.

    Args:
        base: local folder of the base model (needed for ``merged``; config and tokenizer
            files are copied from it for ``hf``/``merged``).
        fmt: ``auto`` (``peft`` for LoRA sets, ``hf`` otherwise), ``hf``, ``peft`` or ``merged``.

    Raises:
        FormatError: the pair does not match, or the format does not fit the set.
        SourceError: ``merged`` without a usable base model.
    """
    check_output(out)
    if fmt not in FORMATS:
        raise FormatError(f"unknown {option('fmt')} {fmt!r}: use one of {', '.join(FORMATS)}")
    check_pair(coefficients, basis)
    layout = (coefficients.manifest.get("lora") or {}).get("layout", "peft")
    asked, fmt = fmt, source_kind(coefficients.manifest).output_format(fmt, layout, coefficients.path)
    base_source = CheckpointSource(base, name=str(base)) if base is not None else None
    if base is not None:
        check_base_model(basis.manifest, str(base))  # another architecture would give a mixed model
    if fmt == "merged" and base_source is None:
        what = "of a LoRA set is the base model with the update merged in, so it" if asked == "hf" else ""
        raise SourceError(
            f"{option('fmt')} {asked} {what} needs {option('base')} (the base model folder)".replace("  ", " ")
        )
    if fmt == "hf" and base_source is None and _written_before_configs(coefficients):
        raise FormatError(
            f"{option('fmt')} hf without {option('base')}: this set was written before format 1.1 and carries no "
            "model config, so "
            f"from_pretrained would invent a default one; pass {option('base')} MODEL for its config.json",
            path=coefficients.path,
        )
    target = resolve_device(device)
    with atomic_folder(Path(out)) as tmp:
        if fmt in ADAPTER_FORMATS:  # peft or lora: the adapter in its source's own layout
            files = (
                _write_peft(coefficients, basis, tmp, target)
                if fmt == "peft"
                else _write_lora_file(coefficients, basis, tmp, target, layout)
            )
        else:  # hf and merged: a whole model
            files = _write_full(coefficients, basis, tmp, target, base_source, shard_size)
            if base_source is not None:
                files += _copy_side_files(base_source.path, tmp)
            if (config := coefficients.manifest.get("config")) is not None:  # the member's head, not the base's
                (tmp / "config.json").write_text(json.dumps(config, indent=2) + "\n")
                files = sorted({*files, "config.json"})
    return MaterializeOutcome(path=Path(out), format=fmt, files=sorted(files))


def _written_before_configs(coefficients: CoefficientSet) -> bool:
    """A set older than format 1.1 cannot say whether its source had a config (newer sets carry it when it had one)."""
    return format_version(coefficients.manifest)[:2] < (1, 1)


def _layer_update(coefficients: CoefficientSet, basis: BasisArtifact, layer: str, device: torch.device) -> torch.Tensor:
    layer_basis = basis.layer(layer, device=device, dtype=torch.float64)
    coef = coefficients.coefficient(layer, device).double()
    return _finite(reconstruct_layer(layer_basis, coef), layer, coefficients).reshape(layer_basis.tensor_shape)


def _finite(weight: torch.Tensor, layer: str, coefficients: CoefficientSet) -> torch.Tensor:
    """Refuse to write a rebuilt weight that holds NaN or Inf (as peft checks merged weights)."""
    if not all_finite(weight):
        raise NonFiniteError(
            f"layer {layer} rebuilds to NaN or Inf values; nothing written", source=str(coefficients.path)
        )
    return weight


def _write_full(
    coefficients: CoefficientSet,
    basis: BasisArtifact,
    folder: Path,
    device: torch.device,
    base: CheckpointSource | None,
    shard_size: int,
) -> list[str]:
    """Write the whole model: the base plus each update for a kind that adds to the base (LoRA),
    else every rebuilt layer, the passed-through tensors, ties, and the base for the rest."""
    writer = ShardWriter(folder, "model", shard_size, {"format": "pt"})
    if source_kind(coefficients.manifest).adds_to_base:
        return _write_onto_base(coefficients, basis, writer, device, base)
    base_keys = set(base.tensors) if base is not None else set()
    router = _ComponentRouter(folder, writer, base, shard_size)
    tied = coefficients.manifest.get("tied") or {}
    copies: dict[str, torch.Tensor] = {}  # the tensors a tie copies, kept until it is written
    written = set()
    for layer in coefficients.layer_names:
        weight = _layer_update(coefficients, basis, layer, device).to(_output_dtype(layer, basis, base))
        router.add(layer, weight)
        written.add(layer)
        if layer in tied.values():
            copies[layer] = weight
    for name in coefficients.passthrough_names:
        router.add(name, coefficients.passthrough(name))
        written.add(name)
    for alias, target in sorted(tied.items()):
        router.add(
            alias, copies[target].clone()
        )  # stored twice, as the source had it (safetensors refuses shared memory)
        written.add(alias)
    for key in sorted(base_keys - written):
        router.add(key, base.tensor(key))  # type: ignore[union-attr]
    return router.close()


def _write_onto_base(
    coefficients: CoefficientSet,
    basis: BasisArtifact,
    writer: ShardWriter,
    device: torch.device,
    base: CheckpointSource | None,
) -> list[str]:
    """Every base tensor, each adapted one plus its update, and the adapter's own tensors (a head)."""
    layers = coefficients.layer_names
    base_keys = set(base.tensors) if base is not None else set()
    names = prefix_map(layers, base_keys)
    if base is None or names is None:
        raise SourceError(f"the base model has no tensor matching layer {layers[0]} (wrong base model?)")
    out_prefix = names.drop  # written keys keep the adapter's spelling
    updates = {names.forward(layer): layer for layer in layers}
    key_prefix = (coefficients.manifest.get("lora") or {}).get("key_prefix", PEFT_KEY_PREFIX)
    passthrough = {name.removeprefix(key_prefix): name for name in coefficients.passthrough_names}
    for key in sorted(base_keys):
        out_key = out_prefix + key
        if out_key in passthrough:
            continue
        weight = base.tensor(key)
        if key in updates:
            delta = _layer_update(coefficients, basis, updates[key], device)
            weight = (weight.to(device, torch.float64) + delta).to(weight.dtype)
        writer.add(out_key, weight)
    for out_key, stored in sorted(passthrough.items()):
        if ".lora_" not in out_key:
            writer.add(out_key, coefficients.passthrough(stored))
    return writer.close()


class _ComponentRouter:
    """Sends each tensor to its component's subfolder when the base is a diffusers-style folder.

    A source read from ``unet/diffusion_pytorch_model.safetensors`` names its tensors
    ``unet.<tensor>``; written back, they go to ``unet/`` under the base's file name, so the
    output loads like the base. Anything else goes to the top-level ``model`` files.
    """

    def __init__(self, folder: Path, default: ShardWriter, base: CheckpointSource | None, shard_size: int) -> None:
        self.folder, self.default, self.shard_size = folder, default, shard_size
        self.components: dict[str, tuple[str, str]] = {}
        for name, prefix in (base.prefixes if base is not None else {}).items():
            sub, _, file_name = name.partition("/")
            self.components[prefix] = (sub, file_name.split("-0000")[0].removesuffix(".safetensors"))
        self.writers: dict[str, ShardWriter] = {}
        self.used_default = False

    def add(self, name: str, tensor: torch.Tensor) -> None:
        for prefix, (sub, stem) in self.components.items():
            if name.startswith(prefix):
                if prefix not in self.writers:
                    (self.folder / sub).mkdir(exist_ok=True)
                    self.writers[prefix] = ShardWriter(self.folder / sub, stem, self.shard_size, {"format": "pt"})
                self.writers[prefix].add(name[len(prefix) :], tensor)
                return
        self.used_default = True
        self.default.add(name, tensor)

    def close(self) -> list[str]:
        files = self.default.close() if self.used_default or not self.writers else []
        for prefix, writer in self.writers.items():
            files += [f"{self.components[prefix][0]}/{name}" for name in writer.close()]
        return files


def _output_dtype(layer: str, basis: BasisArtifact, base: CheckpointSource | None) -> torch.dtype:
    """The base model's dtype for the layer, else the dtype its sources had (bf16 in, bf16 out), else float32."""
    if base is not None and layer in base.tensors:
        code = base.tensors[layer].dtype  # a safetensors code (BF16) or, from a pickle, a name (bfloat16)
        return TORCH_DTYPES.get(code) or DTYPES.get(code, torch.float32)
    return DTYPES.get(basis.entry(layer).get("source_dtype", "float32"), torch.float32)


def _rebuilt_factors(
    coefficients: CoefficientSet, basis: BasisArtifact, device: torch.device
) -> dict[str, tuple[torch.Tensor, torch.Tensor, str, tuple[int, ...]]]:
    """Per layer: the up factor ``B`` (p x r) and down factor ``A`` (r x q) of its update at its
    original LoRA rank and scale 1, its LoRA kind and its weight's shape."""
    manifest = coefficients.manifest
    lora = manifest.get("lora") or {}
    out = {}
    for entry in manifest["layers"]:
        layer = entry["name"]
        layer_basis = basis.layer(layer, device=device, dtype=torch.float64)
        coef = coefficients.coefficient(layer, device).double()
        left, right = reconstruct_lora(layer_basis, coef, entry.get("lora_rank", lora.get("r", 8)))
        _finite(left, layer, coefficients)
        _finite(right, layer, coefficients)
        out[layer] = (left, right, entry.get("lora_kind", "linear"), tuple(layer_basis.tensor_shape))
    return out


def _conv_factors(left: torch.Tensor, right: torch.Tensor, shape: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """``(down, up)`` of a conv update as LoRA stores them: ``r x in x kh x kw`` and ``out x r x 1 x 1``."""
    rank = left.shape[1]
    return right.reshape(rank, *shape[1:]), left.reshape(left.shape[0], rank, *([1] * (len(shape) - 2)))


def _write_single_file(
    coefficients: CoefficientSet, folder: Path, tensors: dict[str, torch.Tensor], file_name: str
) -> list[str]:
    """The factors (float32) and the set's passthrough tensors in one file, as LoRA loaders expect."""
    tensors = {name: value.to(torch.float32).contiguous() for name, value in tensors.items()}
    for name in coefficients.passthrough_names:
        tensors[name] = coefficients.passthrough(name)
    writer = ShardWriter(folder, file_name.removesuffix(".safetensors"), 2**62, {"format": "pt"})
    for name in sorted(tensors):
        writer.add(name, tensors[name])
    return writer.close()


def _write_lora_file(
    coefficients: CoefficientSet, basis: BasisArtifact, folder: Path, device: torch.device, layout: str
) -> list[str]:
    """A kohya/A1111 or diffusers LoRA file with the source's key names (scale 1: a kohya alpha equals the rank)."""
    tensors: dict[str, torch.Tensor] = {}
    for layer, (left, right, kind, shape) in _rebuilt_factors(coefficients, basis, device).items():
        module = layer.removesuffix(".weight")
        down, up = _conv_factors(left, right, shape) if kind == "conv" else (right, left)
        if layout == "kohya":
            tensors[f"{module}.lora_down.weight"], tensors[f"{module}.lora_up.weight"] = down, up
            tensors[f"{module}.alpha"] = torch.tensor(float(left.shape[1]))
        else:
            tensors[f"{module}.lora_A.weight"], tensors[f"{module}.lora_B.weight"] = down, up
    file_name = (coefficients.manifest.get("lora") or {}).get("weights_file") or DIFFUSERS_WEIGHTS
    return _write_single_file(coefficients, folder, tensors, file_name)


_HEADLESS = ("CAUSAL_LM", "SEQ_2_SEQ_LM", "FEATURE_EXTRACTION")
"""peft task types that carry no head of their own (the language-model head is the base's)."""


def _write_peft(coefficients: CoefficientSet, basis: BasisArtifact, folder: Path, device: torch.device) -> list[str]:
    manifest = coefficients.manifest
    lora = manifest.get("lora") or {}
    prefix = lora.get("key_prefix", PEFT_KEY_PREFIX)
    tensors: dict[str, torch.Tensor] = {}
    ranks: dict[str, int] = {}
    for layer, (left, right, kind, shape) in _rebuilt_factors(coefficients, basis, device).items():
        module = layer.removesuffix(".weight")
        stem = prefix + module
        if kind == "embedding":
            tensors[f"{stem}.lora_embedding_A"] = left.T
            tensors[f"{stem}.lora_embedding_B"] = right.T
        elif kind == "linear_fan_in_fan_out":
            tensors[f"{stem}.lora_A.weight"] = left.T
            tensors[f"{stem}.lora_B.weight"] = right.T
        elif kind == "conv":
            tensors[f"{stem}.lora_A.weight"], tensors[f"{stem}.lora_B.weight"] = _conv_factors(left, right, shape)
        else:
            tensors[f"{stem}.lora_A.weight"] = right
            tensors[f"{stem}.lora_B.weight"] = left
        ranks[module] = left.shape[1]
    files = _write_single_file(coefficients, folder, tensors, ADAPTER_WEIGHTS)  # PEFT reads one file
    top = max(ranks.values())
    base = manifest["architecture"].get("base_model") or {}
    # peft's task types with a head (SEQ_CLS, TOKEN_CLS, ...) expect that head's weights in the
    # adapter; a task without a head of its own uses the base's, so it is written as a plain
    # LoRA that leaves the head alone (PeftModel.from_pretrained then loads it on the base).
    task_type = lora.get("task_type") if lora.get("modules_to_save") or lora.get("task_type") in _HEADLESS else None
    config = {
        "peft_type": "LORA",
        "task_type": task_type,
        "base_model_name_or_path": base.get("id"),
        "r": top,
        "lora_alpha": top,
        "rank_pattern": {m: r for m, r in ranks.items() if r != top},
        "alpha_pattern": {m: r for m, r in ranks.items() if r != top},
        "target_modules": sorted(ranks),
        "modules_to_save": lora.get("modules_to_save"),
        "lora_dropout": 0.0,
        "bias": "none",
        "fan_in_fan_out": any(e.get("lora_kind") == "linear_fan_in_fan_out" for e in manifest["layers"]),
        "use_rslora": False,
        "inference_mode": True,
    }
    (folder / ADAPTER_CONFIG).write_text(json.dumps(config, indent=2) + "\n")
    return [*files, ADAPTER_CONFIG]


def _copy_side_files(base: Path, folder: Path, prefix: str = "") -> list[str]:
    """Copy config, tokenizer and other non-weight files of the base model folder (and its component subfolders)."""
    copied: list[str] = []
    if not base.is_dir():
        return copied
    for path in sorted(base.iterdir()):
        if path.name.startswith(".") or path.name == "README.md":
            continue
        if path.is_dir() and not prefix:
            (folder / path.name).mkdir(exist_ok=True)
            copied += _copy_side_files(path, folder / path.name, f"{path.name}/")
        elif path.is_file() and not path.name.endswith(_WEIGHT_FILES):
            shutil.copy2(path, folder / path.name)
            copied.append(prefix + path.name)
    return copied
