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
    assert sections == {"lora-build", "full-build", "materialize", "pull"}
    ours = [r for r in rows if r["section"] == "lora-build" and r["contender"] == "unisub-hub"][0]
    assert ours["max_principal_angle"] < 1e-6 and ours["peak_rss_mib"] > 0
    baseline = [r for r in rows if r["section"] == "lora-build" and r["contender"] == "in-memory-svd"][0]
    assert baseline["max_principal_angle"] < 1e-4
    pull = [r for r in rows if r["section"] == "pull"][0]
    assert pull["ratio"] > 1
    assert (tmp_path / "results" / results[0].name.replace(".json", ".md")).read_text().startswith("# unisub-hub benchmark results")
