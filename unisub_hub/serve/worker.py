"""The one thread that runs the model: requests wait in a bounded queue and are batched.

Jobs that arrive within ``max_wait_ms`` of the first are put in one batch, up to
``max_batch`` rows, whatever their tasks: a classification batch is one forward pass with a
task per row; a generation batch decodes its sequences together (:mod:`.generation`).
Loading and unloading tasks run on this thread too, between batches. A full queue is refused
at once (the server answers 503 with ``Retry-After``) rather than letting latency grow
without bound.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch

from ..errors import ServeError
from .generation import Completion, Sequence_, decode
from .pool import TaskPool

__all__ = ["ClassifyRow", "Worker"]

log = logging.getLogger("unisub_hub.serve")


@dataclass
class ClassifyRow:
    task: str
    text: str
    pair: str | None = None


@dataclass
class _Job:
    kind: str
    """``classify``, ``generate`` or ``control``."""
    payload: Any
    future: Future = field(default_factory=Future)

    @property
    def rows(self) -> int:
        return len(self.payload) if self.kind == "classify" else 1


class Worker:
    """Runs every job on the model, in batches (see the module docstring)."""

    def __init__(
        self,
        model: torch.nn.Module,
        tokenizer: Any,
        pool: TaskPool,
        *,
        device: torch.device,
        max_batch: int,
        max_wait_ms: float,
        max_queue: int,
        max_length: int,
        pad_id: int,
        observe: Callable[[int, int], None] | None = None,
    ) -> None:
        self.model, self.tokenizer, self.pool, self.device = model, tokenizer, pool, device
        self.max_batch, self.max_wait = max_batch, max_wait_ms / 1000
        self.max_length, self.pad_id = max_length, pad_id
        self.observe = observe or (lambda size, tasks: None)
        self.jobs: queue.Queue[_Job] = queue.Queue(maxsize=max_queue)
        self.deferred: list[_Job] = []
        self.running = True
        self.thread = threading.Thread(target=self._loop, name="unisub-serve-model", daemon=True)

    def start(self) -> Worker:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.running = False
        self.thread.join(timeout=30)

    # --- submitting ------------------------------------------------------------------------

    def submit(self, kind: str, payload: Any) -> Future:
        """Queue a job; its future gives the result.

        Raises:
            ServeError: the queue is full (503).
        """
        job = _Job(kind, payload)
        try:
            self.jobs.put_nowait(job)
        except queue.Full:
            raise ServeError("the server is busy: its queue is full; retry shortly", status=503) from None
        return job.future

    def control(self, action: Callable[[TaskPool], Any]) -> Future:
        """Run ``action(pool)`` on the model's thread between batches (loading, unloading)."""
        return self.submit("control", action)

    # --- the loop --------------------------------------------------------------------------

    def _loop(self) -> None:
        while self.running or not self.jobs.empty() or self.deferred:
            first = self.deferred.pop(0) if self.deferred else self._next(0.05)
            if first is None:
                continue
            if first.kind == "control":
                self._settle([first], self._control)
                continue
            batch, rows = [first], first.rows
            deadline = time.monotonic() + self.max_wait
            while rows < self.max_batch:
                job = self._next(max(0.0, deadline - time.monotonic()))
                if job is None:
                    break
                if job.kind != first.kind or rows + job.rows > self.max_batch:
                    self.deferred.append(job)
                    break
                batch.append(job)
                rows += job.rows
            if batch := self._admit(batch):
                self._settle(batch, self._classify if first.kind == "classify" else self._generate)

    def _next(self, timeout: float) -> _Job | None:
        try:
            return self.jobs.get(timeout=timeout) if timeout > 0 else self.jobs.get_nowait()
        except queue.Empty:
            return None

    def _admit(self, batch: list[_Job]) -> list[_Job]:
        """The jobs whose tasks load; a job with a task that does not (unknown, of another basis)
        fails alone, never the requests that happened to share its batch."""
        admitted = []
        for job in batch:
            tasks = [row.task for row in job.payload] if job.kind == "classify" else [job.payload.task]
            try:
                self.pool.ensure(tasks)
            except ServeError as error:
                job.future.set_exception(error)
                continue
            except Exception:
                log.exception("loading a request's task failed")
                job.future.set_exception(ServeError("internal error while loading the task", status=500))
                continue
            admitted.append(job)
        return admitted

    def _settle(self, batch: list[_Job], run: Callable[[list[_Job]], list[Any]]) -> None:
        try:
            results = run(batch)
        except ServeError as error:
            for job in batch:
                job.future.set_exception(error)
            return
        except Exception:  # the client learns it failed, the log learns why; the server goes on
            log.exception("a batch failed")
            for job in batch:
                job.future.set_exception(ServeError("internal error while computing the batch", status=500))
            return
        for job, result in zip(batch, results, strict=True):
            job.future.set_result(result)

    # --- the work ----------------------------------------------------------------------------

    def _control(self, batch: list[_Job]) -> list[Any]:
        return [batch[0].payload(self.pool)]

    def _classify(self, batch: list[_Job]) -> list[list[dict[str, Any]]]:
        rows: list[ClassifyRow] = [row for job in batch for row in job.payload]
        tasks = self.pool.ensure(row.task for row in rows)
        labels = {task.name: task.labels for task in tasks}
        self.observe(len(rows), len(tasks))
        # Each row is encoded on its own (a text alone has no second segment, whatever its batch
        # holds), then padded together: a row's answer never depends on the rows beside it.
        encoded = self.tokenizer.pad(
            [self.tokenizer(row.text, row.pair, truncation=True, max_length=self.max_length) for row in rows],
            return_tensors="pt",
        ).to(self.device)
        names = [row.task for row in rows]
        with torch.no_grad(), self.rows_compute(names) as model:
            logits = model(**encoded).logits.float().cpu()
        scores = torch.softmax(logits, dim=-1)
        results = []
        for row, row_logits, row_scores in zip(rows, logits, scores, strict=True):
            best = int(row_logits.argmax())
            results.append(
                {
                    "task": row.task,
                    "label": labels[row.task].get(best, str(best)),
                    "label_id": best,
                    "scores": row_scores.tolist(),
                    "logits": row_logits.tolist(),
                }
            )
        out, start = [], 0
        for job in batch:
            out.append(results[start : start + len(job.payload)])
            start += len(job.payload)
        return out

    def _generate(self, batch: list[_Job]) -> list[Completion]:
        items: list[Sequence_] = [job.payload for job in batch]
        tasks = self.pool.ensure(item.task for item in items)
        self.observe(len(items), len(tasks))
        with self.rows_compute([item.task for item in items]) as model:
            return decode(
                model, self.tokenizer, items, device=self.device, pad_id=self.pad_id, max_positions=self.max_length
            )

    @contextmanager
    def rows_compute(self, names: list[str]) -> Iterator[Callable[..., Any]]:
        """The model to call for a batch whose row ``b`` computes task ``names[b]``: the attached
        model with per-example tasks. (The serving benchmark's LoRA peer overrides only this.)"""
        with self.pool.adapter.per_example(names):
            yield self.model
