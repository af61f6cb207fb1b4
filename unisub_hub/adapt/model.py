"""Attaching a basis to a loaded model: tasks as coefficients, switched by name, saved as v1 sets.

:func:`attach` replaces each module the basis decomposes by a :class:`SubspaceLayer` and,
on request, each head by a :class:`TaskLinear`, in place, so the model keeps its own class
and ``forward`` (``transformers.Trainer`` sees the real signature). The returned
:class:`SubspaceAdapter` adds, switches, saves and loads tasks.

What a coefficient set means is fixed by format v1: a decomposed layer's weight is ``M + U C
V^T`` for checkpoint bases, and the base weight plus ``M + U C V^T`` for LoRA bases (``M``
only when the basis is centred). The mean is shared by every task of the basis, so it is
folded into the frozen base weight once here; only ``C`` (and heads) are trainable.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..engine import all_finite, project_layer
from ..errors import AdaptError
from ..format import (
    BasisArtifact,
    CoefficientSet,
    save_coefficients,
)
from ..format.kinds import source_kind
from ..format.names import prefix_map
from .layer import SubspaceLayer, TaskLinear, TaskState, check_module, weight_of

__all__ = ["INIT_CHOICES", "SubspaceAdapter", "attach"]

INIT_CHOICES = ("zero", "mean")
"""Named initialisations; anything else given as ``init`` is a fine-tune to project."""

_LORA_KINDS = {"linear": "linear", "conv1d_gpt2": "linear_fan_in_fan_out", "conv2d": "conv", "embedding": "embedding"}


def attach(model: nn.Module, basis: BasisArtifact | str | Path, *, heads: Sequence[str] = ()) -> SubspaceAdapter:
    """Make every layer of ``model`` that ``basis`` decomposes learn tasks as coefficients.

    Args:
        model: a ``torch``/``transformers`` model of the basis's architecture (its base model
            for a LoRA basis). It is changed in place; its own parameters are frozen.
        basis: a basis folder, registry reference or Hub repo id (see
            :func:`unisub_hub.hub.resolve.resolve_artifact`), or an opened
            :class:`BasisArtifact`; verified before use.
        heads: module names (e.g. ``"classifier"``) whose ``nn.Linear`` layers each task
            keeps its own copy of, trainable: heads of different tasks differ.

    Returns:
        The adapter that adds, switches, saves and loads tasks on ``model``.

    Raises:
        AdaptError: a layer of the basis has no module of its shape in ``model``.

    Example:
        >>> adapter = attach(model, "minilm-basis", heads=["classifier"])
        >>> adapter.add_task("sst2")
        >>> optimizer = torch.optim.AdamW(adapter.parameters("sst2"), lr=5e-3)
    """
    if not isinstance(basis, BasisArtifact):
        from ..hub.resolve import open_basis

        basis = open_basis(basis)
    return SubspaceAdapter(model, basis, heads=heads)


class SubspaceAdapter:
    """The tasks of one attached model; see :func:`attach`."""

    def __init__(self, model: nn.Module, basis: BasisArtifact, *, heads: Sequence[str] = ()) -> None:
        self.model = model
        self.basis = basis
        self.kind = source_kind(basis.manifest)
        self.state = TaskState()
        modules = dict(model.named_modules())
        stems = [name.removesuffix(".weight") for name in basis.layer_names]
        names = prefix_map(stems, modules)
        if names is None:
            raise AdaptError(
                f"the model has no module matching basis layer {basis.layer_names[0]} (wrong model for this basis?)"
            )
        self._to_model, self._to_basis = names.forward, names.back
        targets = {layer: self._to_model(layer.removesuffix(".weight")) for layer in basis.layer_names}
        for layer, module_name in targets.items():  # every check before the model is touched
            check_module(modules.get(module_name), layer, basis.entry(layer)["shape"])
        # Like peft: everything the model had is frozen, so an optimizer over "what requires grad"
        # (transformers.Trainer's) sees the tasks' coefficients and heads only.
        model.requires_grad_(False)
        self._original = {key: value for key, value in model.state_dict(keep_vars=True).items()}
        self.layers: dict[str, SubspaceLayer] = {}
        for layer, module_name in targets.items():
            base = modules[module_name]
            layer_basis = basis.layer(layer, dtype=torch.float64)
            wrapped = SubspaceLayer(base, layer_basis, self.state)
            self._fold_mean(base, layer_basis)
            _replace(model, module_name, wrapped)
            self.layers[layer] = wrapped
        self.heads: dict[str, TaskLinear] = {}
        for head in heads:
            self._wrap_head(head, modules)
        self._head_keys = {
            f"{name}.{part}"
            for name, head in self.heads.items()
            for part in ("weight", "bias")
            if getattr(head.base, part) is not None
        }

    # --- tasks ----------------------------------------------------------------------------

    @property
    def tasks(self) -> list[str]:
        return list(self.state.keys)

    def add_task(
        self, name: str, *, init: str | Path = "zero", train_head: bool = True, train_coefficients: bool = True
    ) -> None:
        """Add a task (and make it active): coefficients zero, the mean alone, or a fine-tune's projection.

        ``init="zero"`` starts every layer at ``C = 0``: the base model for an uncentred LoRA
        basis, the basis mean for a centred one (a coefficient set always includes its basis's
        mean, so there ``"mean"`` and ``"zero"`` are the same start), and a zero layer for an
        uncentred checkpoint basis (whose tasks are ``U C V^T`` alone: start those from a fine-tune). Any other value
        is a fine-tune (folder or Hub id) projected onto the basis; its head, when it has
        one of the right shape, starts the task's head. ``train_coefficients=False`` keeps the
        coefficients at their start (a head-only baseline).
        """
        if name in self.state.keys:
            raise AdaptError(f"task {name!r} already exists on this model")
        init = str(init)
        coefficients: dict[str, torch.Tensor] = {}
        head_values: dict[str, torch.Tensor] = {}
        if init == "mean" and not any(entry["centered"] for entry in self.basis.manifest["layers"]):
            raise AdaptError("init 'mean': the basis has no mean (it was built uncentred); use 'zero'")
        if init not in INIT_CHOICES:
            coefficients, head_values = self._project_source(init)
        key = self.state.add(name)
        for layer, module in self.layers.items():
            parameter = module.add_task(key, coefficients.get(layer))
            if parameter is not None:  # always, for a task that is not frozen
                parameter.requires_grad_(train_coefficients)
        for head_name, head in self.heads.items():
            params = head.add_task(key, head_values.get(f"{head_name}.weight"), head_values.get(f"{head_name}.bias"))
            for parameter in params:
                parameter.requires_grad_(train_head)
        self.state.active = name

    def set_task(self, name: str | None) -> None:
        """Compute ``name`` from now on (``None``: the frozen model without any task)."""
        if name is not None:
            self.state.key(name)
        self.state.active = name

    @contextmanager
    def per_example(self, names: Sequence[str]) -> Iterator[None]:
        """Within the block, example ``b`` of each batch computes task ``names[b]`` (one forward pass)."""
        distinct = list(dict.fromkeys(names))
        keys = [self.state.key(name) for name in distinct]
        index = torch.tensor([distinct.index(name) for name in names])
        previous = self.state.per_example
        self.state.per_example = (keys, index)
        try:
            yield
        finally:
            self.state.per_example = previous

    def merge_tasks(
        self,
        names: Sequence[str],
        weights: Sequence[float] | None = None,
        *,
        method: str = "linear",
        density: float | None = None,
        seed: int | None = None,
        heads: str = "first",
        name: str | None = None,
    ) -> str:
        """Add a task merged from tasks on this model (see :mod:`unisub_hub.merge`), in memory, and activate it.

        The same math as ``unisub-hub merge``: the merged coefficients equal the command's for
        the same tasks, weights and parameters. ``heads`` is ``first``, ``average`` (the weighted
        average of the task heads) or ``none`` (the model's own head).

        Returns:
            The merged task's name (``name``, or the names joined by ``+``).
        """
        from ..merge import merge_coefficients, method_named

        keys = [self.state.key(task) for task in names]
        weights = list(weights) if weights is not None else [1.0 / len(names)] * len(names)
        merged = merge_coefficients(
            [{layer: module.coefficient(key).detach().cpu() for layer, module in self.layers.items()} for key in keys],
            weights,
            method_named(method, density=density, seed=seed),
            centered=bool(self.basis.manifest["centered"]),
        )
        name = name or "+".join(names)
        if name in self.state.keys:
            raise AdaptError(f"task {name!r} already exists on this model")
        key = self.state.add(name)
        for layer, module in self.layers.items():
            module.add_task(key, merged[layer].float())
        for head in self.heads.values():
            stores = (head.weights, head.biases)
            values: list[torch.Tensor | None] = []
            for store in stores:
                if heads == "none" or keys[0] not in store:
                    values.append(None)
                elif heads == "first":
                    values.append(store[keys[0]].detach())
                else:
                    total = torch.stack([w * store[k].detach() for w, k in zip(weights, keys, strict=True)]).sum(0)
                    values.append(total / sum(weights))
            head.add_task(key, *values)
        self.state.active = name
        return name

    def parameters(self, name: str | None = None) -> list[nn.Parameter]:
        """The trainable parameters of one task (the active one by default): coefficients, then heads."""
        key = self.state.key(name or self._active())
        found = [module.coefficients.parameter(key) for module in self.layers.values()]
        for head in self.heads.values():
            found += [store.parameter(key) for store in (head.weights, head.biases) if key in store]
        return [parameter for parameter in found if parameter is not None and parameter.requires_grad]

    def _active(self) -> str:
        if self.state.active is None:
            raise AdaptError("no active task: add_task() or set_task() first")
        return self.state.active

    # --- saving and loading ----------------------------------------------------------------

    def save_task(
        self,
        out: str | Path,
        name: str | None = None,
        *,
        training: Mapping[str, Any] | None = None,
        metrics: Mapping[str, Any] | None = None,
        task_type: str | None = None,
        command: str | None = None,
    ) -> CoefficientSet:
        """Write a task as a format-v1 coefficient set pinned to the basis, with lineage ``trained``.

        Args:
            training: what produced it (hyper-parameters, data hash, steps), kept in the manifest.
            metrics: final metrics (loss, accuracy), kept in the manifest.
            task_type: PEFT's task type for a LoRA basis (``SEQ_CLS`` ...), used on export.
        """
        name = name or self._active()
        key = self.state.key(name)
        coefficients = {layer: module.coefficient(key).detach().float().cpu() for layer, module in self.layers.items()}
        if not all(bool(torch.isfinite(c).all()) for c in coefficients.values()):
            bad = next(layer for layer, c in coefficients.items() if not bool(torch.isfinite(c).all()))
            raise AdaptError(f"task {name!r}: coefficients of layer {bad} hold NaN or Inf; nothing written")
        passthrough, reasons = self._passthrough(key)
        bases = {layer: self.basis.layer(layer, dtype=torch.float64) for layer in self.layers}
        kinds = {layer: _LORA_KINDS[module.orientation] for layer, module in self.layers.items()}
        heads = sorted(self._to_basis(head) for head in self.heads)
        extras, lora = self.kind.computed_fields(
            bases, coefficients, lora_kinds=kinds, block={"task_type": task_type, "modules_to_save": heads}
        )
        return save_coefficients(
            out,
            coefficients,
            passthrough,
            name=name,
            basis_manifest=self.basis.manifest,
            lora=lora,
            layer_extras=extras,
            passthrough_reasons=reasons,
            metrics=metrics,
            command=command,
            lineage="trained",
            training=training,
            config=_model_config(self.model) if self.kind.keeps_whole_model else None,
        )

    def load_task(
        self,
        coefficients: CoefficientSet | str | Path,
        name: str | None = None,
        *,
        train_head: bool = True,
        frozen: bool = False,
    ) -> str:
        """Add a saved task (verified, and of this basis) to the model; training may continue from it.

        ``coefficients`` is an opened set, a folder, a registry reference or a Hub repo id, as
        :func:`attach` takes for the basis. A ``frozen`` task is for inference only: it has no
        parameters, and its tensors are rows of shared slabs (:mod:`.store`), about 0.6 KiB less
        memory per layer and head than a trainable one (what a server holding thousands wants).
        """
        if not isinstance(coefficients, CoefficientSet):
            from ..hub.resolve import open_coefficients

            coefficients = open_coefficients(coefficients)
        if coefficients.basis_id != self.basis.content_id:
            raise AdaptError(
                f"{coefficients.path}: refers to basis {coefficients.basis_id[:19]}..., this model carries "
                f"{self.basis.content_id[:19]}..."
            )
        name = name or coefficients.manifest["name"]
        if name in self.state.keys:
            raise AdaptError(f"task {name!r} already exists on this model")
        missing = set(self.layers) - set(coefficients.layer_names)
        if missing:
            raise AdaptError(f"{coefficients.path}: has no coefficients for layer {sorted(missing)[0]}")
        values = coefficients.coefficients()  # one read of the file, not one per layer
        # A set written elsewhere may hold NaN under a valid content id: one check of all layers
        # (a load costs its tensor calls), then the culprit's name when it fails.
        if not all_finite(torch.cat([values[layer].reshape(-1).double() for layer in self.layers])):
            bad = next(layer for layer in self.layers if not all_finite(values[layer]))
            raise AdaptError(f"{coefficients.path}: coefficients of layer {bad} hold NaN or Inf")
        key = self.state.add(name)
        try:
            for layer, module in self.layers.items():
                module.add_task(key, values[layer], frozen=frozen)
            stored = set(coefficients.passthrough_names)
            for head_name, head in self.heads.items():
                values = {
                    part: coefficients.passthrough(k)
                    for part in ("weight", "bias")
                    if (k := self._stored_head_key(head_name, part)) in stored
                }
                for parameter in head.add_task(key, values.get("weight"), values.get("bias"), frozen=frozen):
                    parameter.requires_grad_(train_head)
        except BaseException:
            self._drop(key, name)
            raise
        self.state.active = name
        return name

    def remove_task(self, name: str) -> None:
        """Forget a task: its coefficients and heads leave the model (the active task becomes none if it was)."""
        self._drop(self.state.key(name), name)
        if self.state.active == name:
            self.state.active = None

    def task_bytes(self, name: str) -> int:
        """Bytes a task holds on the model (its coefficients and its own heads)."""
        key = self.state.key(name)
        stores = [
            *(m.coefficients for m in self.layers.values()),
            *(s for h in self.heads.values() for s in (h.weights, h.biases)),
        ]
        return sum(store.nbytes(key) for store in stores if key in store)

    def _drop(self, key: str, name: str) -> None:
        for store in [
            *(module.coefficients for module in self.layers.values()),
            *(p for head in self.heads.values() for p in (head.weights, head.biases)),
        ]:
            if key in store:
                del store[key]
        self.state.keys.pop(name, None)

    # --- helpers ---------------------------------------------------------------------------

    def _fold_mean(self, base: nn.Module, layer_basis) -> None:
        """Put the basis mean into the frozen weight: ``M`` (checkpoints) or ``W + M`` (LoRA)."""
        mean = layer_basis.mean
        with torch.no_grad():
            weight = weight_of(base)
            value = torch.zeros_like(weight) if mean is None else mean.reshape(weight.shape).to(weight)
            if self.kind.adds_to_base:
                weight.add_(value)
            else:
                weight.copy_(value)

    def _wrap_head(self, head: str, modules: dict[str, nn.Module]) -> None:
        module = modules.get(head)
        if module is None:
            raise AdaptError(f"the model has no head module {head!r}")
        linears = (
            {head: module}
            if isinstance(module, nn.Linear)
            else {f"{head}.{n}": m for n, m in module.named_modules() if isinstance(m, nn.Linear)}
        )
        owned = {f"{head}.{n}" if n else head for n, p in module.named_parameters()}
        if not linears or any(n.rsplit(".", 1)[0] not in linears for n in owned):
            raise AdaptError(f"head {head!r} has parameters outside nn.Linear layers; only linear heads are per task")
        decomposed = {self._to_model(layer.removesuffix(".weight")) for layer in self.layers}
        for name, linear in linears.items():
            if name in decomposed:
                raise AdaptError(f"head {name!r} is decomposed by the basis; it is trained as coefficients already")
            wrapped = TaskLinear(linear, self.state)
            _replace(self.model, name, wrapped)
            self.heads[name] = wrapped

    def _stored_head_key(self, head: str, part: str) -> str:
        return self.kind.head_key(f"{self._to_basis(head)}.{part}")

    def _passthrough(self, key: str) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
        """Heads per task; for a checkpoint basis also every other tensor the model has (like ``project``)."""
        tensors: dict[str, torch.Tensor] = {}
        reasons: dict[str, str] = {}
        for head_name, head in self.heads.items():
            for part, store in (("weight", head.weights), ("bias", head.biases)):
                if key in store:
                    tensors[self._stored_head_key(head_name, part)] = store[key].detach().cpu().clone()
                    reasons[self._stored_head_key(head_name, part)] = "task head"
        if self.kind.keeps_whole_model:
            decomposed = {self._to_model(layer.removesuffix(".weight")) + ".weight" for layer in self.layers}
            for name, value in self._original.items():
                if name in decomposed or name in self._head_keys:
                    continue
                stored = self._to_basis(name)
                tensors[stored] = value.detach().cpu().clone()
                reasons[stored] = f"{value.ndim}-D tensor" if value.ndim < 2 else "not in the basis"
        return tensors, reasons

    def _project_source(self, spec: str) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        from ..io.collection import open_source

        source = open_source(spec)
        if source.kind != self.basis.manifest["source_kind"]:
            raise AdaptError(
                f"{spec}: is a {source.kind} source but the basis was built from {self.basis.manifest['source_kind']} "
                "sources"
            )
        coefficients = {}
        for layer in self.layers:
            if layer not in source.tensors:
                raise AdaptError(f"{spec}: has no layer {layer} of the basis")
            matrix = source.load([layer])[layer].to(torch.device("cpu"), torch.float64)
            coefficients[layer] = project_layer(self.basis.layer(layer, dtype=torch.float64), matrix).float()
        heads: dict[str, torch.Tensor] = {}
        for head_name in self.heads:
            for part in ("weight", "bias"):
                if (value := source.stored(self._stored_head_key(head_name, part))) is not None:
                    heads[f"{head_name}.{part}"] = value
        return coefficients, heads


def _model_config(model: nn.Module) -> dict[str, Any] | None:
    """A ``transformers`` model's config as plain JSON data (its head's labels included), else None."""
    config = getattr(model, "config", None)
    to_dict = getattr(config, "to_dict", None)
    if to_dict is None:
        return None
    return json.loads(json.dumps(to_dict(), default=str))


def _replace(model: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, module)
