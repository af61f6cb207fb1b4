"""Growing a basis by new members equals rebuilding it from all of them, without reading the old ones."""

from __future__ import annotations

import json

import pytest
import torch
from clitools import SHAPES, refused, run, write_checkpoints
from conftest import max_principal_angle, planted_collection, random_loras
from safetensors.torch import load_file, save_file

from unisub_hub.engine import BuildOptions, LayerSpec, RankRule, build_basis
from unisub_hub.engine.grow import grow_layers, layer_states
from unisub_hub.engine.reader import SourceReader
from unisub_hub.format import load_basis


def test_a_chain_of_growths_equals_the_rebuild_through_the_command_line(tmp_path):
    zoo = write_checkpoints(tmp_path / "zoo", 12, SHAPES)
    run("build", *zoo[:8], "--out", tmp_path / "b1", "--k", "3", "--keep-state", "--name", "grown")
    run("build", *zoo[8:10], "--update", "grown", "--out", tmp_path / "b2")
    outcome = json.loads(
        run("build", *zoo[10:], "--update", tmp_path / "b2", "--out", tmp_path / "b3", "--json").stdout
    )
    run("build", *zoo, "--out", tmp_path / "rebuilt", "--k", "3", "--no-register")
    grown, rebuilt = load_basis(tmp_path / "b3"), load_basis(tmp_path / "rebuilt")
    for name in rebuilt.layer_names:
        ours, theirs = grown.layer(name, dtype=torch.float64), rebuilt.layer(name, dtype=torch.float64)
        assert (
            max_principal_angle(ours.left, theirs.left) < 1e-5 and max_principal_angle(ours.right, theirs.right) < 1e-5
        )
        torch.testing.assert_close(ours.mean, theirs.mean, atol=1e-6, rtol=1e-6)
        for mode in (2, 3):  # the same spectrum, so the same explained variance
            torch.testing.assert_close(ours.spectra[mode][:3], theirs.spectra[mode][:3], atol=1e-5, rtol=1e-5)
    manifest = grown.manifest
    assert manifest["grown_from"]["added"] == [str(p) for p in zoo[10:]] and len(manifest["sources"]) == 12
    assert (outcome["registered"]["name"], outcome["registered"]["version"]) == (
        "grown",
        3,
    )  # the name's next version: tasks on grown:1 are now stale
    assert "state_bytes" in outcome["sizes"] and (tmp_path / "b3" / "state" / "state.safetensors").is_file()


@pytest.mark.parametrize("kind", ["checkpoint", "lora"])
@pytest.mark.parametrize("max_gram_side", [4096, 32])
def test_growing_in_the_engine_equals_the_rebuild_with_grams_and_with_sketches(kind, max_gram_side):
    shapes = {"a.weight": (160, 96), "b.weight": (96, 200)}
    sources = (
        planted_collection(14, shapes, noise=0.01) if kind == "checkpoint" else random_loras(14, shapes, ranks=[2, 4])
    )
    specs = [LayerSpec(name, shape) for name, shape in shapes.items()]
    options = BuildOptions(rank=RankRule(k=3), null_baseline=False, solver="exact", center=kind == "checkpoint")
    first = build_basis(specs, sources[:10], options=options)
    reader = SourceReader(torch.device("cpu"), torch.float64, check_finite=True)
    states = layer_states(first.layers, specs, sources[:10], k=3, reader=reader, max_gram_side=max_gram_side)
    assert {side.kind for state in states.values() for side in state.sides.values()} == (
        {"gram"} if max_gram_side == 4096 else {"sketch"}
    )
    grown = grow_layers(first.layers, states, specs, sources[10:], rank=RankRule(k=3), reader=reader)
    rebuilt = build_basis(specs, sources, options=options)
    # LoRA's right factors (A) are random in this collection: no planted side to compare there
    sides = ("left", "right") if kind == "checkpoint" else ("left",)
    tolerance = 1e-10 if max_gram_side == 4096 else 1e-5  # a sketch holds the top of the spectrum
    for name in shapes:
        for side in sides:
            assert max_principal_angle(getattr(grown[name], side), getattr(rebuilt.layers[name], side)) < tolerance
        assert grown[name].ranks == rebuilt.layers[name].ranks


@pytest.fixture
def grown_parent(tmp_path):
    zoo = write_checkpoints(tmp_path / "zoo", 6, SHAPES)
    run("build", *zoo[:4], "--out", tmp_path / "parent", "--k", "2", "--keep-state", "--no-register")
    return zoo, tmp_path / "parent"


def test_growth_refuses_what_would_be_wrong(tmp_path, grown_parent):
    zoo, parent = grown_parent
    out = tmp_path / "child"
    refused(
        ["build", zoo[1], "--update", parent, "--out", out],
        f"{zoo[1]}: is already a member of parent (same bytes as {zoo[1]}): it would count twice",
        out,
    )
    other = write_checkpoints(
        tmp_path / "other", 1, {"layers.0.w": (16, 10), "layers.1.w": (12, 16), "norm.weight": (16,)}
    )[0]
    refused(
        ["build", other, "--update", parent, "--out", out],
        f"{other}: layer layers.0.w is 16x10, the basis has 16x12",
        out,
    )
    usage = run("build", zoo[4], "--update", parent, "--out", out, "--modes", "2", ok=False)
    assert usage.exit_code == 2 and "--modes: with --update the parent basis decides these" in usage.output
    run("build", *zoo[:3], "--out", tmp_path / "plain", "--k", "2", "--no-register")
    refused(
        ["build", zoo[4], "--update", tmp_path / "plain", "--out", out],
        "this basis has no growth state (build it with --keep-state",
        out,
    )
    state = parent / "state" / "state.safetensors"
    data = bytearray(state.read_bytes())
    data[-3] ^= 0xFF
    state.write_bytes(bytes(data))
    refused(
        ["build", zoo[4], "--update", parent, "--out", out],
        "the state's tensors are missing or changed since they were written",
        out,
    )


@pytest.mark.parametrize("version", ["0.1.0", "a hand-edited version"])
def test_a_sharded_member_recorded_by_an_older_version_is_still_known_when_it_comes_again(tmp_path, version):
    from unisub_hub.format.tensorfile import sha256_files
    from unisub_hub.io.checkpoint import CheckpointSource

    zoo = write_checkpoints(tmp_path / "zoo", 4, SHAPES)
    sharded = tmp_path / "zoo" / "sharded"
    sharded.mkdir()
    tensors = load_file(zoo[0] / "model.safetensors")
    shards = {
        f"model-0000{i}-of-00003.safetensors": {name: tensors[name]} for i, name in enumerate(sorted(tensors), start=1)
    }
    for file_name, part in shards.items():
        save_file(part, sharded / file_name)
    (sharded / "model.safetensors.index.json").write_text(
        json.dumps({"weight_map": {n: f for f, part in shards.items() for n in part}})
    )
    run("build", sharded, *zoo[1:], "--out", tmp_path / "parent", "--k", "2", "--keep-state", "--no-register")
    manifest_path = tmp_path / "parent" / "unisub_basis.json"
    manifest = json.loads(manifest_path.read_text())
    assert (
        manifest["sources"][0]["sha256"]
        == CheckpointSource(sharded).sha256
        != sha256_files(sorted(sharded.glob("*.safetensors")))
    )
    manifest["producer"]["version"] = version  # as 0.1 recorded it: the hash of the shards' bytes end to end
    manifest["sources"][0]["sha256"] = sha256_files(sorted(sharded.glob("*.safetensors")))
    manifest_path.write_text(json.dumps(manifest))
    out = tmp_path / "child"
    refused(
        ["build", sharded, "--update", tmp_path / "parent", "--out", out],
        f"{sharded}: is already a member of parent (same bytes as {sharded})",
        out,
    )


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--modes", "1"], "--keep-state needs --modes 2, 3 or 2,3"),
        (["--dtype", "bfloat16"], "--keep-state needs --dtype float32"),
        (["--variance", "0.9"], "--keep-state needs a fixed --k"),
    ],
)
def test_keep_state_refuses_settings_it_cannot_grow(tmp_path, flags, message):
    zoo = write_checkpoints(tmp_path / "zoo", 4, SHAPES)
    refused(["build", *zoo, "--out", tmp_path / "basis", "--keep-state", *flags], message, tmp_path / "basis")


def test_a_held_out_source_may_join_and_is_then_listed_once_as_a_member(tmp_path):
    zoo = write_checkpoints(tmp_path / "zoo", 5, SHAPES)
    run("build", *zoo, "--out", tmp_path / "parent", "--k", "2", "--holdout", "1", "--keep-state", "--no-register")
    run("build", zoo[4], "--update", tmp_path / "parent", "--out", tmp_path / "child", "--no-register")
    sources = load_basis(tmp_path / "child").manifest["sources"]
    assert [(s["id"], s["role"]) for s in sources] == [(str(p), "train") for p in zoo]


def _edit_state(parent, change) -> None:
    path = parent / "state" / "unisub_state.json"
    manifest = json.loads(path.read_text())
    change(manifest)
    path.write_text(json.dumps(manifest))


def _first(manifest):
    return next(iter(manifest["layers"].values()))


@pytest.mark.parametrize(
    "change, message",
    [  # numbers that would grow a wrong basis (the mean 86 % off with count 1000), refused by the checksum
        (
            lambda m: _first(m).update(count=1000),
            "the state's numbers (member counts, totals, sides or layers) changed",
        ),
        (lambda m: _first(m).update(total=_first(m)["total"] * 2), "the state's numbers"),
        (lambda m: m["layers"].pop(next(iter(m["layers"]))), "the state's numbers"),
        (lambda m: m.pop("numbers_sha256"), "written before its numbers were checksummed"),
        # malformed ones, one line each (they were tracebacks)
        (lambda m: _first(m).update(count="abc"), "count 'abc' is not a positive whole number"),
        (lambda m: _first(m).update(count=0), "count 0 is not a positive whole number"),
        (lambda m: _first(m).update(count=-3), "count -3 is not a positive whole number"),
        (lambda m: _first(m).update(total="x"), "total 'x' is not a finite variance"),
        (lambda m: _first(m).update(total=float("nan")), "total nan is not a finite variance"),
        (lambda m: _first(m).pop("sides"), "no sides"),
        (lambda m: _first(m)["sides"].update({"9": {"kind": "gram"}}), "side '9' is not a mode 2 or 3"),
        (lambda m: _first(m).update(sides=[1]), "no sides"),
        (lambda m: m.update(layers={"x": 1}), "layer x: not an object"),
    ],
)
def test_an_altered_or_malformed_growth_state_is_refused_in_one_line(tmp_path, grown_parent, change, message):
    zoo, parent = grown_parent
    _edit_state(parent, change)
    out = tmp_path / "child"
    refused(["build", zoo[4], "--update", parent, "--out", out], message, out)


def test_a_state_consistent_with_itself_but_missing_a_layer_of_the_basis_is_refused(tmp_path, grown_parent):
    """Someone who also recomputes the checksum cannot drop a layer: the basis decides the layers."""
    from unisub_hub.format.state import _numbers_digest

    zoo, parent = grown_parent

    def drop(manifest):
        manifest["layers"].pop(next(iter(manifest["layers"])))
        manifest["numbers_sha256"] = _numbers_digest(manifest["layers"])

    _edit_state(parent, drop)
    out = tmp_path / "child"
    refused(
        ["build", zoo[4], "--update", parent, "--out", out], "the growth state's layers do not match the basis", out
    )
