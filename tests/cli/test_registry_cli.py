"""``unisub-hub registry ...`` and registry references in other commands."""

from __future__ import annotations

import json

from clitools import SHAPES, run, write_checkpoints


def test_build_and_project_register_and_references_resolve(tmp_path, isolated_home):
    paths = write_checkpoints(tmp_path / "zoo", 5, SHAPES)
    built = json.loads(
        run("build", *paths[:4], "--out", tmp_path / "basis", "--k", "2", "--name", "zoo-basis", "--json").stdout
    )
    assert built["registered"]["name"] == "zoo-basis" and built["registered"]["version"] == 1
    assert built["registered"]["path"].startswith(str(isolated_home))
    # project takes the basis by registry reference and registers the task.
    task = json.loads(
        run(
            "project", paths[4], "--basis", "zoo-basis@latest", "--out", tmp_path / "task", "--name", "t4", "--json"
        ).stdout
    )
    assert task["registered"]["name"] == "t4"
    # materialize finds the basis through the registry when --basis is left out.
    made = json.loads(run("materialize", "t4", "--out", tmp_path / "model", "--json").stdout)
    assert made["files"] == ["model.safetensors"]
    info = json.loads(run("info", "zoo-basis:1", "--json").stdout)
    assert info["manifest"]["content_id"] == built["content_id"]
    bases = json.loads(run("registry", "list", "bases", "--json").stdout)
    assert [b["name"] for b in bases] == ["zoo-basis"]
    tasks = json.loads(run("registry", "list", "tasks", "--arch", "unknown", "--json").stdout)
    assert [t["basis"] for t in tasks] == ["zoo-basis:1"]
    assert json.loads(run("registry", "list", "tasks", "--arch", "other", "--json").stdout) == []
    archs = json.loads(run("registry", "list", "architectures", "--json").stdout)
    assert archs[0]["bases"] == 1
    shown = json.loads(run("registry", "show", built["content_id"][7:20], "--json").stdout)
    assert [s["role"] for s in shown["sources"]] == ["train"] * 4 and shown["tasks"] == ["t4:1"]


def test_no_register_leaves_registry_empty(tmp_path, isolated_home):
    paths = write_checkpoints(tmp_path / "zoo", 3, SHAPES)
    out = json.loads(run("build", *paths, "--out", tmp_path / "basis", "--k", "1", "--no-register", "--json").stdout)
    assert out["registered"] is None
    assert json.loads(run("registry", "list", "--json").stdout) == []


def test_alias_tag_rm_gc_verify_commands(tmp_path, isolated_home):
    paths = write_checkpoints(tmp_path / "zoo", 4, SHAPES)
    run("build", *paths[:3], "--out", tmp_path / "b1", "--k", "1", "--name", "zb")
    run("build", *paths[:3], "--out", tmp_path / "b2", "--k", "2", "--name", "zb")
    run("project", paths[3], "--basis", "zb:1", "--out", tmp_path / "task", "--name", "t")
    assert "zb@prod -> zb:1" in run("registry", "alias", "zb", "1", "prod").output
    assert json.loads(run("registry", "show", "zb@prod", "--json").stdout)["aliases"] == ["prod"]
    tagged = json.loads(run("registry", "tag", "t", "dataset=digits", "owner=me", "--json").stdout)
    assert tagged["tags"] == {"dataset": "digits", "owner": "me"}
    bad = run("registry", "tag", "t", "novalue", ok=False)
    assert bad.exit_code == 2 and "'novalue' is not KEY=VALUE" in bad.output
    refused = run("registry", "rm", "zb:1", ok=False)
    assert refused.exit_code == 1
    assert refused.output.strip() == "Error: zb:1: 1 task(s) use this basis (t:1); pass --force to remove them too"
    removed = json.loads(run("registry", "rm", "zb:1", "--force", "--json").stdout)
    assert sorted(e["kind"] for e in removed) == ["basis", "task"]
    assert json.loads(run("registry", "show", "zb", "--json").stdout)["version"] == 2
    (isolated_home / "store" / ("cd" * 32)).mkdir()
    assert json.loads(run("registry", "gc", "--json").stdout)["removed"] == [str(isolated_home / "store" / ("cd" * 32))]
    assert json.loads(run("registry", "verify", "--json").stdout)["ok"] is True
    stored = next((isolated_home / "store").iterdir()) / "basis.safetensors"
    stored.write_bytes(stored.read_bytes()[:-1] + b"\x00")
    failed = run("registry", "verify", ok=False)
    assert failed.exit_code == 1 and "FAIL basis zb:2" in failed.output


def test_unknown_reference_is_one_line(tmp_path, isolated_home):
    result = run("registry", "show", "ghost@prod", ok=False)
    assert result.exit_code == 1
    assert result.output.strip() == "Error: ghost@prod: no registered artifact matches (try `unisub-hub registry list`)"


def test_registry_add_command(tmp_path, isolated_home):
    paths = write_checkpoints(tmp_path / "zoo", 3, SHAPES)
    run("build", *paths, "--out", tmp_path / "basis", "--k", "1", "--no-register")
    first = json.loads(run("registry", "add", tmp_path / "basis", "--json").stdout)
    second = json.loads(run("registry", "add", tmp_path / "basis", "--json").stdout)
    assert first[0]["created"] is True and second[0]["created"] is False
