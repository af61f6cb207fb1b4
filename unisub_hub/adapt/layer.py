"""Modules that put per-task coefficients on frozen shared directions (tensor work only).

A :class:`SubspaceLayer` wraps one ``nn.Linear``, GPT-2 ``Conv1D`` or 2-D ``nn.Conv2d`` of
the model and adds ``x dW^T`` for the active task, where ``dW`` is what the task's
coefficients stand for on the layer's basis (:mod:`unisub_hub.engine.modes`). The update is
applied through thin products and never formed as a ``p x q`` matrix (mode 1 forms its
``k``-term sum once per call). The basis mean is not here: the caller folds it into the
frozen base weight once, since every task of the basis shares it.

A :class:`TaskLinear` holds one copy of a linear head per task (heads differ per task).
Both read which task runs from a shared :class:`TaskState`, which is either one active
task or one task per example of the batch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import cast

import torch
from torch import nn
from torch.nn import functional as F

from ..engine.basis import LayerBasis
from ..engine.modes import Factors
from ..errors import AdaptError
from .store import TaskTensors

__all__ = ["SubspaceLayer", "TaskLinear", "TaskState", "check_module", "layer_orientation"]


@dataclass
class TaskState:
    """Which task each forward pass computes; shared by every wrapped module of one model."""

    keys: dict[str, str] = field(default_factory=dict)
    """Task name -> the key of its parameters in each module (names may hold dots)."""
    active: str | None = None
    per_example: tuple[list[str], torch.Tensor] | None = None
    """The distinct task keys of a mixed batch, and for each example the index of its task."""

    def active_key(self) -> str:
        """The parameter key of the active task."""
        if self.active is None:
            raise AdaptError("no task is active on this model (activate one, or pass one per example)")
        return self.key(self.active)

    def key(self, name: str) -> str:
        try:
            return self.keys[name]
        except KeyError:
            raise AdaptError(f"no task {name!r} on this model (tasks: {', '.join(self.keys) or 'none'})") from None

    added: int = 0
    """Tasks ever added: keys are never reused, even after a task is removed."""

    def add(self, name: str) -> str:
        if name not in self.keys:
            self.keys[name] = f"task{self.added}"
            self.added += 1
        return self.keys[name]


def layer_orientation(module: nn.Module) -> str:
    """How the module's weight relates to the basis's ``p x q`` view of it.

    ``linear``: ``y = x W^T`` with ``W`` ``p x q``; ``conv1d_gpt2``: ``y = x W`` (the basis
    stores the ``in x out`` weight as GPT-2 saves it); ``conv2d``: a kernel flattened to
    ``out x (in*kh*kw)``; ``embedding``: rows looked up by index.
    """
    if isinstance(module, nn.Linear):
        return "linear"
    if isinstance(module, nn.Embedding):
        return "embedding"
    if type(module).__name__ == "Conv1D" and hasattr(module, "nf"):
        return "conv1d_gpt2"
    if isinstance(module, nn.Conv2d):
        # The update runs on the unfolded input, which pads with zeros at fixed sizes: any other
        # padding would give an update the frozen convolution does not see, silently.
        if module.groups != 1:
            raise AdaptError(f"a grouped Conv2d (groups={module.groups}) is not supported")
        if module.padding_mode != "zeros" or isinstance(module.padding, str):
            raise AdaptError(
                f"a Conv2d with padding {module.padding!r} ({module.padding_mode}) is not supported; zero padding of "
                "fixed size only"
            )
        return "conv2d"
    raise AdaptError(
        f"a {type(module).__name__} cannot carry a subspace update (Linear, Embedding, GPT-2 Conv1D or Conv2d only)"
    )


def check_module(module: nn.Module | None, layer: str, tensor_shape: tuple[int, ...] | list[int]) -> str:
    """That ``module`` can carry basis ``layer`` (a supported kind, a weight of its shape); its orientation.

    Raises:
        AdaptError: naming the layer and what does not fit.
    """
    weight = getattr(module, "weight", None)
    if module is None or not isinstance(weight, torch.Tensor):
        raise AdaptError(f"the model has no module with a weight for basis layer {layer} (wrong model for this basis?)")
    orientation = layer_orientation(module)
    if tuple(weight.shape) != tuple(tensor_shape):
        raise AdaptError(
            f"layer {layer}: the model's weight is {tuple(weight.shape)}, the basis expects {tuple(tensor_shape)}"
        )
    return orientation


def weight_of(module: nn.Module) -> torch.Tensor:
    """A wrapped module's weight (:func:`check_module` has made sure it has one)."""
    weight = module.weight
    if not isinstance(weight, torch.Tensor):
        raise AdaptError(f"{type(module).__name__} has no weight tensor")
    return weight


class SubspaceLayer(nn.Module):
    """A frozen base module plus, per task, coefficients on the frozen directions of its basis."""

    left: torch.Tensor | None
    right: torch.Tensor | None
    components: torch.Tensor | None

    def __init__(self, base: nn.Module, basis: LayerBasis, state: TaskState) -> None:
        super().__init__()
        self.orientation = check_module(base, basis.name, basis.tensor_shape)
        self.base = base
        for parameter in base.parameters():
            parameter.requires_grad_(False)
        self.state = state
        self.layer_name = basis.name
        self.coefficient_shape = basis.coefficient_shape()
        strategy, factors = basis.strategy, basis.factors.to(weight_of(base))
        if self.orientation == "conv1d_gpt2":  # x (.., p) -> (.., q): the transposed layer's update
            strategy, factors = strategy.transposed, factors.transposed()
        self.strategy, self._transposed = strategy, self.orientation == "conv1d_gpt2"
        # Frozen directions: buffers, never parameters, never saved with a model's state.
        for role, tensor in (("left", factors.left), ("right", factors.right), ("components", factors.components)):
            self.register_buffer(role, None if tensor is None else tensor.detach().clone(), persistent=False)
        self.coefficients = TaskTensors(self.coefficient_shape, weight_of(base))

    @property
    def factors(self) -> Factors:
        return Factors(self.left, self.right, self.components)

    def add_task(self, key: str, value: torch.Tensor | None = None, *, frozen: bool = False) -> nn.Parameter | None:
        """A task's coefficients (zero unless given): its parameter, or ``None`` when ``frozen`` (see :mod:`.store`)."""
        if value is None:
            value = torch.zeros(self.coefficient_shape)
        if tuple(value.shape) != tuple(self.coefficient_shape):
            raise AdaptError(
                f"layer {self.layer_name}: coefficients are {tuple(value.shape)}, the basis expects "
                f"{self.coefficient_shape}"
            )
        return self.coefficients.add(key, value, frozen=frozen)

    def coefficient(self, key: str) -> torch.Tensor:
        """A task's coefficients in the basis's orientation."""
        return self.coefficients[key]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.base(x)
        state = self.state
        if state.per_example is None and state.active is None:
            return out
        if state.per_example is not None:  # shared position ids (one row) serve every example
            _check_rows(state.per_example[1], x.shape[0], shared_ok=self.orientation == "embedding")
        if self.orientation == "conv2d":
            return out + self._conv_update(x, out.shape)
        if self.orientation == "embedding":
            return out + self._embedding_update(x)
        return out + self._update(x)

    def _update(self, x: torch.Tensor) -> torch.Tensor:
        """``x dW^T`` for the active task, or per example for a mixed batch (``x`` is ``(B, ..., q)``)."""
        orient = self.strategy.transpose_coefficients if self._transposed else (lambda c: c)
        if self.state.per_example is not None:
            keys, index = self.state.per_example
            stacked = self.coefficients.stack(keys)
            return self.strategy.apply_per_example(self.factors, orient(stacked[index.to(x.device)]), x)
        return self.strategy.apply(self.factors, orient(self.coefficients[self.state.active_key()]), x)

    def _embedding_update(self, index: torch.Tensor) -> torch.Tensor:
        """Looked-up rows of the update: the one layer kind where the ``p x q`` update is formed
        (once per task and call), since a lookup has no thin product to take its place."""
        if self.state.per_example is not None:
            keys, task_index = self.state.per_example
            updates = torch.stack([self.strategy.reconstruct(self.factors, self.coefficients[key]) for key in keys])
            if index.shape[0] == 1:  # shared position or type ids: one row of ids for the whole batch
                index = index.expand(len(task_index), *index.shape[1:])
            rows = task_index.to(index.device).reshape(-1, *([1] * (index.ndim - 1))).expand_as(index)
            return updates[rows, index]
        coef = self.coefficients[self.state.active_key()]
        return F.embedding(index, self.strategy.reconstruct(self.factors, coef))

    def _conv_update(self, x: torch.Tensor, out_shape: torch.Size) -> torch.Tensor:
        """The kernel update as a product with the unfolded input: thin products, as for linear layers."""
        conv = cast(nn.Conv2d, self.base)  # layer_orientation admits 2-D convolutions only
        columns = F.unfold(
            x, conv.kernel_size, dilation=conv.dilation, padding=cast(tuple[int, ...], conv.padding), stride=conv.stride
        )
        update = self._update(columns.transpose(1, 2))  # (B, L, p)
        return update.transpose(1, 2).reshape(out_shape)


class TaskLinear(nn.Module):
    """A linear head with its own weight and bias per task (frozen base values for none)."""

    def __init__(self, base: nn.Linear, state: TaskState) -> None:
        super().__init__()
        if not isinstance(base, nn.Linear):
            raise AdaptError(f"a per-task head must be nn.Linear, got {type(base).__name__}")
        self.base = base
        for parameter in base.parameters():
            parameter.requires_grad_(False)
        self.state = state
        self.weights = TaskTensors(base.weight.shape, base.weight)
        self.biases = TaskTensors(() if base.bias is None else base.bias.shape, base.weight)

    def add_task(
        self, key: str, weight: torch.Tensor | None = None, bias: torch.Tensor | None = None, *, frozen: bool = False
    ) -> list[nn.Parameter]:
        """A task's copy of the head, from the base head unless given; its parameters (none when ``frozen``)."""
        added = []
        for name, given, current in (("weight", weight, self.base.weight), ("bias", bias, self.base.bias)):
            if current is None:
                if given is not None:
                    raise AdaptError("the task has a head bias but the model's head has none")
                continue
            value = current if given is None else given
            if tuple(value.shape) != tuple(current.shape):
                raise AdaptError(
                    f"head {name} is {tuple(value.shape)}, the model's head is {tuple(current.shape)} (a different "
                    "number of labels?)"
                )
            store = self.weights if name == "weight" else self.biases
            parameter = store.add(key, value, frozen=frozen)
            if parameter is not None:
                added.append(parameter)
        return added

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        state = self.state
        if state.per_example is not None:
            keys, index = state.per_example
            _check_rows(index, x.shape[0])
            index = index.to(x.device)
            weights = self.weights.stack(keys)[index]  # (B, out, in)
            rows = x.reshape(x.shape[0], -1, x.shape[-1])
            out = torch.bmm(rows, weights.transpose(1, 2))
            if self.biases:
                out = out + self.biases.stack(keys)[index][:, None, :]
            return out.reshape(*x.shape[:-1], -1)
        if state.active is None:
            return self.base(x)
        key = state.key(state.active)
        return F.linear(x, self.weights[key], self.biases[key] if key in self.biases else None)


def _check_rows(index: torch.Tensor, batch: int, *, shared_ok: bool = False) -> None:
    """A mixed batch names one task per row: a count that differs is the caller's mistake, said plainly."""
    if index.shape[0] != batch and not (shared_ok and batch == 1):
        raise AdaptError(f"per_example was given {index.shape[0]} task names for a batch of {batch} rows")
