"""Library errors name library parameters; the command line words them as its flags, from one table."""

from __future__ import annotations

import re
from pathlib import Path

import click
import pytest
from clitools import SHAPES, run, write_checkpoints

import unisub_hub
from unisub_hub.cli import COMMANDS, _load
from unisub_hub.cli.messages import FLAGS, message
from unisub_hub.errors import EngineError, PickleRefusedError, option
from unisub_hub.pipeline.build import BuildSettings, build

PACKAGE = Path(unisub_hub.__file__).parent


def _flags_of(command: click.Command) -> set[str]:
    found = {opt for param in command.params for opt in (*param.opts, *param.secondary_opts) if opt.startswith("--")}
    if isinstance(command, click.Group):
        for sub in command.commands.values():
            found |= _flags_of(sub)
    return found


def test_every_parameter_a_message_names_has_a_real_flag():
    named = {
        name
        for path in PACKAGE.rglob("*.py")
        for name in re.findall(r"""option\(["']([a-z_]+)["']\)""", path.read_text())
    }
    assert named, "no library message names a parameter: the scan is broken"
    assert named <= set(FLAGS), f"parameters without a flag in cli/messages.FLAGS: {sorted(named - set(FLAGS))}"
    flags = set().union(*(_flags_of(_load(name)) for name in COMMANDS))
    assert set(FLAGS.values()) <= flags, f"FLAGS names flags no command has: {sorted(set(FLAGS.values()) - flags)}"
    assert set(FLAGS) <= named, f"FLAGS entries no message uses: {sorted(set(FLAGS) - named)}"


def test_the_library_speaks_parameters_and_the_cli_flags(tmp_path):
    sources = write_checkpoints(tmp_path / "models", 3, SHAPES)
    with pytest.raises(EngineError) as caught:
        build([str(s) for s in sources], tmp_path / "basis", BuildSettings(k=2, holdout=2))
    assert str(caught.value).startswith("holdout 2 leaves fewer than 2 of 3 sources")
    assert "--" not in str(caught.value)
    assert caught.value.options == ("holdout",)
    assert message(caught.value).startswith("--holdout 2 leaves fewer than 2 of 3 sources")
    result = run("build", *sources, "--out", tmp_path / "basis", "--k", 2, "--holdout", 2, ok=False)
    assert result.exit_code == 1
    assert "Error: --holdout 2 leaves fewer than 2 of 3 sources" in result.output
    assert "{option:" not in result.output


def test_hints_are_worded_alike():
    error = PickleRefusedError("only pickle files", source="model.bin")
    assert "pass allow_pickle" in error.render(with_hint=True)
    assert (
        message(error)
        == "model.bin: only pickle files (hint: pickle files can run code when loaded; convert them to safetensors or "
        "pass --allow-pickle)"
    )


def test_a_message_without_parameters_is_left_as_it_is():
    error = EngineError(f"nothing to name here; a literal {{brace}} and {option('k')}")
    assert str(error) == "nothing to name here; a literal {brace} and k"
    assert message(error) == "nothing to name here; a literal {brace} and --k"
