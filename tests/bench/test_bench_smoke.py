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
