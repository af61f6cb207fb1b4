"""The universality benchmark's statistics: t-intervals and the held-out summary (no models run)."""

from __future__ import annotations

import importlib.util
import math
import random
import statistics
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def universality():
    spec = importlib.util.spec_from_file_location("universality", REPO / "bench" / "universality.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["universality"] = module
    spec.loader.exec_module(module)
    return module


def test_interval_is_the_student_t_interval(universality):
    assert universality.interval([0.7]) == (0.7, 0.0)
    # t(0.975) for 1 and 4 degrees of freedom, from the tables: 12.706, 2.776
    mean, half = universality.interval([1.0, 3.0])
    assert mean == 2.0 and half == pytest.approx(12.706 * math.sqrt(2) / math.sqrt(2), rel=1e-4)
    values = [0.1, 0.4, 0.2, 0.8, 0.5]
    mean, half = universality.interval(values)
    assert half == pytest.approx(2.776 * statistics.stdev(values) / math.sqrt(5), rel=1e-3)


def test_summary_separates_held_out_from_training_and_pairs_differences(universality):
    rng = random.Random(0)
    rows = []
    for seed in range(3):
        for task in range(8):
            mean_only = rng.random()
            rows.append(
                {
                    "collection": "c",
                    "metric": "accuracy",
                    "seed": seed,
                    "task": f"t{task}",
                    "role": "heldout",
                    "scores": {"mean only": mean_only, "projected k=16": mean_only + 0.1, "original": 1.0},
                }
            )
            rows.append(
                {
                    "collection": "c",
                    "metric": "accuracy",
                    "seed": seed,
                    "task": f"t{task + 1}",
                    "role": "training",
                    "scores": {"mean only": 0.5, "original": 1.0},
                }
            )
    summary = universality.summarise(rows)["c"]
    assert summary["seeds"] == [0, 1, 2] and summary["heldout"]["original"]["n"] == 24
    assert summary["training"]["mean only"] == {"mean": 0.5, "ci95": 0.0, "n": 24}
    assert "projected k=16" not in summary["training"]
    difference = summary["heldout_differences"]["projected k=16 - mean only"]
    assert difference["mean"] == pytest.approx(0.1) and difference["ci95"] == pytest.approx(0.0, abs=1e-12)
    table = universality.markdown({"c": summary}, 60.0)
    assert "| mean only |" in table and "(n=24)" in table
