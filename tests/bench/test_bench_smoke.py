"""The benchmark scripts keep working: ``bench/run.py --quick`` on tiny sizes (no timing asserted)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_quick_benchmark_runs_and_writes_results(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        [sys.executable, str(REPO / "bench" / "run.py"), "--quick", "--out", str(tmp_path / "results"), "--data", str(tmp_path / "data")],
        capture_output=True, text=True, env=env, timeout=600,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    results = list((tmp_path / "results").glob("*-quick.json"))
    rows = json.loads(results[0].read_text())
    sections = {row["section"] for row in rows}
    assert sections == {"lora-build", "full-build", "materialize", "pull", "ratios"}
    ours = [r for r in rows if r["section"] == "lora-build" and r["contender"] == "unisub-hub"][0]
    assert ours["max_principal_angle"] < 1e-6 and ours["peak_rss_mib"] > 0
    baseline = [r for r in rows if r["section"] == "lora-build" and r["contender"] == "in-memory-svd"][0]
    assert baseline["max_principal_angle"] < 1e-4
    full = [r for r in rows if r["section"] == "full-build" and r["contender"] == "unisub-hub"]
    assert [r["checkpoints"] for r in full] == [4, 8] and all(r["planted_angle"] < 1e-6 for r in full)
    floor = [r for r in rows if r["section"] == "ratios" and r["against"] == "read-floor" and r["unisub"] == "unisub-hub"]
    assert len(floor) == 2 and all(0 < r["throughput_fraction_of_floor"] for r in floor)
    arithmetic = [r for r in rows if r["section"] == "ratios" and r["against"] == "arithmetic-floor" and r["unisub"] == "unisub-hub"]
    assert len(arithmetic) == 2 and all(0 < r["throughput_fraction_of_arithmetic_floor"] for r in arithmetic)
    speedups = [r for r in rows if r["section"] == "ratios" and r["against"] == "in-memory-svd" and r["collection"] == "6 adapters, 2 layers, d=64"]
    assert {r["unisub"] for r in speedups} == {"unisub-hub", "unisub-hub-float32"} and all(r["speedup"] > 0 for r in speedups)
    pull = [r for r in rows if r["section"] == "pull"][0]
    assert pull["ratio"] > 1
    assert (tmp_path / "results" / results[0].name.replace(".json", ".md")).read_text().startswith("# unisub-hub benchmark results")


def _quick(script: str, tmp_path: Path) -> list[dict]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, str(REPO / "bench" / script), "--quick", "--data", str(tmp_path / "data")], capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    return [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]


def test_quick_dask_benchmark_builds_the_serial_answer_on_a_cluster(tmp_path):
    rows = _quick("dask_bench.py", tmp_path)
    assert [row["executor"] for row in rows] == ["serial", "dask, 1 worker", "dask, 2 workers"]
    assert all(row["angle_to_serial"] < 1e-6 for row in rows[1:]) and all(row["peak_rss_mib"] > 0 for row in rows)


def test_quick_grow_benchmark_grows_to_the_rebuilt_basis(tmp_path):
    rows = _quick("grow_bench.py", tmp_path)
    steps = [row for row in rows if "grow_s" in row]
    assert [row["members"] for row in steps] == [6, 8] and rows[0]["state_bytes"] > 0
    assert all(row["largest_angle"] < 1e-5 and abs(row["explained_variance_grown"] - row["explained_variance_rebuilt"]) < 1e-5 for row in steps)
