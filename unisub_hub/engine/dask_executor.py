"""Builds on a Dask cluster: each worker folds its share of the sources, the driver merges.

The engine's passes are all ``aggregate(zero, step, merge)`` over sources (see
:mod:`.executor`), so a cluster only has to run ``step`` where the data is. The sources
are split into about two chunks per worker; each chunk becomes one task that starts from
``zero()``, reads and folds its sources *in the worker* (local paths on shared storage, or
Hub files, which the worker downloads into its Hugging Face cache when it first reads them),
and sends back one partial accumulator. The driver never reads a source: it holds at most
two accumulators while it merges the partial sums in the order they arrive.

A lost worker loses its running tasks, which the scheduler runs again elsewhere (``retries``
on top of Dask's own rescheduling); a task the scheduler gives up on is submitted again, a
bounded number of times. The sums are associative, so the answer is the serial build's up
to round-off. Partial sums are float32 or float64 (the accumulate dtype): Dask's
torch serializer cannot send bfloat16 back.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from ..errors import ExecutorError, option
from .executor import SerialExecutor

__all__ = ["DaskExecutor", "dask_client"]

Item = TypeVar("Item")
Acc = TypeVar("Acc")


class DaskExecutor:
    """Runs each fold as tasks on a ``distributed.Client``'s workers.

    Args:
        client: a connected ``distributed.Client``.
        chunks_per_worker: tasks per worker and fold; more tasks balance uneven sources and
            lose less work to a dead worker, fewer send fewer partial sums back.
        retries: extra attempts the scheduler gives a task whose worker died or that raised.
        resubmits: how often a task the scheduler gave up on (cancelled, or its workers
            killed ``retries`` times) is submitted again before the build fails.
        on_items: called with the number of sources each finished task folded (progress).
    """

    in_process = False

    def __init__(
        self,
        client: Any,
        *,
        chunks_per_worker: int = 2,
        retries: int = 3,
        resubmits: int = 3,
        on_items: Callable[[int], None] | None = None,
    ) -> None:
        self.client = client
        self.chunks_per_worker = chunks_per_worker
        self.retries = retries
        self.resubmits = resubmits
        self.on_items = on_items

    def with_progress(self, on_items: Callable[[int], None]) -> DaskExecutor:
        return DaskExecutor(
            self.client,
            chunks_per_worker=self.chunks_per_worker,
            retries=self.retries,
            resubmits=self.resubmits,
            on_items=on_items,
        )

    def aggregate(
        self,
        items: Iterable[Item],
        zero: Callable[[], Acc],
        step: Callable[[Acc, Item], Acc],
        merge: Callable[[Acc, Acc], Acc],
    ) -> Acc:
        from concurrent.futures import CancelledError

        from distributed import as_completed
        from distributed.scheduler import KilledWorker

        items = list(items)
        workers = max(1, len(self.client.scheduler_info().get("workers", {})))
        count = max(1, min(len(items), workers * self.chunks_per_worker))
        chunks = [items[i::count] for i in range(count)]
        attempts = {self._submit(chunk, zero, step, merge): (chunk, 0) for chunk in chunks}
        pending = as_completed(list(attempts))
        total: Acc | None = None
        for future in pending:
            chunk, attempt = attempts.pop(future)
            try:
                part = future.result()
            except (CancelledError, KilledWorker) as error:
                # The scheduler gave up on the task (its worker died too often, or the data it
                # needed went with a worker): run the chunk again, a bounded number of times.
                if attempt >= self.resubmits:
                    raise ExecutorError(
                        f"a task of the build was lost {attempt + 1} times ({error.__class__.__name__}): the cluster "
                        "keeps losing workers"
                    ) from None
                again = self._submit(chunk, zero, step, merge)
                attempts[again] = (chunk, attempt + 1)
                pending.add(again)
                continue
            total = part if total is None else merge(total, part)
            if self.on_items is not None:
                self.on_items(len(chunk))
            future.release()
        assert total is not None  # at least one chunk
        return total

    def _submit(
        self,
        chunk: list[Item],
        zero: Callable[[], Acc],
        step: Callable[[Acc, Item], Acc],
        merge: Callable[[Acc, Acc], Acc],
    ) -> Any:
        """One task that folds ``chunk`` serially in a worker.

        The fold's functions travel with each task (about two per worker), not scattered once:
        scattered data lives only on the workers that hold it, and a killed worker would take
        it with it, which the scheduler cannot recover.
        """
        fold = SerialExecutor().aggregate
        return self.client.submit(fold, chunk, zero, step, merge, pure=False, retries=self.retries)


@contextmanager
def dask_client(target: str, workers: int | None = None, *, timeout: float = 10.0) -> Iterator[Any]:
    """A connected ``distributed.Client`` for the block, closed after it.

    ``dask`` starts a local cluster of ``workers`` processes (one thread each; default 2) and
    stops it afterwards; ``dask://HOST:PORT`` (or ``tcp://HOST:PORT``) joins a running
    scheduler, whose workers must see the sources' paths and have unisub-hub installed.

    Raises:
        ExecutorError: dask is not installed, the address is not ``HOST:PORT``, or no scheduler
            answers there within ``timeout`` seconds.
    """
    try:
        from distributed import Client, LocalCluster
    except ImportError:
        raise ExecutorError(f"{option('executor')} dask needs Dask: pip install 'unisub-hub[dask]'") from None
    if target == "dask":
        cluster = LocalCluster(n_workers=workers or 2, threads_per_worker=1, processes=True, dashboard_address=None)
        with cluster, Client(cluster) as client:
            yield client
        return
    host, port = scheduler_address(target)
    client = _connect(Client, f"tcp://{host}:{port}", timeout)
    with client:
        yield client


def scheduler_address(target: str) -> tuple[str, int]:
    """``(host, port)`` of ``dask://HOST:PORT`` or ``tcp://HOST:PORT`` (``[v6]:PORT`` for IPv6).

    Raises:
        ExecutorError: anything else, named in the message.
    """
    scheme, sep, address = target.partition("://")
    if not sep or scheme not in ("dask", "tcp"):
        raise ExecutorError(f"{option('executor')} {target!r}: use serial, dask, or dask://HOST:PORT")
    host, colon, port = address.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    valid_host = bool(host) and all(ch.isalnum() or ch in ".-_:" for ch in host)
    if not colon or not valid_host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ExecutorError(
            f"{option('executor')} {target!r}: the scheduler's address must be HOST:PORT (port 1-65535)"
        )
    return host, int(port)


def _connect(client_type: Any, address: str, timeout: float) -> Any:
    """A client connected to ``address``, or one line after ``timeout`` seconds.

    Dask's own ``timeout`` covers opening the connection, not a peer that accepts it and then
    stays silent (any other TCP server): the connection is made in a thread that the caller
    stops waiting for.
    """
    import threading

    found: dict[str, Any] = {}

    def connect() -> None:
        try:
            found["client"] = client_type(address, timeout=f"{timeout}s")
        except Exception as error:  # OSError, TimeoutError, and Dask's own protocol errors
            found["error"] = error

    worker = threading.Thread(target=connect, name="dask-connect", daemon=True)
    worker.start()
    worker.join(timeout + 2)
    if "client" in found:
        return found["client"]
    reason = found["error"].__class__.__name__ if "error" in found else f"no answer in {timeout:g} s"
    raise ExecutorError(f"cannot reach a Dask scheduler at {address.removeprefix('tcp://')} ({reason}): is it running?")
