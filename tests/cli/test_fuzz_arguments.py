"""Property-based: any command line, however odd its flags and values, ends in a result or one line."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from clitools import SHAPES, run, write_checkpoints
from conftest import set_hf
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from unisub_hub.cli import cli

CASES = 1000

pytestmark = pytest.mark.slow  # a 1000-example battery

COMMANDS = {
    "build": [
        "--out",
        "--k",
        "--variance",
        "--modes",
        "--center",
        "--no-center",
        "--holdout",
        "--include",
        "--include-from",
        "--exclude",
        "--max-memory",
        "--device",
        "--dtype",
        "--name",
        "--arch",
        "--shard-size",
        "--precision",
        "--solver",
        "--power-iterations",
        "--no-register",
        "--json",
    ],
    "project": ["--basis", "--out", "--name", "--device", "--shard-size", "--no-register", "--json"],
    "materialize": ["--basis", "--base", "--out", "--format", "--shard-size", "--device", "--json"],
    "info": ["--verify", "--json"],
    "validate": ["--deep", "--against", "--base", "--json"],
    "analyze": ["--select", "--json"],
    "rebase": ["--basis", "--out", "--name", "--json"],
    "train": [
        "--basis",
        "--base",
        "--data",
        "--out",
        "--epochs",
        "--max-steps",
        "--lr",
        "--batch-size",
        "--seed",
        "--init",
        "--json",
    ],
    "registry list": ["--arch", "--name", "--stale", "--json"],
    "registry show": ["--json"],
    "registry rm": ["--force"],
    "registry alias": [],
    "registry tag": [],
    "registry gc": ["--force"],
    "pull": ["--materialize", "--out", "--format", "--token"],
    "push": ["--revision", "--create-pr", "--private", "--push-basis", "--token"],
}

SWITCHES = {
    "--json",
    "--no-register",
    "--center",
    "--no-center",
    "--verify",
    "--deep",
    "--force",
    "--stale",
    "--materialize",
    "--create-pr",
    "--private",
}
"""Flags that take no value."""

odd_values = st.sampled_from(
    [
        "",
        "-1",
        "0",
        "1",
        "3",
        "1e400",
        "nan",
        "inf",
        "-inf",
        "abc",
        "2,3",
        "1,2,3",
        "4GiB",
        "5XB",
        "../up",
        "/",
        ".",
        "org/name",
        "org/name@v9",
        "b",
        "b:1",
        "b@latest",
        "sha256:00",
        "cafe01",
        "auto",
        "cuda",
        "float64",
        "bf16",
        "\udcff",
        "x" * 300,
        "--k",
        "-",
        "*",
        "[",
        "hf",
        "peft",
        "merged",
    ]
) | st.text(min_size=0, max_size=8).filter(lambda s: "\x00" not in s)


@pytest.fixture(scope="module")
def place(tmp_path_factory):
    root = tmp_path_factory.mktemp("argfuzz")
    zoo = write_checkpoints(root / "zoo", 4, SHAPES)
    return root, zoo


@settings(max_examples=CASES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_any_command_line_ends_in_a_result_or_one_line(place, tmp_path, monkeypatch, data):
    root, zoo = place
    monkeypatch.chdir(tmp_path)
    set_hf(monkeypatch, endpoint="http://127.0.0.1:9")  # nothing listens: Hub calls fail fast
    if not (tmp_path / "home-ready").exists():
        run("build", *zoo, "--out", tmp_path / "basis", "--k", "1", "--name", "b")
        (tmp_path / "home-ready").touch()
    command = data.draw(st.sampled_from(sorted(COMMANDS)))
    positional = data.draw(
        st.lists(
            st.sampled_from([str(zoo[0]), str(zoo[1]), str(tmp_path / "basis"), "b", "me/x", "nothing"]) | odd_values,
            max_size=3,
        )
    )
    flags = data.draw(
        st.lists(st.tuples(st.sampled_from(COMMANDS[command] + ["--help", "--bogus"]), odd_values), max_size=4)
    )
    argv = [*command.split(), *positional]
    for flag, value in flags:
        argv += [flag] if flag in SWITCHES else [flag, value]
    result = CliRunner().invoke(cli, argv)
    event(f"exit {result.exit_code}")
    assert result.exit_code in (0, 1, 2), (argv, result.output)
    assert result.exception is None or isinstance(result.exception, SystemExit), (argv, repr(result.exception))
    assert "Traceback" not in result.output, argv
    flags_given = [flag for flag, _ in flags]
    bogus_as_option = any(
        argv[i] == "--bogus" and (argv[i - 1] in SWITCHES or not argv[i - 1].startswith("-")) for i in range(len(argv))
    )  # not taken as the value of the flag before it
    if bogus_as_option and "--help" not in argv:  # an unknown option is a usage error
        assert result.exit_code == 2, (argv, result.output)
    if result.exit_code != 0:  # one line says what went wrong (validate's failed checks are its report)
        said = [line for line in result.output.splitlines() if line.startswith("Error")]
        assert len(said) == 1 or (command == "validate" and result.exit_code == 1 and not said), (argv, result.output)
    elif "--json" in flags_given and "--help" not in flags_given:  # a success with --json prints JSON
        json.loads(result.stdout)
