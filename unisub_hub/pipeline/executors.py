"""Where a command's folds run: ``--executor serial``, ``dask`` or ``dask://HOST:PORT``.

The one place that turns what the user typed into an engine :class:`~unisub_hub.engine.Executor`
(the CLI does not reach into the engine for it).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from ..engine.executor import Executor, SerialExecutor
from ..errors import ExecutorError, option

__all__ = ["EXECUTOR_HELP", "check_executor_target", "open_executor"]

EXECUTOR_HELP = (
    "Where the folds over sources run: serial (this process), dask (a local cluster of --workers processes) "
    "or dask://HOST:PORT (a running scheduler)."
)


def check_executor_target(target: str, workers: int | None = None) -> str:
    """``target`` when it names an executor (its address checked), else one clear error.

    Raises:
        ExecutorError: not serial, dask or dask://HOST:PORT; or ``workers`` without ``dask``.
    """
    if workers is not None and target != "dask":
        raise ExecutorError(f"{option('workers')} sizes the local cluster of {option('executor')} dask")
    if target in ("serial", "dask"):
        return target
    from ..engine.dask_executor import scheduler_address

    scheduler_address(target)
    return target


@contextmanager
def open_executor(target: str = "serial", *, workers: int | None = None) -> Iterator[Executor]:
    """The executor ``target`` names, for the block (a local cluster is stopped after it).

    Raises:
        ExecutorError: see :func:`check_executor_target`; Dask missing or unreachable.
    """
    check_executor_target(target, workers)
    if target == "serial":
        yield SerialExecutor()
        return
    from ..engine.dask_executor import DaskExecutor, dask_client

    with dask_client(target, workers) as client:
        yield DaskExecutor(client)
