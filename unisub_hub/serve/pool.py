"""The tasks a server holds: one base model and one basis, a few KiB per task.

Tasks come from ``--task NAME=REF`` at start, from ``POST /v1/tasks/load``, or on first use
by registry reference or Hub id. Resident tasks are bounded in bytes; the least recently used
is unloaded first (a task in the batch being computed is never unloaded). A task of another
basis is refused: its coefficients mean nothing on this one.

The pool is changed only by the thread that runs the model (:mod:`.worker`), so a forward
pass never sees a task come or go.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from ..adapt import SubspaceAdapter
from ..errors import HubConnectionError, HubNotFoundError, ReferenceNotFoundError, ServeError
from ..format import BasisArtifact, CoefficientSet
from ..registry import Registry

__all__ = ["ResidentTask", "TaskPool"]


@dataclass
class ResidentTask:
    name: str
    content_id: str
    reference: str
    bytes: int
    labels: dict[int, str]
    """Label names of a classifier task (from its config, else the base's)."""
    load_seconds: float

    def to_dict(self, basis_id: str) -> dict[str, Any]:
        return {
            "name": self.name,
            "content_id": self.content_id,
            "basis": basis_id,
            "reference": self.reference,
            "bytes": self.bytes,
            "resident": True,
        }


class TaskPool:
    """Resident tasks on one attached model (see the module docstring)."""

    def __init__(
        self,
        adapter: SubspaceAdapter,
        basis: BasisArtifact,
        registry: Registry,
        *,
        max_resident_bytes: int,
        base_labels: dict[int, str],
    ) -> None:
        self.adapter, self.basis, self.registry = adapter, basis, registry
        self.max_resident_bytes = max_resident_bytes
        self.base_labels = base_labels
        self.resident: OrderedDict[str, ResidentTask] = OrderedDict()
        self.known: dict[str, str] = {}
        """Task name -> the reference it was loaded from: an unloaded task comes back on use."""
        self.resident_bytes = 0
        """The resident tasks' bytes (kept as they come and go: every request reports it)."""

    def load(self, reference: str, name: str | None = None, *, pinned: Iterable[str] = ()) -> ResidentTask:
        """Make a task resident (again) under ``name`` (default: its own).

        Raises:
            ServeError: not found (404; so is a Hub id while offline), of another basis (409), not
                loadable (422), or on a Hub that cannot be reached now (503).
        """
        from ..hub.resolve import open_coefficients

        started = time.perf_counter()
        try:
            task = open_coefficients(reference, registry=self.registry)
        except (ReferenceNotFoundError, HubNotFoundError):
            raise ServeError(
                f"no task {reference!r}: not loaded, nor a registered task or Hub id", status=404
            ) from None
        except HubConnectionError as error:  # offline by choice: it will never come; else: retry later
            raise ServeError(f"task {reference!r}: {error}", status=404 if _offline() else 503) from None
        except (LookupError, ValueError, OSError) as error:
            raise ServeError(f"task {reference!r} cannot be loaded: {error}", status=422) from None
        return self._add(task, reference, name or task.manifest["name"], started, pinned)

    def _add(
        self, task: CoefficientSet, reference: str, name: str, started: float, pinned: Iterable[str]
    ) -> ResidentTask:
        if task.basis_id != self.basis.content_id:
            raise ServeError(
                f"task {reference!r} refers to basis {task.basis_id[:19]}..., this server holds "
                f"{self.basis.content_id[:19]}... (move it with `unisub-hub rebase`)",
                status=409,
            )
        if name in self.resident:
            if self.resident[name].content_id == task.content_id:
                self.resident.move_to_end(name)
                return self.resident[name]
            self.unload(name)
        try:
            self.adapter.load_task(task, name, train_head=False, frozen=True)
        except ValueError as error:
            raise ServeError(f"task {reference!r} does not fit this model: {error}", status=422) from None
        config = task.manifest.get("config") or {}
        labels = {int(k): str(v) for k, v in (config.get("id2label") or {}).items()} or self.base_labels
        entry = ResidentTask(
            name, task.content_id, reference, self.adapter.task_bytes(name), labels, time.perf_counter() - started
        )
        self.resident[name] = entry
        self.resident_bytes += entry.bytes
        self.known[name] = reference
        self._evict(keep={name, *pinned})
        return entry

    def unload(self, name: str) -> None:
        """Remove a resident task (it is still known: a request for it loads it again).

        Raises:
            ServeError: no such resident task (404).
        """
        if name not in self.resident:
            raise ServeError(f"no resident task {name!r}", status=404)
        self.resident_bytes -= self.resident.pop(name).bytes
        self.adapter.remove_task(name)

    def forget(self, name: str) -> None:
        """Unload a task (if resident) and forget where it came from (``POST /v1/tasks/unload``).

        Raises:
            ServeError: no task of that name was ever loaded (404).
        """
        if name not in self.resident and name not in self.known:
            raise ServeError(f"no task {name!r} on this server", status=404)
        if name in self.resident:
            self.unload(name)
        self.known.pop(name, None)

    def ensure(self, names: Iterable[str]) -> list[ResidentTask]:
        """The tasks a batch needs, loaded where they are not (on first use, or after eviction)."""
        wanted = list(dict.fromkeys(names))
        out = []
        for name in wanted:
            if name in self.resident:
                self.resident.move_to_end(name)
                out.append(self.resident[name])
            else:
                out.append(self.load(self.known.get(name, name), name, pinned=wanted))
        return out

    def _evict(self, keep: set[str]) -> None:
        while self.resident_bytes > self.max_resident_bytes:
            victim = next((name for name in self.resident if name not in keep), None)
            if victim is None:
                return  # what one batch needs stays, even over the budget
            self.unload(victim)


def _offline() -> bool:
    """Whether this process may not reach the Hub (``HF_HUB_OFFLINE``), as huggingface_hub reads it."""
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)
