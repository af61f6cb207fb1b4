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
    """Runs one fold over items; implementations decide where and in how many parts."""

    def aggregate(
        self,
        items: Iterable[Item],
        zero: Callable[[], Acc],
        step: Callable[[Acc, Item], Acc],
        merge: Callable[[Acc, Acc], Acc],
    ) -> Acc: ...


class SerialExecutor:
    """Folds every item into one accumulator in this process, one item at a time.

    Args:
        on_item: called after each item (progress bars hook in here).
    """

    def __init__(self, on_item: Callable[[], None] | None = None) -> None:
        self._on_item = on_item

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
            if self._on_item is not None:
                self._on_item()
        return acc
