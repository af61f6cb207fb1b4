"""Executors from what the user typed: serial, a local cluster, a scheduler's address; bad ones are one line."""

from __future__ import annotations

import socket
import threading
import time

import pytest
from clitools import SHAPES, run, write_checkpoints

from unisub_hub.engine.executor import SerialExecutor
from unisub_hub.errors import ExecutorError
from unisub_hub.pipeline.executors import check_executor_target, open_executor


def test_a_serial_executor_reports_every_item_it_folds():
    seen = []
    total = SerialExecutor().with_progress(seen.append).aggregate([1, 2, 3], lambda: 0, lambda a, b: a + b, int.__add__)
    assert total == 6 and seen == [1, 1, 1]


def test_serial_is_the_executor_of_serial():
    with open_executor("serial") as executor:
        assert isinstance(executor, SerialExecutor) and executor.in_process


@pytest.mark.parametrize(
    "target",
    [
        "dask://",
        "dask://host",
        "dask://host:",
        "dask://host:abc",
        "dask://:8786",
        "dask://host:0",
        "dask://host:70000",
        "dask://[::1]",
        "http://host:8786",
        "inproc://x",
        "dask://ho st:1",
        "cluster",
    ],
)
def test_a_bad_executor_is_one_line_before_anything_runs(tmp_path, target):
    with pytest.raises(ExecutorError) as caught:
        check_executor_target(target)
    assert target in str(caught.value) or "HOST:PORT" in str(caught.value)
    zoo = write_checkpoints(tmp_path / "zoo", 3, SHAPES)
    result = run("build", *zoo, "--out", tmp_path / "b", "--executor", target, "--no-register", ok=False)
    assert result.exit_code == 2 and "Traceback" not in result.output and "--executor" in result.output
    assert not (tmp_path / "b").exists()


def test_addresses_of_a_scheduler_are_accepted():
    for target in ("dask://127.0.0.1:8786", "tcp://scheduler.local:8786", "dask://[::1]:8786"):
        assert check_executor_target(target) == target


def test_workers_without_a_local_cluster_is_refused():
    with pytest.raises(ExecutorError, match="workers sizes the local cluster"):
        check_executor_target("serial", workers=2)


def test_a_silent_peer_is_not_waited_for_forever():
    """Something accepts the connection and never speaks (an HTTP server, say): one line, in bounded time."""
    pytest.importorskip("distributed")
    from unisub_hub.engine.dask_executor import dask_client

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    accepted = []
    threading.Thread(target=lambda: accepted.append(listener.accept()), daemon=True).start()
    port = listener.getsockname()[1]
    started = time.monotonic()
    with pytest.raises(ExecutorError, match=f"cannot reach a Dask scheduler at 127.0.0.1:{port}"):
        with dask_client(f"dask://127.0.0.1:{port}", timeout=1.0):
            pass
    assert time.monotonic() - started < 15 and accepted
    listener.close()
