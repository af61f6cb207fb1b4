"""Property-based: generated ``merge`` inputs (task lists, methods, weights, densities, seeds,
head rules) end in a valid merged set or one catalogue error, never a traceback, a wrong answer
or a leftover; the same through the command line, with exit codes 0, 1 or 2 only."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from clitools import SHAPES, run, write_checkpoints
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from unisub_hub.cli import cli
from unisub_hub.errors import UnisubError
from unisub_hub.format import load_basis, load_coefficients
from unisub_hub.merge.registry import METHODS, TAKES
from unisub_hub.pipeline.merge import merge
from unisub_hub.pipeline.validate import validate

pytestmark = pytest.mark.slow

CASES = 500
TASKS = ("t4", "t5", "t6")


@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    root = tmp_path_factory.mktemp("merge-fuzz")
    home = root / "home"
    models = write_checkpoints(root / "zoo", 8, SHAPES)
    run("--home", home, "build", *models[:4], "--out", root / "basis", "--k", "2", "--name", "b")
    run("--home", home, "build", *models[1:5], "--out", root / "other", "--k", "2", "--name", "o")
    for number in (4, 5, 6):
        run("--home", home, "project", models[number], "--basis", "b", "--out", root / f"t{number}")
    run("--home", home, "project", models[7], "--basis", "o", "--out", root / "foreign")
    return root


number = st.floats(allow_nan=True, allow_infinity=True) | st.integers(-3, 3).map(float)
wild = st.fixed_dictionaries(
    {
        "tasks": st.lists(st.sampled_from([*TASKS, "t4", "foreign"]), min_size=1, max_size=4),
        "method": st.sampled_from([*METHODS, "slerp", ""]),
        "weights": st.none() | st.lists(number | st.sampled_from([0.5, 0.25, 1 / 3]), max_size=5),
        "density": st.none() | number | st.sampled_from([0.0, 0.3, 1.0]),
        "seed": st.none() | st.integers(-(2**70), 2**70),
        "heads": st.none() | st.sampled_from(["average", "first", "none", "mean"]),
    }
)
"""Anything: most of it must be refused, in one line."""


@st.composite
def sane(draw: st.DrawFn) -> dict:
    """Inputs a user means: tasks of the basis, weights summing to 1, the method's own parameters."""
    tasks = draw(st.lists(st.sampled_from(TASKS), min_size=1, max_size=4))
    method = draw(st.sampled_from(list(METHODS)))
    raw = draw(st.lists(st.floats(0.05, 5), min_size=len(tasks), max_size=len(tasks)))
    weights = None if draw(st.booleans()) else [w / sum(raw) for w in raw]
    takes = TAKES[method]
    return {
        "tasks": tasks,
        "method": method,
        "weights": weights,
        "density": draw(st.floats(0.05, 1)) if "density" in takes else None,
        "seed": draw(st.integers(0, 2**32)) if "seed" in takes else None,
        "heads": draw(st.none() | st.sampled_from(["average", "first", "none"])),
    }


inputs = wild | sane()


def _leftovers(folder: Path) -> list[Path]:
    return [p for p in folder.parent.iterdir() if p.name.startswith(f".{folder.name}.tmp-")]


@settings(max_examples=CASES, deadline=None, database=None, suppress_health_check=list(HealthCheck))
@given(case=inputs, through_cli=st.booleans())
def test_generated_merge_inputs_end_in_a_valid_set_or_one_error(zoo, tmp_path_factory, case, through_cli):
    out = tmp_path_factory.mktemp("case") / "merged"
    if through_cli:
        args = ["--home", str(zoo / "home"), "merge", *(str(zoo / t) for t in case["tasks"]), "--out", str(out)]
        args += ["--method", case["method"]]
        if case["weights"] is not None:
            args += ["--weights", ",".join(repr(w) for w in case["weights"])]
        for flag in ("density", "seed", "heads"):
            if case[flag] is not None:
                args += [f"--{flag}", str(case[flag])]
        result = CliRunner().invoke(cli, args)
        assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
        assert result.exit_code in (0, 1, 2), result.output
        if result.exit_code == 1:
            lines = [line for line in result.output.splitlines() if line.strip()]
            assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
        made = result.exit_code == 0
    else:
        tasks = [load_coefficients(zoo / t) for t in case["tasks"]]
        try:
            merge(
                tasks,
                load_basis(zoo / "basis"),
                out,
                method=case["method"],
                weights=case["weights"],
                density=case["density"],
                seed=case["seed"],
                heads=case["heads"],
            )
            made = True
        except UnisubError:
            made = False
    assert not _leftovers(out)
    event(f"{case['method'] or 'no method'}: {'merged' if made else 'refused'}")
    if not made:
        assert not out.exists(), "a refused merge left its output"
        return
    foreign = set(case["tasks"]) == {"foreign"}  # tasks of one other basis merge on theirs (the CLI finds it)
    assert "foreign" not in case["tasks"] or (foreign and through_cli), "tasks of two bases were merged"
    assert validate(out, deep=True, against=str(zoo / ("other" if foreign else "basis"))).ok
    merged = load_coefficients(out)
    weights = merged.manifest["merge"]["weights"]
    assert all(math.isfinite(w) for w in weights) and len(weights) == len(case["tasks"])
    if case["method"] == "linear":  # exact: the weighted sum of the coefficients
        parts = [load_coefficients(zoo / t) for t in case["tasks"]]
        for layer in merged.layer_names:
            expected = sum(w * p.coefficient(layer).double() for w, p in zip(weights, parts, strict=True))
            assert torch.allclose(merged.coefficient(layer).double(), expected, atol=1e-6)
