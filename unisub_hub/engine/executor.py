"""How the streamed sums of a build are run: a fold over sources, then a merge.

A build only ever needs ``aggregate(zero, step, merge)`` over its sources (Spark's
``aggregate``): each worker starts from ``zero()``, folds its share of the sources in with
``step`` and the partial results are combined with ``merge``. The sums are associative, so
any split gives the same answer up to round-off, and a distributed engine only has to
implement this one method.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Protocol, TypeVar

__all__ = ["Executor", "SerialExecutor"]

Item = TypeVar("Item")
Acc = TypeVar("Acc")


class Executor(Protocol):
    """Runs one fold over items; implementations decide where and in how many parts.

    Every fold of the engine runs on an executor passed in by the caller (there is no "no
    executor"): :class:`SerialExecutor` in this process, or a cluster's
    (:class:`~unisub_hub.engine.dask_executor.DaskExecutor`).
    """

    in_process: bool
    """Whether ``step`` runs in this process: then sources read in one pass may be kept for the
    next and buffers reused; a cluster reads in its workers instead."""

    def aggregate(
        self,
        items: Iterable[Item],
        zero: Callable[[], Acc],
        step: Callable[[Acc, Item], Acc],
        merge: Callable[[Acc, Acc], Acc],
    ) -> Acc: ...

    def with_progress(self, on_items: Callable[[int], None]) -> Executor:
        """The same executor, calling ``on_items(n)`` whenever ``n`` more items are folded in."""
        ...


class SerialExecutor:
    """Folds every item into one accumulator in this process, one item at a time.

    Args:
        on_items: called with 1 after each item (progress bars hook in here).
    """

    in_process = True

    def __init__(self, on_items: Callable[[int], None] | None = None) -> None:
        self._on_items = on_items

    def with_progress(self, on_items: Callable[[int], None]) -> SerialExecutor:
        return SerialExecutor(on_items)

    def aggregate(
        self,
        items: Iterable[Item],
        zero: Callable[[], Acc],
        step: Callable[[Acc, Item], Acc],
        merge: Callable[[Acc, Acc], Acc],
    ) -> Acc:
        acc = zero()
        for item in items:
            acc = step(acc, item)
            if self._on_items is not None:
                self._on_items(1)
        return acc
