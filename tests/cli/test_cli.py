"""The command line: JSON output parsed back, exact error lines and exit codes, help texts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from clitools import SHAPES, run, write_checkpoints
from safetensors.torch import load_file, save_file

from unisub_hub.cli import cli


def test_build_project_materialize_info_json_round_trip(tmp_path):
    paths = write_checkpoints(tmp_path / "zoo", 6, SHAPES)
    built = json.loads(
        run(
            "build", *paths[:5], "--out", tmp_path / "basis", "--k", "3", "--holdout", "1", "--device", "cpu", "--json"
        ).stdout
    )
    assert built["layers"] == ["layers.0.w", "layers.1.w"]
    assert built["passthrough"] == {"norm.weight": "1-D tensor"}
    assert built["content_id"].startswith("sha256:")
    fits = built["report"]["layers"][0]["fits"]
    assert [name for name, fit in fits.items() if fit["holdout"]] == [str(paths[4])]
    projected = json.loads(
        run("project", paths[5], "--basis", tmp_path / "basis", "--out", tmp_path / "task", "--json").stdout
    )
    assert projected["basis"] == built["content_id"]
    assert set(projected["errors"]) == {"layers.0.w", "layers.1.w"}
    assert projected["sizes"]["passthrough_bytes"] == 16 * 4
    assert projected["compression_ratio"] == pytest.approx(
        projected["sizes"]["source_bytes"] / projected["sizes"]["coefficients_bytes"]
    )
    made = json.loads(
        run(
            "materialize", tmp_path / "task", "--basis", tmp_path / "basis", "--out", tmp_path / "model", "--json"
        ).stdout
    )
    assert made == {"path": str(tmp_path / "model"), "format": "hf", "files": ["model.safetensors"]}
    info = json.loads(run("info", tmp_path / "task", "--verify", "--json").stdout)
    assert info["kind"] == "unisub-hub/coefficients" and info["verified"] is True
    assert info["manifest"]["basis"]["content_id"] == built["content_id"]
    human = run("info", tmp_path / "basis").output
    assert "layers.0.w" in human and "4 training sources, 1 held out" in human


def test_build_prints_table_and_passthrough_reasons(tmp_path):
    paths = write_checkpoints(tmp_path / "a", 3, SHAPES)
    odd = write_checkpoints(tmp_path / "b", 1, {**SHAPES, "layers.1.w": (12, 8)}, seed=5)
    out = run("build", *paths, *odd, "--out", tmp_path / "basis", "--k", "2").output
    assert "Layers" in out and "layers.0." in out and "16x12" in out
    assert "Passthrough: 1 tensor(s): 1-D tensor; 1 tensor(s): shape differs across sources: 12x8, 12x16" in out
    assert "written to" in out


def test_pickle_sources_are_refused_with_one_line(tmp_path):
    paths = write_checkpoints(tmp_path / "zoo", 2, SHAPES)
    evil = tmp_path / "zoo" / "pickled"
    evil.mkdir()
    torch.save({n: torch.randn(s) for n, s in SHAPES.items()}, evil / "pytorch_model.bin")
    result = run("build", *paths, evil, "--out", tmp_path / "basis", ok=False)
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == [
        f"Error: {evil}: pytorch_model.bin is a pickle file; refusing to load it "
        "(hint: pickle files can run code when loaded; convert them to safetensors or pass --allow-pickle)"
    ]
    assert not (tmp_path / "basis").exists()
    allowed = run("build", *paths, evil, "--out", tmp_path / "basis", "--k", "1", "--allow-pickle", "--json")
    assert json.loads(allowed.stdout)["layers"] == ["layers.0.w", "layers.1.w"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["build", "missing-a", "missing-b", "--out", "x"],
            "Error: missing-a: no such file or folder (nor a Hub repo id org/name[@revision])",
        ),
        (
            ["info", "nowhere"],
            "Error: nowhere: no such folder, no registered artifact of that name (see `unisub-hub registry list`), "
            "and not a Hub repo id org/name[@revision]",
        ),
        (["build", "a", "--out", "x", "--k", "2", "--variance", "0.9"], "Error: give --k or --variance, not both"),
    ],
)
def test_errors_are_one_line_with_exit_code(tmp_path, args, message, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = run(*args, ok=False)
    assert result.exit_code in (1, 2)
    assert message in result.output
    assert "Traceback" not in result.output


def test_existing_output_folder_is_refused_and_kept(tmp_path):
    paths = write_checkpoints(tmp_path / "zoo", 3, SHAPES)
    (tmp_path / "basis").mkdir()
    (tmp_path / "basis" / "mine.txt").write_text("keep")
    result = run("build", *paths, "--out", tmp_path / "basis", ok=False)
    assert result.exit_code == 1
    assert (
        result.output.strip()
        == f"Error: {tmp_path / 'basis'}: output folder already exists (remove it or choose another --out)"
    )
    assert (tmp_path / "basis" / "mine.txt").read_text() == "keep"


def test_sources_from_glob_and_list_file(tmp_path):
    paths = write_checkpoints(tmp_path / "zoo", 4, SHAPES)
    listing = tmp_path / "sources.txt"
    listing.write_text("# my collection\nzoo/model-0\nzoo/model-1\n")
    from_list = json.loads(run("build", listing, "--out", tmp_path / "b1", "--k", "1", "--json").stdout)
    assert [s for s in from_list["report"]["sources"]] == [str(tmp_path / "zoo/model-0"), str(tmp_path / "zoo/model-1")]
    from_glob = json.loads(
        run("build", str(tmp_path / "zoo" / "model-*"), "--out", tmp_path / "b2", "--k", "1", "--json").stdout
    )
    assert from_glob["report"]["sources"] == [str(p) for p in paths]


def test_every_command_has_help_with_an_example():
    import click

    def walk(group, prefix=()):
        ctx = click.Context(group)
        for name in group.list_commands(ctx):  # lazily loaded commands too
            command = group.get_command(ctx, name)
            yield (*prefix, name), command
            if isinstance(command, click.Group):
                yield from walk(command, (*prefix, name))

    walked = list(walk(cli))
    assert {path[0] for path, _ in walked} >= {"build", "project", "train", "materialize", "push", "pull", "registry"}
    assert ("registry", "gc") in {path for path, _ in walked}
    for path, command in walked:
        result = run(*path, "--help")
        assert "Example:" in result.output, f"unisub-hub {' '.join(path)} --help has no example"
        assert command.help and len(command.help.splitlines()[0]) > 10


def test_real_subprocess_with_json(tmp_path):
    paths = write_checkpoints(tmp_path / "zoo", 3, SHAPES)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "unisub_hub",
            "build",
            *map(str, paths),
            "--out",
            str(tmp_path / "basis"),
            "--k",
            "2",
            "--json",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["layers"] == ["layers.0.w", "layers.1.w"]
    bad = subprocess.run(
        [sys.executable, "-m", "unisub_hub", "info", str(tmp_path / "nope")],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert bad.returncode == 1
    assert bad.stderr.strip().startswith(
        f"Error: {tmp_path / 'nope'}: no such folder, no registered artifact of that name"
    )


def test_solver_and_power_iterations_reach_the_engine(tmp_path):
    from unisub_hub.format import load_basis

    gen = torch.Generator().manual_seed(5)
    shared = torch.randn(48, 3, generator=gen)
    paths = []
    for m in range(8):  # a planted rank-3 column space under a slowly decaying noise floor
        folder = tmp_path / "zoo" / f"model-{m}"
        folder.mkdir(parents=True)
        weight = shared @ torch.randn(3, 40, generator=gen) + 0.3 * torch.randn(48, 40, generator=gen)
        save_file({"w": weight.contiguous()}, folder / "model.safetensors")
        paths.append(folder)

    def left(out: str, *options: str) -> tuple[torch.Tensor, int]:
        built = json.loads(
            run(
                "build",
                *paths,
                "--out",
                tmp_path / out,
                "--k",
                "3",
                "--no-center",
                "--device",
                "cpu",
                "--json",
                *options,
            ).stdout
        )
        return load_basis(tmp_path / out).layer("w", dtype=torch.float64).left, built["report"]["passes"]

    def angle(found: torch.Tensor, reference: torch.Tensor) -> float:
        return float(torch.linalg.matrix_norm(reference - found @ (found.T @ reference), ord=2))

    exact, exact_passes = left("exact", "--solver", "exact")
    rough, rough_passes = left("rough", "--solver", "randomized", "--power-iterations", "0")
    sharp, sharp_passes = left("sharp", "--solver", "randomized", "--power-iterations", "4")
    assert (exact_passes, rough_passes, sharp_passes) == (2, 2, 6)  # sketch passes plus the quality pass
    assert angle(sharp, exact) < 1e-5 < angle(rough, exact)
    run("build", *paths, "--out", tmp_path / "bad", "--power-iterations", "-1", ok=False)
    assert not (tmp_path / "bad").exists()


def test_the_lazy_command_table_says_what_each_command_says():
    import click

    from unisub_hub.cli import COMMANDS

    ctx = click.Context(cli)
    for name, (_, _, short) in COMMANDS.items():
        command = cli.get_command(ctx, name)
        assert command.name == name and command.get_short_help_str(limit=200) == short


@pytest.mark.parametrize(
    ("args", "absent"),
    [
        (["--help"], ["torch", "sqlmodel", "unisub_hub.cli.build"]),
        (["registry", "list", "--json"], ["torch", "transformers"]),
    ],
)
def test_start_up_imports_only_what_the_command_uses(tmp_path, args, absent):
    code = (
        "import sys\nfrom unisub_hub.cli import cli\n"
        f"try:\n    cli.main({['--home', str(tmp_path / 'home'), *args]!r}, standalone_mode=False)\nexcept "
        "SystemExit:\n    pass\n"
        f"print(sorted(m for m in {absent!r} if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip().splitlines()[-1] == "[]"


def test_build_table_headlines_the_error_of_the_update_not_of_the_weight(tmp_path, monkeypatch):
    monkeypatch.setenv("COLUMNS", "250")  # one table row per line
    paths = write_checkpoints(tmp_path / "zoo", 5, SHAPES)  # a shared base plus small per-member updates
    output = run("build", *paths, "--out", tmp_path / "basis", "--k", "1", "--holdout", "1").output
    assert "holdout err (of update)" in output
    row = next(line for line in output.splitlines() if "layers.0.w" in line)
    shown = float([cell for cell in row.replace("│", " ").split() if cell.replace(".", "", 1).isdigit()][-1])
    report = json.loads(
        run(
            "build", *paths, "--out", tmp_path / "again", "--k", "1", "--holdout", "1", "--no-register", "--json"
        ).stdout
    )["report"]
    held = next(
        fit
        for layer in report["layers"]
        if layer["name"] == "layers.0.w"
        for fit in layer["fits"].values()
        if fit["holdout"]
    )
    assert shown == pytest.approx(held["rel_error_centered"], abs=1e-4)
    assert (
        held["rel_error_centered"] > 3 * held["rel_error"]
    )  # the base dominates the weight: relative to it, a lost update looks small
    info = run("info", tmp_path / "basis").output
    assert "rel. err of the update" in info and "(held out)" in info


@pytest.mark.parametrize("modes", ["2,3", "1"])
def test_a_layer_equal_in_every_member_is_passed_through_not_an_error(tmp_path, modes):
    paths = write_checkpoints(tmp_path / "zoo", 5, SHAPES)
    frozen = torch.randn(12, 16, generator=torch.Generator().manual_seed(9))
    for path in paths:  # frozen during fine-tuning: the same bytes in every member
        tensors = load_file(path / "model.safetensors")
        tensors["layers.1.w"] = frozen.clone()
        save_file(tensors, path / "model.safetensors")
    built = json.loads(
        run("build", *paths[:4], "--out", tmp_path / "basis", "--k", "1", "--modes", modes, "--json").stdout
    )
    assert built["layers"] == ["layers.0.w"]
    assert built["passthrough"]["layers.1.w"] == "equal in every source (frozen?): nothing to decompose"
    run("project", paths[4], "--basis", tmp_path / "basis", "--out", tmp_path / "task")
    run("materialize", tmp_path / "task", "--basis", tmp_path / "basis", "--out", tmp_path / "model")
    assert torch.equal(load_file(tmp_path / "model" / "model.safetensors")["layers.1.w"], frozen)


def test_bf16_sources_materialize_as_bf16_without_a_base(tmp_path):
    paths = write_checkpoints(tmp_path / "zoo", 5, SHAPES)
    for path in paths:
        tensors = {name: value.to(torch.bfloat16) for name, value in load_file(path / "model.safetensors").items()}
        save_file(tensors, path / "model.safetensors")
    run("build", *paths[:4], "--out", tmp_path / "basis", "--k", "2")
    run("project", paths[4], "--basis", tmp_path / "basis", "--out", tmp_path / "task")
    run("materialize", tmp_path / "task", "--basis", tmp_path / "basis", "--out", tmp_path / "model")
    written = load_file(tmp_path / "model" / "model.safetensors")
    assert {name: tensor.dtype for name, tensor in written.items()} == dict.fromkeys(written, torch.bfloat16)


def test_info_of_a_task_lists_its_passthrough_tensors_and_says_which_error_it_shows(tmp_path, monkeypatch):
    monkeypatch.setenv("COLUMNS", "250")
    paths = write_checkpoints(tmp_path / "zoo", 4, SHAPES)
    run("build", *paths[:3], "--out", tmp_path / "basis", "--k", "1")
    projected = json.loads(
        run("project", paths[3], "--basis", tmp_path / "basis", "--out", tmp_path / "task", "--json").stdout
    )
    output = run("info", tmp_path / "task").output
    assert "Coefficients (projected)" in output and "rel. error of the update" in output
    assert f"{projected['errors']['layers.0.w']['rel_error_centered']:.4f}" in output
    assert "norm.weight" in output and "1-D tensor" in output


def test_leading_singleton_dimensions_are_squeezed_into_the_matrix_they_hold(tmp_path):
    """A ``1 x 17 x 8`` position embedding is the 17 x 8 matrix it holds: decomposed, not passed through."""
    from safetensors.torch import load_file

    zoo = write_checkpoints(tmp_path / "zoo", 4, {"pos": (1, 17, 8), "w": (16, 12), "cls": (1, 1, 8)})
    built = json.loads(
        run("build", *zoo, "--out", tmp_path / "basis", "--modes", "1", "--k", "3", "--no-register", "--json").stdout
    )
    assert "pos" in built["layers"]
    assert built["passthrough"]["cls"] == "matrix side below 2"
    run("project", zoo[1], "--basis", tmp_path / "basis", "--out", tmp_path / "task", "--no-register")
    run("materialize", tmp_path / "task", "--basis", tmp_path / "basis", "--out", tmp_path / "model")
    original, rebuilt = load_file(zoo[1] / "model.safetensors"), load_file(tmp_path / "model" / "model.safetensors")
    assert rebuilt["pos"].shape == (1, 17, 8)
    torch.testing.assert_close(
        rebuilt["pos"], original["pos"], atol=1e-5, rtol=1e-5
    )  # 4 centred members span 3 directions: --modes 1 --k 3 holds them exactly


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_a_half_precision_basis_goes_end_to_end(tmp_path, dtype):
    """Stored in 16 bits, a basis still projects and materializes a member to the precision of its dtype."""
    zoo = write_checkpoints(tmp_path / "zoo", 4, SHAPES)
    run("build", *zoo, "--out", tmp_path / "basis", "--modes", "1", "--k", "3", "--dtype", dtype, "--no-register")
    manifest = json.loads((tmp_path / "basis" / "unisub_basis.json").read_text())
    assert manifest["dtype"] == dtype
    run("project", zoo[2], "--basis", tmp_path / "basis", "--out", tmp_path / "task", "--no-register")
    run("validate", tmp_path / "task", "--against", tmp_path / "basis", "--deep")
    run("materialize", tmp_path / "task", "--basis", tmp_path / "basis", "--out", tmp_path / "model")
    original, rebuilt = load_file(zoo[2] / "model.safetensors"), load_file(tmp_path / "model" / "model.safetensors")
    tolerance = {"float16": 2e-3, "bfloat16": 2e-2}[dtype]
    for name in ("layers.0.w", "layers.1.w"):
        assert torch.linalg.norm(rebuilt[name] - original[name]) <= tolerance * torch.linalg.norm(original[name]), name
