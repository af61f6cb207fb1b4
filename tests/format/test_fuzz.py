"""Property-based: random mutations of valid manifests and safetensors headers never escape
the error catalogue, and the CLI never shows a traceback."""

from __future__ import annotations

import json
import shutil
import struct
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from conftest import planted_collection
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from unisub_hub.cli import cli
from unisub_hub.engine import BuildOptions, LayerSpec, RankRule, build_basis
from unisub_hub.errors import UnisubError
from unisub_hub.format import (
    load_basis,
    load_coefficients,
    save_basis,
    save_coefficients,
)
from unisub_hub.pipeline.validate import validate

SHAPES = {"a.weight": (6, 5), "b.weight": (5, 4)}
CASES = 1000

pytestmark = pytest.mark.slow  # 1000-example batteries

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-3, 10**6) | st.floats(allow_nan=False) | st.text(max_size=12),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3),
    max_leaves=6,
)


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    root = tmp_path_factory.mktemp("fuzz")
    sources = planted_collection(4, SHAPES)
    result = build_basis(
        [LayerSpec(n, s) for n, s in SHAPES.items()],
        sources,
        options=BuildOptions(rank=RankRule(k=2), null_baseline=False),
    )
    basis = save_basis(
        root / "basis",
        result.layers,
        name="fz",
        architecture_name="a",
        source_kind="checkpoint",
        sources=[{"id": f"s{i}"} for i in range(4)],
        quality=result.report.summary(),
    )
    import torch

    save_coefficients(
        root / "task",
        {n: torch.ones(basis.layer(n).coefficient_shape()) for n in SHAPES},
        {"bias": torch.ones(3)},
        name="t",
        basis_manifest=basis.manifest,
    )
    return root


def paths_of(value, prefix=()):
    yield prefix
    if isinstance(value, dict):
        for key, child in value.items():
            yield from paths_of(child, (*prefix, key))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            yield from paths_of(child, (*prefix, index))


def mutate(document, data) -> object:
    """Delete, replace or add at a random place of a JSON document."""
    paths = list(paths_of(document))
    path = data.draw(st.sampled_from(paths))
    action = data.draw(st.sampled_from(["replace", "delete", "add"]))
    if not path:
        return data.draw(json_values)
    parent = document
    for key in path[:-1]:
        parent = parent[key]
    last = path[-1]
    if action == "replace":
        parent[last] = data.draw(json_values)
    elif action == "delete":
        del parent[last]
    elif isinstance(parent, dict):
        parent[data.draw(st.text(max_size=8))] = data.draw(json_values)
    else:
        parent.insert(last, data.draw(json_values))
    return document


def read_everything(folder: Path, kind: str) -> UnisubError | None:
    """What a user's commands do with an artifact: open it, load every layer, validate it.

    Returns the loader's error, if any, after checking the three things a user relies on: the
    error names the artifact's folder, a folder the loader refuses never validates clean, and
    a clean validation means every layer loads.
    """
    refused: UnisubError | None = None
    try:
        if kind == "basis":
            basis = load_basis(folder, verify=True)
            for name in basis.layer_names:
                basis.layer(name)
        else:
            coefficients = load_coefficients(folder, verify=True)
            for name in coefficients.layer_names:
                coefficients.coefficient(name)
            for name in coefficients.passthrough_names:
                coefficients.passthrough(name)
    except UnisubError as error:
        refused = error
        assert str(folder) in str(error), f"the error does not name the artifact: {error}"
    report = validate(folder, deep=True, against=None)
    if refused is not None:
        assert not report.ok, f"the loader refused ({refused}) what validate passed"
    return refused


def fresh_copy(pristine: Path, name: str, work: Path) -> Path:
    target = work / name
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(pristine / name, target)
    return target


@pytest.mark.parametrize("kind,manifest", [("basis", "unisub_basis.json"), ("task", "unisub_coefficients.json")])
@settings(max_examples=CASES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_mutated_manifests_only_raise_catalogue_errors(pristine, tmp_path, kind, manifest, data):
    folder = fresh_copy(pristine, kind, tmp_path)
    original = json.loads((folder / manifest).read_text())
    document = mutate(json.loads(json.dumps(original)), data)
    (folder / manifest).write_text(json.dumps(document))
    refused = read_everything(folder, kind)
    if json.dumps(document, sort_keys=True) == json.dumps(original, sort_keys=True):  # (True == 1 in Python)
        assert refused is None, f"an unchanged manifest was refused: {refused}"


@settings(max_examples=CASES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_mutated_safetensors_headers_only_raise_catalogue_errors(pristine, tmp_path, data):
    folder = fresh_copy(pristine, "basis", tmp_path)
    path = folder / "basis.safetensors"
    raw = path.read_bytes()
    (length,) = struct.unpack("<Q", raw[:8])
    if data.draw(st.booleans()):
        header = mutate(json.loads(raw[8 : 8 + length]), data)
        text = json.dumps(header).encode()
        text += b" " * data.draw(st.integers(0, 9))
        body = raw[8 + length :]
        cut = data.draw(st.integers(0, len(body)))
        path.write_bytes(
            struct.pack("<Q", data.draw(st.sampled_from([len(text), len(text) + 3, 2**40]))) + text + body[:cut]
            if data.draw(st.booleans())
            else struct.pack("<Q", len(text)) + text + body
        )
    else:
        blob = bytearray(raw)
        for _ in range(data.draw(st.integers(1, 8))):
            blob[data.draw(st.integers(0, min(len(blob) - 1, 8 + length)))] = data.draw(st.integers(0, 255))
        path.write_bytes(bytes(blob))
    refused = read_everything(folder, "basis")
    if path.read_bytes() != raw:  # the content id covers every byte of the tensor file
        assert refused is not None, "a changed tensor file loaded as if it were the original"


@settings(max_examples=CASES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_cli_never_shows_a_traceback(pristine, tmp_path, data):
    kind = data.draw(st.sampled_from(["basis", "task"]))
    folder = fresh_copy(pristine, kind, tmp_path)
    manifest = folder / ("unisub_basis.json" if kind == "basis" else "unisub_coefficients.json")
    tensors_changed = not data.draw(st.booleans())
    if not tensors_changed:
        manifest.write_text(json.dumps(mutate(json.loads(manifest.read_text()), data)))
    else:
        tensors = folder / ("basis.safetensors" if kind == "basis" else "coefficients.safetensors")
        blob = bytearray(tensors.read_bytes())
        blob[data.draw(st.integers(0, len(blob) - 1))] ^= data.draw(st.integers(1, 255))
        tensors.write_bytes(bytes(blob))
    command = data.draw(
        st.sampled_from(
            [["info", "--verify"], ["validate", "--deep"], ["validate", "--against", str(pristine / "basis")]]
        )
    )
    result = CliRunner().invoke(cli, [command[0], str(folder), *command[1:]])
    assert result.exit_code in (0, 1), result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output
    # The command's verdict is the library's: a changed tensor byte always fails (content id), and
    # validate exits 0 exactly when its report is clean.
    if tensors_changed:
        assert result.exit_code == 1, result.output
    if command[0] == "validate":
        against = command[2] if command[1] == "--against" else None
        assert (result.exit_code == 0) == validate(folder, deep=command[1] == "--deep", against=against).ok


@pytest.fixture(scope="module")
def with_state(tmp_path_factory):
    from clitools import SHAPES as CLI_SHAPES
    from clitools import run, write_checkpoints

    root = tmp_path_factory.mktemp("fuzz-state")
    zoo = write_checkpoints(root / "zoo", 4, CLI_SHAPES)
    run("build", *zoo, "--out", root / "basis", "--k", "2", "--keep-state", "--no-register")
    return root / "basis"


@settings(max_examples=CASES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_a_mutated_growth_state_is_refused_or_reads_exactly_as_written(with_state, tmp_path, data):
    """Whatever changes in the state's manifest, growing reads either the numbers that were
    written or nothing: a catalogue error naming the state (1,000 generated mutations)."""
    from unisub_hub.format.state import STATE_FOLDER, load_state

    basis_id = load_basis(with_state).content_id
    original = load_state(with_state, basis_id)
    folder = fresh_copy(with_state.parent, with_state.name, tmp_path)
    manifest = folder / STATE_FOLDER / "unisub_state.json"
    manifest.write_text(json.dumps(mutate(json.loads(manifest.read_text()), data)))
    try:
        states = load_state(folder, basis_id)
    except UnisubError as error:
        assert str(folder) in str(error), f"the error does not name the state: {error}"
        return
    assert states.keys() == original.keys()
    for name, state in states.items():
        assert (state.count, state.total) == (original[name].count, original[name].total)
        assert state.sides.keys() == original[name].sides.keys()
        for mode, side in state.sides.items():
            assert torch.equal(side.sums, original[name].sides[mode].sums)
            assert (side.test is None) == (original[name].sides[mode].test is None)
