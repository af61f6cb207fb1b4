"""The benchmark scripts keep working: ``bench/run.py --quick`` on tiny sizes (no timing asserted)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # benchmark smoke runs

REPO = Path(__file__).resolve().parents[2]


def test_quick_benchmark_runs_and_writes_results(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        [
            sys.executable,
            str(REPO / "bench" / "run.py"),
            "--quick",
            "--out",
            str(tmp_path / "results"),
            "--data",
            str(tmp_path / "data"),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    results = list((tmp_path / "results").glob("*-quick.json"))
    rows = json.loads(results[0].read_text())
    sections = {row["section"] for row in rows}
    assert sections == {"lora-build", "full-build", "materialize", "pull", "ratios"}
    ours = [r for r in rows if r["section"] == "lora-build" and r["contender"] == "unisub-hub"][0]
    assert ours["max_principal_angle"] < 1e-6
    assert ours["peak_rss_mib"] > 100  # a process that imported torch; a misread unit (KiB, pages) fails
    baseline = [r for r in rows if r["section"] == "lora-build" and r["contender"] == "in-memory-svd"][0]
    assert baseline["max_principal_angle"] < 1e-4
    full = [r for r in rows if r["section"] == "full-build" and r["contender"] == "unisub-hub"]
    assert [r["checkpoints"] for r in full] == [4, 8] and all(r["planted_angle"] < 1e-6 for r in full)
    # Every ratio is the quotient of the rows it names (a wrong pairing or an inverted ratio fails here).
    timed = {(r.get("adapters"), r.get("checkpoints"), r["contender"]): r for r in rows if "seconds" in r}
    ratios = [r for r in rows if r["section"] == "ratios"]
    assert len(ratios) >= 8
    for ratio in ratios:
        key = (
            (int(ratio["collection"].split()[0]), None)
            if "adapters" in ratio["collection"]
            else (None, int(ratio["collection"].split()[0]))
        )
        ours, other = timed[(*key, ratio["unisub"])], timed[(*key, ratio["against"])]
        if "speedup" in ratio:
            assert ratio["speedup"] == pytest.approx(other["seconds"] / ours["seconds"])
            assert ratio["peak_rss_fraction"] == pytest.approx(ours["peak_rss_mib"] / other["peak_rss_mib"])
        else:
            fraction = ratio.get("throughput_fraction_of_floor", ratio.get("throughput_fraction_of_arithmetic_floor"))
            assert fraction == pytest.approx(ours["throughput_mib_s"] / other["throughput_mib_s"])
    assert {r["against"] for r in ratios} >= {"read-floor", "arithmetic-floor", "in-memory-svd"}
    pull = [r for r in rows if r["section"] == "pull"][0]
    assert pull["ratio"] > 1
    assert (
        (tmp_path / "results" / results[0].name.replace(".json", ".md"))
        .read_text()
        .startswith("# unisub-hub benchmark results")
    )


def _quick(script: str, tmp_path: Path) -> list[dict]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        [sys.executable, str(REPO / "bench" / script), "--quick", "--data", str(tmp_path / "data")],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]


def test_quick_dask_benchmark_builds_the_serial_answer_on_a_cluster(tmp_path):
    rows = _quick("dask_bench.py", tmp_path)
    assert [row["executor"] for row in rows] == ["serial", "dask, 1 worker", "dask, 2 workers", "serial, float64 sums"]
    assert all(row["planted_angle_to_serial"] <= row["angle_to_serial"] < 1e-4 for row in rows[1:])
    assert all(row["peak_rss_mib"] > 100 for row in rows)  # processes that imported torch


def test_quick_grow_benchmark_grows_to_the_rebuilt_basis(tmp_path):
    rows = _quick("grow_bench.py", tmp_path)
    steps = [row for row in rows if "grow_s" in row]
    assert [row["members"] for row in steps] == [6, 8]
    assert rows[0]["state_bytes"] > 50_000  # float64 sums over 64-wide sides: tens of KiB, not an empty folder
    assert all(
        row["largest_angle"] < 1e-5 and abs(row["explained_variance_grown"] - row["explained_variance_rebuilt"]) < 1e-5
        for row in steps
    )


def test_quick_command_benchmark_measures_the_answer_it_times(tmp_path):
    """The whole-command benchmark: its reconstruction error of unisub-hub's members (through
    ``project`` and ``materialize``) is the projection error onto the basis it wrote."""
    from safetensors.torch import load_file

    sys.path.insert(0, str(REPO / "bench"))
    import command_bench

    rows = command_bench.bench(command_bench.QUICK[:1], tmp_path / "data", lambda line: None, only={"unisub-hub"})
    ours = next(row for row in rows if row["contender"] == "unisub-hub")
    assert ours["seconds"] > 0 and ours["peak_rss_mib"] > 50 and 0 < ours["relative_error"] < 1
    # The same error from the basis itself: X_hat = U U^T X V V^T per module.
    sources = sorted((tmp_path / "data").glob("*/adapter-*"))
    members = sources[: command_bench.ACCURACY_ADAPTERS]
    line = command_bench.commands(
        [str(s) for s in sources], tmp_path / "basis", command_bench.QUICK[0]["k"], len(sources)
    )["unisub-hub"]
    subprocess.run(
        line, check=True, capture_output=True, env={**os.environ, "UNISUB_HOME": str(tmp_path / "home")}
    )  # the same build, kept
    factors = load_file(tmp_path / "basis" / "basis.safetensors")
    miss = total = 0.0
    for member in members:
        for module, update in command_bench.updates(member).items():
            left, right = factors[f"{module}.weight::U"].double(), factors[f"{module}.weight::V"].double()
            miss += float((update - left @ (left.T @ update @ right) @ right.T).square().sum())
            total += float(update.square().sum())
    assert ours["relative_error"] == pytest.approx((miss / total) ** 0.5, rel=1e-4)


def test_quick_web_benchmark_times_every_page_it_names(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        [sys.executable, str(REPO / "bench" / "web_bench.py"), "--quick"],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    rows = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    assert [row["page"].split(" (")[0] for row in rows][:4] == [
        "front page",
        "basis page",
        "task page",
        "front page data",
    ]
    for row in rows[:4]:
        assert 0 < row["median_ms"] <= row["max_ms"] and row["bytes"] > 2000
    assert rows[0]["bytes"] > 50 * 100  # 50 task rows on the front page
