"""``unisub-hub search`` against the local Hub, which lists repos the way the Hub does."""

from __future__ import annotations

import json

import pytest
from clitools import SHAPES, run, write_checkpoints


def _with_base_model(folder, base_model: str) -> None:
    """Name the base model in a basis manifest (the manifest is outside the content id)."""
    path = folder / "unisub_basis.json"
    manifest = json.loads(path.read_text())
    manifest["architecture"]["base_model"] = {"id": base_model}
    path.write_text(json.dumps(manifest))


def test_search_lists_our_repos_by_kind_base_model_basis_and_query(tmp_path, hub):
    zoo = write_checkpoints(tmp_path / "zoo", 8, SHAPES)
    for name, members, base in (("ba", zoo[:3], "org/base-a"), ("bb", zoo[3:6], "org/base-b")):
        run("build", *members, "--out", tmp_path / name, "--k", "2", "--name", name, "--no-register")
        _with_base_model(tmp_path / name, base)
        run("registry", "add", tmp_path / name)
        run("push", name, f"me/basis-{name}")
    for task, basis, member in (("t1", "ba", zoo[6]), ("t2", "ba", zoo[7]), ("t3", "bb", zoo[0])):
        run("project", member, "--basis", basis, "--out", tmp_path / task, "--name", task)
        run("push", task, f"me/task-{task}")
    from huggingface_hub import HfApi

    api = HfApi(endpoint=hub.url)
    api.create_repo("me/other")  # not ours: a card without our library never shows
    api.upload_file(
        path_or_fileobj=b"---\nlibrary_name: transformers\n---\n", path_in_repo="README.md", repo_id="me/other"
    )
    run("--home", tmp_path / "elsewhere", "pull", "me/task-t2")  # downloads: t2 first among tasks

    def found(*args: str) -> list[dict]:
        return json.loads(run("search", *args, "--json").stdout)

    everything = found()
    assert {row["repo_id"] for row in everything} == {
        "me/basis-ba",
        "me/basis-bb",
        "me/task-t1",
        "me/task-t2",
        "me/task-t3",
    }
    by_repo = {row["repo_id"]: row for row in everything}
    downloads = [row["downloads"] for row in everything]
    assert downloads == sorted(downloads, reverse=True)  # most downloaded first
    assert by_repo["me/task-t2"]["downloads"] > 0 == by_repo["me/task-t1"]["downloads"]
    assert by_repo["me/task-t1"]["kind"] == "task" and by_repo["me/task-t1"]["basis_repo"] == "me/basis-ba"
    assert by_repo["me/basis-ba"]["kind"] == "basis" and by_repo["me/basis-ba"]["relation"] == "adapter"
    for row in everything:  # the size is what the repo stores
        files = api.list_repo_tree(row["repo_id"], recursive=True)
        assert row["size_bytes"] == sum(getattr(f, "size", 0) or 0 for f in files)
    assert {row["repo_id"] for row in found("--kind", "basis")} == {"me/basis-ba", "me/basis-bb"}
    assert {row["repo_id"] for row in found("--base-model", "org/base-a")} == {
        "me/basis-ba",
        "me/task-t1",
        "me/task-t2",
    }
    assert {row["repo_id"] for row in found("--basis", "me/basis-bb")} == {"me/task-t3"}
    assert [row["repo_id"] for row in found("t3")] == ["me/task-t3"]
    assert found("--kind", "task", "--base-model", "org/nothing") == []
    assert found("--limit", "1") == everything[:1]
    assert [row["repo_id"] for row in found("--kind", "task", "--limit", "1")] == ["me/task-t2"]
    table = run("search", "--kind", "task").output
    assert "me/task-t1" in table and "me/basis-ba" in table and "me/basis-bb" not in table.split("me/task-t3")[0]


@pytest.mark.slow  # huggingface_hub retries a listing 5 times with backoff (about 23 s) before it gives up
def test_an_unreachable_hub_is_one_line(monkeypatch):
    from conftest import set_hf

    set_hf(monkeypatch, endpoint="http://127.0.0.1:9")
    result = run("search", ok=False)
    assert result.exit_code == 1 and result.output.count("\n") == 1 and "cannot reach" in result.output
