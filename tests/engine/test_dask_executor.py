"""Builds on a local Dask cluster of two worker processes equal the serial build, even when a worker dies."""

from __future__ import annotations

import json
import os
import signal
import threading
import time

import pytest
import torch
from clitools import SHAPES, run, write_checkpoints
from conftest import max_principal_angle, planted_collection, random_loras

from unisub_hub.engine import BuildOptions, LayerSpec, RankRule, build_basis
from unisub_hub.format import load_basis
from unisub_hub.io.memory import InMemoryCheckpoint

distributed = pytest.importorskip("distributed")

from unisub_hub.engine.dask_executor import DaskExecutor, dask_client  # noqa: E402

SHAPES_2D = {"a.weight": (24, 16), "b.weight": (16, 20)}


@pytest.fixture(scope="module")
def client():
    with dask_client("dask", workers=2) as connected:
        yield connected


def factors(layer):
    return (
        [layer.left, layer.right]
        if layer.left is not None
        else [layer.components.reshape(layer.components.shape[0], -1).T]
    )


@pytest.mark.parametrize("kind", ["checkpoint", "lora"])
@pytest.mark.parametrize(("modes", "solver"), [((2, 3), "exact"), ((2, 3), "randomized"), ((1,), "auto")])
def test_a_cluster_build_equals_the_serial_build(client, kind, modes, solver):
    sources = planted_collection(10, SHAPES_2D) if kind == "checkpoint" else random_loras(10, SHAPES_2D, ranks=[2, 4])
    specs = [LayerSpec(name, shape) for name, shape in SHAPES_2D.items()]
    options = BuildOptions(modes=modes, rank=RankRule(k=3), center=kind == "checkpoint", solver=solver)
    serial = build_basis(specs, sources[:8], holdout=sources[8:], options=options)
    spread = build_basis(specs, sources[:8], holdout=sources[8:], options=options, executor=DaskExecutor(client))
    for name in SHAPES_2D:
        assert serial.layers[name].ranks == spread.layers[name].ranks
        for ours, theirs in zip(factors(serial.layers[name]), factors(spread.layers[name]), strict=True):
            assert max_principal_angle(ours, theirs) < 1e-6
    for ours, theirs in zip(serial.report.layers, spread.report.layers, strict=True):
        assert ours.mean_error(holdout=True, centered=True) == pytest.approx(
            theirs.mean_error(holdout=True, centered=True), rel=1e-9, abs=1e-12
        )


class GatedCheckpoint(InMemoryCheckpoint):
    """A source whose reads, in whatever process, say so in ``gate/`` and then wait for ``gate/go``.

    The test kills a worker only once it has seen a read start in it (no timing window), and
    the read markers show afterwards that the killed worker's source was read again elsewhere.
    """

    def __init__(self, name, tensors, gate):
        super().__init__(name, tensors)
        self.gate = str(gate)

    def load(self, names):
        import pathlib
        import uuid

        gate = pathlib.Path(self.gate)
        (gate / f"read-{self.name}-{os.getpid()}-{uuid.uuid4().hex[:6]}").touch()
        deadline = time.monotonic() + 60
        while not (gate / "go").exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        return super().load(names)


def _reads(gate):
    """(source name, pid) of every read started so far."""
    return [
        (path.name.split("-")[1] + "-" + path.name.split("-")[2], int(path.name.split("-")[3]))
        for path in gate.glob("read-*")
    ]


@pytest.mark.slow
def test_workers_killed_in_the_middle_of_a_build_do_not_change_the_answer(tmp_path):
    """Workers die while they read (the nannies start new ones): every chunk runs again, same basis.

    The test has its own cluster, and the gate always opens (finally), so a failure here never
    leaves reads blocked on a cluster that other tests use.
    """
    collection = planted_collection(12, SHAPES_2D)
    # The first member is read alone first (the centring shift): it passes, the others wait.
    gated = collection[:1] + [GatedCheckpoint(s.name, s.tensors, tmp_path) for s in collection[1:]]
    specs = [LayerSpec(name, shape) for name, shape in SHAPES_2D.items()]
    options = BuildOptions(rank=RankRule(k=3), solver="exact", null_baseline=False)
    serial = build_basis(specs, collection, options=options)
    done = {}
    with dask_client("dask", workers=2) as client:
        builder = threading.Thread(
            target=lambda: done.update(result=build_basis(specs, gated, options=options, executor=DaskExecutor(client)))
        )
        builder.start()
        try:
            deadline = time.monotonic() + 120
            while not _reads(tmp_path) and time.monotonic() < deadline:
                time.sleep(0.01)
            settle = time.monotonic() + 2  # under load the second worker may start its read a little later
            while len({pid for _, pid in _reads(tmp_path)}) < 2 and time.monotonic() < settle:
                time.sleep(0.01)
            first_reads = _reads(tmp_path)
            victims = {pid for _, pid in first_reads}
            assert victims, "no worker started a read"
            for victim in victims:
                os.kill(victim, signal.SIGKILL)  # inside load(), waiting at the gate
            deadline = time.monotonic() + 60
            while (victims & _worker_pids(client) or len(_worker_pids(client)) < 2) and time.monotonic() < deadline:
                time.sleep(0.05)
        finally:
            (tmp_path / "go").touch()
        builder.join(timeout=300)
        assert not builder.is_alive() and "result" in done
        for name in SHAPES_2D:
            assert max_principal_angle(serial.layers[name].left, done["result"].layers[name].left) < 1e-6
        for source, victim in first_reads:  # each interrupted read ran again in another process
            assert {pid for name, pid in _reads(tmp_path) if name == source} - {victim}
        assert not victims & _worker_pids(client)  # they really died (the nannies started others)


def _worker_pids(client):
    """The process ids of the live workers (one being removed does not answer)."""
    return set(client.run(os.getpid, on_error="ignore").values())


@pytest.mark.slow
def test_the_command_line_builds_on_a_local_cluster(tmp_path):
    zoo = write_checkpoints(tmp_path / "zoo", 5, SHAPES)
    run("build", *zoo, "--out", tmp_path / "serial", "--k", "2", "--no-register")
    spread = json.loads(
        run(
            "build",
            *zoo,
            "--out",
            tmp_path / "spread",
            "--k",
            "2",
            "--executor",
            "dask",
            "--workers",
            "2",
            "--no-register",
            "--json",
        ).stdout
    )
    assert spread["content_id"].startswith("sha256:")
    serial, cluster = load_basis(tmp_path / "serial"), load_basis(tmp_path / "spread")
    for name in serial.layer_names:
        assert max_principal_angle(serial.layer(name).left, cluster.layer(name).left) < 1e-6
    bad = run("build", *zoo, "--out", tmp_path / "x", "--workers", "2", ok=False)
    assert bad.exit_code == 2 and "--workers sizes the local cluster of --executor dask" in bad.output


def test_tied_tensors_are_found_by_a_fold_on_the_cluster(client):
    from unisub_hub.pipeline.ties import find_ties

    gen = torch.Generator().manual_seed(0)
    sources = []
    for m in range(4):
        embed = torch.randn(10, 6, generator=gen)
        sources.append(
            InMemoryCheckpoint(
                f"m{m}",
                {
                    "model.embed_tokens.weight": embed,
                    "lm_head.weight": embed.clone(),
                    "layers.0.w": torch.randn(6, 6, generator=gen),
                },
            )
        )
    names = list(sources[0].tensors)
    assert (
        find_ties(sources, names, DaskExecutor(client))
        == {"lm_head.weight": "model.embed_tokens.weight"}
        == find_ties(sources, names)
    )
    sources[3].tensors["lm_head.weight"] = sources[3].tensors["lm_head.weight"] + 1e-3  # untied in one member: in none
    assert find_ties(sources, names, DaskExecutor(client)) == {} == find_ties(sources, names)
