"""No bad input gets through: one line, exit 1, output folder and registry untouched."""

from __future__ import annotations

import errno
import json
import struct

import pytest
import torch
from clitools import SHAPES, refused, run, write_checkpoints
from safetensors.torch import save_file


@pytest.fixture
def zoo(tmp_path):
    return write_checkpoints(tmp_path / "zoo", 4, SHAPES)


def test_truncated_source(tmp_path, zoo):
    path = zoo[1] / "model.safetensors"
    path.write_bytes(path.read_bytes()[:-7])
    refused(
        ["build", *zoo, "--out", tmp_path / "out"],
        f"{path}: not a readable safetensors file: truncated, padded or corrupt (Error while deserializing header: "
        "incomplete metadata",
        tmp_path / "out",
    )


def test_corrupt_header_json(tmp_path, zoo):
    path = zoo[0] / "model.safetensors"
    data = bytearray(path.read_bytes())
    data[10:14] = b"\xff\xfe{{"
    path.write_bytes(bytes(data))
    refused(["build", *zoo, "--out", tmp_path / "out"], f"{path}: not a readable safetensors file", tmp_path / "out")


def test_header_that_lies_about_sizes(tmp_path, zoo):
    path = zoo[2] / "model.safetensors"
    raw = path.read_bytes()
    (length,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + length])
    header["layers.0.w"]["shape"] = [16, 13]  # claims more elements than its byte span holds
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    path.write_bytes(struct.pack("<Q", len(text)) + text + raw[8 + length :])
    refused(["build", *zoo, "--out", tmp_path / "out"], f"{path}: not a readable safetensors file", tmp_path / "out")


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite_source_is_refused_unless_allowed(tmp_path, zoo, value):
    tensors = {"layers.0.w": torch.randn(16, 12), "layers.1.w": torch.randn(12, 16), "norm.weight": torch.randn(16)}
    tensors["layers.1.w"][3, 3] = value
    save_file(tensors, zoo[3] / "model.safetensors")
    refused(
        ["build", *zoo, "--out", tmp_path / "out"], f"{zoo[3]}: tensor layers.1.w holds NaN or Inf", tmp_path / "out"
    )
    allowed = run("build", *zoo, "--out", tmp_path / "out", "--allow-nonfinite", "--k", "1", "--no-register")
    assert allowed.exit_code == 0


def test_source_of_another_architecture(tmp_path, zoo):
    other = write_checkpoints(tmp_path / "other", 1, {"encoder.x": (8, 8), "encoder.y": (8, 8), "head": (2, 8)})[0]
    refused(
        ["build", *zoo, other, "--out", tmp_path / "out"],
        f"{other}: shares only 0 of 6 tensor names with {zoo[0]}: a different architecture?",
        tmp_path / "out",
    )


def test_duplicate_sources(tmp_path, zoo):
    copy = tmp_path / "copy"
    copy.mkdir()
    (copy / "model.safetensors").write_bytes((zoo[0] / "model.safetensors").read_bytes())
    refused(
        ["build", *zoo, copy, "--out", tmp_path / "out"],
        f"{copy}: has the same bytes (sha256) as {zoo[0]}: duplicate source",
        tmp_path / "out",
    )


def test_one_source_and_zero_sources(tmp_path, zoo):
    refused(["build", zoo[0], "--out", tmp_path / "out"], "a basis needs at least 2 sources, got 1", tmp_path / "out")
    empty = run("build", "--out", tmp_path / "out", ok=False)
    assert empty.exit_code == 2 and "Missing argument 'SOURCES...'" in empty.output


def test_rank_larger_than_the_data_allows(tmp_path, zoo):
    refused(
        ["build", *zoo, "--out", tmp_path / "out", "--modes", "1", "--k", "9"],
        "--k 9 is more than the data can have: with 4 sources no layer has more than 3 directions",
        tmp_path / "out",
    )


def test_empty_layer_selection(tmp_path, zoo):
    refused(
        ["build", *zoo, "--out", tmp_path / "out", "--include", "nothing.*"],
        "the layer selection is empty",
        tmp_path / "out",
    )


def test_repo_ids_and_names_with_path_tricks(tmp_path, zoo):
    refused(["pull", "../etc/passwd"], "../etc/passwd: not a Hub repo id")
    refused(["pull", "org/..@main"], "not a Hub repo id")
    refused(["build", *zoo, "--out", tmp_path / "out", "--name", "../escape"], "manifest field name", tmp_path / "out")


def test_tensor_names_with_path_separators_are_refused(tmp_path, zoo):
    for folder in zoo:
        tensors = {"layers.0.w": torch.randn(16, 12), "layers.1.w": torch.randn(12, 16), "../evil": torch.randn(3)}
        save_file(tensors, folder / "model.safetensors")
    run("build", *zoo[:3], "--out", tmp_path / "basis", "--k", "1")
    refused(
        ["project", zoo[3], "--basis", tmp_path / "basis", "--out", tmp_path / "task"],
        "manifest field passthrough/0/name",
        tmp_path / "task",
    )


def test_manifest_with_extra_or_missing_fields(tmp_path, zoo):
    run("build", *zoo, "--out", tmp_path / "basis", "--k", "1", "--no-register")
    manifest_path = tmp_path / "basis" / "unisub_basis.json"
    manifest = json.loads(manifest_path.read_text())
    manifest_path.write_text(json.dumps({**manifest, "unexpected": True}))
    refused(
        ["project", zoo[0], "--basis", tmp_path / "basis", "--out", tmp_path / "task"],
        "Additional properties are not allowed ('unexpected' was unexpected)",
        tmp_path / "task",
    )
    del manifest["sources"]
    manifest_path.write_text(json.dumps(manifest))
    refused(["info", tmp_path / "basis"], "'sources' is a required property")


def test_basis_with_newer_major_version(tmp_path, zoo):
    run("build", *zoo, "--out", tmp_path / "basis", "--k", "1", "--no-register")
    manifest_path = tmp_path / "basis" / "unisub_basis.json"
    manifest_path.write_text(json.dumps({**json.loads(manifest_path.read_text()), "format_version": "2.1.0"}))
    refused(
        ["project", zoo[0], "--basis", tmp_path / "basis", "--out", tmp_path / "task"],
        "major version 2; this unisub-hub reads major version 1 only (upgrade unisub-hub to read it)",
        tmp_path / "task",
    )


@pytest.mark.parametrize(
    ("code", "text"), [(errno.ENOSPC, "No space left on device"), (errno.EACCES, "Permission denied")]
)
def test_disk_full_or_permission_denied_leaves_nothing(tmp_path, zoo, monkeypatch, code, text):
    import unisub_hub.format.tensorfile as tensorfile

    def failing_write(path, *args, **kwargs):
        raise OSError(code, text, str(path))

    monkeypatch.setattr(tensorfile, "write_tensor_file", failing_write)
    monkeypatch.setattr("unisub_hub.format.shards.write_tensor_file", failing_write)
    line = refused(["build", *zoo, "--out", tmp_path / "out", "--k", "1"], text, tmp_path / "out")
    assert ".basis-part1.safetensors" in line


def test_debug_flag_shows_the_traceback(tmp_path, zoo):
    """As a user sees it: a real process, one line without --debug, the whole traceback with it."""
    import os
    import subprocess
    import sys

    command = [sys.executable, "-m", "unisub_hub", "build", str(zoo[0]), "--out", str(tmp_path / "out")]
    plain = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "UNISUB_DEBUG": ""})
    assert plain.returncode == 1 and "Traceback" not in plain.stderr
    assert plain.stderr.strip().splitlines() == ["Error: a basis needs at least 2 sources, got 1"]
    debug = subprocess.run([*command[:3], "--debug", *command[3:]], capture_output=True, text=True)
    assert debug.returncode == 1 and debug.stderr.strip().startswith("Traceback (most recent call last):")
    assert (
        debug.stderr.strip().splitlines()[-1]
        == "unisub_hub.errors.EngineError: a basis needs at least 2 sources, got 1"
    )


def test_a_source_given_twice_is_refused(tmp_path, zoo):
    refused(
        ["build", zoo[0], zoo[1], zoo[0], "--out", tmp_path / "out"],
        f"{zoo[0]}: is given twice in the collection",
        tmp_path / "out",
    )


def test_a_basis_name_is_not_reused_for_another_architecture(tmp_path, zoo):
    other = write_checkpoints(tmp_path / "other", 3, {"layers.0.w": (8, 12), "layers.1.w": (12, 8)})
    run("build", *zoo[:3], "--out", tmp_path / "a" / "basis", "--k", "1")
    run("build", *zoo[1:4], "--out", tmp_path / "b" / "basis", "--k", "2")  # same layers: version 2 of "basis"
    line = refused(
        ["build", *other, "--out", tmp_path / "c" / "basis", "--k", "1"],
        "basis name 'basis' is taken by basis:",
        tmp_path / "c" / "basis",
    )
    assert "give this one its own name (the build's --name)" in line


def test_materialize_refuses_a_base_model_of_another_architecture(tmp_path, zoo):
    other = write_checkpoints(
        tmp_path / "other", 1, {"layers.0.w": (16, 10), "layers.1.w": (10, 16), "norm.weight": (16,)}
    )[0]
    run("build", *zoo[:3], "--out", tmp_path / "basis", "--k", "1")
    run("project", zoo[3], "--basis", tmp_path / "basis", "--out", tmp_path / "task")
    out = tmp_path / "model"
    refused(
        ["materialize", tmp_path / "task", "--basis", tmp_path / "basis", "--base", other, "--out", out],
        f"{other}: tensor layers.0.w is 16x10, the basis layer is 16x12",
        out,
    )


def test_an_empty_selection_file_is_refused_not_read_as_everything(tmp_path, zoo):
    empty = tmp_path / "keep.txt"
    empty.write_text("# analyze kept nothing\n")
    result = run("build", *zoo, "--out", tmp_path / "out", "--include-from", empty, ok=False)
    assert result.exit_code == 2 and "names no layer" in result.output and not (tmp_path / "out").exists()


@pytest.mark.parametrize("flag", ["--max-memory", "--shard-size"])
def test_an_infinite_size_is_a_usage_error_not_a_traceback(tmp_path, zoo, flag):
    result = run("build", *zoo, "--out", tmp_path / "out", flag, "1e400", ok=False)
    assert result.exit_code == 2 and "is not a size in bytes" in result.output and "Traceback" not in result.output


def test_a_name_that_looks_like_a_content_id_resolves_by_name(tmp_path, zoo):
    run("build", *zoo[:3], "--out", tmp_path / "cafe01", "--k", "1")
    shown = json.loads(run("registry", "show", "cafe01", "--json").stdout)
    assert shown["name"] == "cafe01" and shown["version"] == 1


def test_an_integer_past_pythons_digit_limit_is_invalid_json_not_a_traceback(tmp_path, zoo):
    run("build", *zoo, "--out", tmp_path / "basis", "--k", "1", "--no-register")
    manifest_path = tmp_path / "basis" / "unisub_basis.json"
    manifest_path.write_text(
        manifest_path.read_text().replace('"format_version"', '"huge": ' + "9" * 5000 + ', "format_version"', 1)
    )
    refused(
        ["info", tmp_path / "basis"], f"{manifest_path}: manifest is not valid JSON (Exceeds the limit (4300 digits)"
    )
    config = zoo[0] / "config.json"
    for text in (
        '{"architectures": {"a": 1}}',
        '{"architectures": 5, "model_type": "bert"}',
        '{"n": ' + "1" * 5000 + "}",
    ):
        config.write_text(text)
        assert run("build", *zoo, "--out", tmp_path / "again", "--k", "1", "--no-register").exit_code == 0
        (tmp_path / "again").rename(tmp_path / f"again-{len(text)}")


@pytest.mark.parametrize("command", ["build", "project", "materialize", "rebase", "train", "push", "registry show"])
def test_an_argument_that_is_not_utf8_is_refused_before_any_work(tmp_path, zoo, command):
    bad = str(tmp_path / "out\udcff")  # how Python hands over the shell's byte 0xff
    result = (
        run(*command.split(), "x", "--out", bad, ok=False) if command != "push" else run("push", bad, "me/x", ok=False)
    )
    assert (
        result.exit_code == 2
        and "is not valid UTF-8; names and paths are recorded as text" in result.output
        and "out\\\\xff" in result.output
    )
    assert list(tmp_path.iterdir()) == [tmp_path / "zoo"]


def test_hf_without_base_refuses_an_old_set_that_cannot_carry_a_config_and_lora_sets_name_the_format(tmp_path, zoo):
    run("build", *zoo[:3], "--out", tmp_path / "basis", "--k", "1", "--no-register")
    run("project", zoo[3], "--basis", tmp_path / "basis", "--out", tmp_path / "task", "--no-register")
    manifest_path = tmp_path / "task" / "unisub_coefficients.json"
    manifest = json.loads(manifest_path.read_text())
    assert (
        run("materialize", tmp_path / "task", "--basis", tmp_path / "basis", "--out", tmp_path / "new").exit_code == 0
    )  # its source had no config either
    manifest_path.write_text(json.dumps({**manifest, "format_version": "1.0.0"}))
    refused(
        ["materialize", tmp_path / "task", "--basis", tmp_path / "basis", "--out", tmp_path / "old"],
        "--format hf without --base: this set was written before format 1.1 and carries no model config",
        tmp_path / "old",
    )
