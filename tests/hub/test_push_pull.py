"""Push and pull through the real huggingface_hub client against the local Hub server."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest
from clitools import run
from conftest import set_hf
from models import save_adapters, save_base  # noqa: E402

from unisub_hub.testing import LocalHub  # noqa: E402


@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    root = tmp_path_factory.mktemp("hubzoo")
    base = save_base(root / "base")
    return base, save_adapters(base, root, 7, ranks=(4, 2))


def publish(zoo, tmp_path, hub):
    """Build a basis from 4 adapters, project 3 others, push basis and the 3 tasks."""
    base, adapters = zoo
    run("build", *adapters[:4], "--out", tmp_path / "basis", "--k", "6", "--name", "tiny-basis")
    tasks = []
    for i, adapter in enumerate(adapters[4:]):
        run("project", adapter, "--basis", "tiny-basis", "--out", tmp_path / f"task{i}", "--name", f"task{i}")
        tasks.append(tmp_path / f"task{i}")
    pushed = json.loads(run("push", "tiny-basis", "me/tiny-basis", "--json").stdout)
    assert pushed[0]["kind"] == "basis" and len(pushed[0]["commit"]) == 40
    for i in range(3):
        run("push", f"task{i}", f"me/task{i}")
    return base, tasks


def test_push_then_pull_into_empty_home_materializes_identically(zoo, tmp_path, hub, monkeypatch):
    base, tasks = publish(zoo, tmp_path, hub)
    readme = hub.repos["me/task0"].resolve("main").files["README.md"].decode()
    assert (
        "library_name: unisub-hub" in readme
        and "- universal-subspace" in readme
        and "basis_repo: me/tiny-basis" in readme
    )
    manifest = json.loads(hub.repos["me/task0"].resolve("main").files["unisub_coefficients.json"])
    assert manifest["basis"]["repo_id"] == "me/tiny-basis" and len(manifest["basis"]["revision"]) == 40
    run("materialize", "task0", "--out", tmp_path / "local-adapter")
    # A fresh machine: empty registry home.
    monkeypatch.setenv("UNISUB_HOME", str(tmp_path / "fresh-home"))
    pulled = json.loads(run("pull", "me/task0", "--materialize", "--out", tmp_path / "remote-adapter", "--json").stdout)
    assert pulled["pulled"]["hub_repo"] == "me/task0"
    local = (tmp_path / "local-adapter" / "adapter_model.safetensors").read_bytes()
    remote = (tmp_path / "remote-adapter" / "adapter_model.safetensors").read_bytes()
    assert local == remote
    assert json.loads((tmp_path / "local-adapter" / "adapter_config.json").read_text()) == json.loads(
        (tmp_path / "remote-adapter" / "adapter_config.json").read_text()
    )
    # A second task on the same basis downloads no basis bytes.
    basis_bytes = hub.bytes_downloaded("me/tiny-basis")
    assert basis_bytes > 0
    task_bytes_before = hub.bytes_downloaded("me/task1")
    run("pull", "me/task1")
    assert hub.bytes_downloaded("me/tiny-basis") == basis_bytes
    assert hub.bytes_downloaded("me/task1") > task_bytes_before
    tasks_listed = json.loads(run("registry", "list", "tasks", "--json").stdout)
    assert sorted(t["name"] for t in tasks_listed) == ["task0", "task1"]
    # Offline, what is stored still resolves.
    set_hf(monkeypatch, offline=True)
    again = json.loads(run("pull", "me/task1", "--json").stdout)
    assert again["pulled"]["name"] == "task1"
    missing = run("pull", "me/task2", ok=False)
    assert missing.exit_code == 1
    assert missing.output.strip() == "Error: me/task2: HF_HUB_OFFLINE is set and this repo is not in the registry"


def test_pull_at_an_older_revision_gets_the_old_content(zoo, tmp_path, hub, monkeypatch):
    publish(zoo, tmp_path, hub)
    first = hub.repos["me/task0"].branches["main"]
    run("push", "task1", "me/task0")  # a newer version of the repo holds other content
    assert hub.repos["me/task0"].branches["main"] != first
    monkeypatch.setenv("UNISUB_HOME", str(tmp_path / "fresh"))
    old = json.loads(run("pull", f"me/task0@{first}", "--json").stdout)["pulled"]
    new = json.loads(run("pull", "me/task0", "--json").stdout)["pulled"]
    assert old["name"] == "task0" and new["name"] == "task1"
    assert old["hub_revision"] == first


def test_tampered_download_fails_and_registers_nothing(zoo, tmp_path, hub, monkeypatch):
    publish(zoo, tmp_path, hub)
    data = bytearray(hub.repos["me/task2"].resolve("main").files["coefficients.safetensors"])
    data[-1] ^= 0xFF
    hub.tamper("me/task2", "coefficients.safetensors", bytes(data))
    home = tmp_path / "fresh"
    monkeypatch.setenv("UNISUB_HOME", str(home))
    result = run("pull", "me/task2", ok=False)
    assert result.exit_code == 1
    sha = hub.repos["me/task2"].branches["main"]
    assert result.output.strip().splitlines()[-1] == (
        f"Error: me/task2@{sha}: downloaded tensor files do not hash to the manifest's content id (modified or corrupt)"
    )
    assert json.loads(run("registry", "list", "tasks", "--json").stdout) == []
    assert list((home / "downloads").iterdir()) == []


def test_push_without_basis_on_hub_stops_or_pushes_it(zoo, tmp_path, hub):
    base, adapters = zoo
    run("build", *adapters[:3], "--out", tmp_path / "basis", "--k", "4", "--name", "b2")
    run("project", adapters[5], "--basis", "b2", "--out", tmp_path / "task", "--name", "t")
    refused = run("push", "t", "me/t", ok=False)
    assert refused.exit_code == 1
    assert "is not on the Hub yet; push it first or pass --push-basis REPO_ID" in refused.output
    assert "me/t" not in hub.repos
    both = json.loads(run("push", "t", "me/t", "--push-basis", "me/b2", "--json").stdout)
    assert [p["kind"] for p in both] == ["basis", "task"]
    shown = json.loads(run("registry", "show", "t", "--json").stdout)
    assert shown["hub_repo"] == "me/t" and shown["hub_revision"] == hub.repos["me/t"].branches["main"]


def test_create_pr_and_branch(zoo, tmp_path, hub):
    publish(zoo, tmp_path, hub)
    adapters = zoo[1]
    main_before = hub.repos["me/tiny-basis"].branches["main"]
    again = json.loads(run("push", "tiny-basis", "me/tiny-basis", "--json").stdout)
    assert again[0]["commit"] == main_before  # unchanged content makes no new commit
    run("build", *adapters[:4], "--out", tmp_path / "other", "--k", "3", "--name", "other")
    pr = json.loads(run("push", "other", "me/tiny-basis", "--create-pr", "--commit-message", "k=3", "--json").stdout)
    assert pr[0]["pr_url"].endswith("/me/tiny-basis/discussions/1")
    assert hub.repos["me/tiny-basis"].branches["main"] == main_before
    assert hub.repos["me/tiny-basis"].branches["refs/pr/1"] == pr[0]["commit"]
    branch = json.loads(run("push", "tiny-basis", "me/tiny-basis", "--revision", "dev", "--json").stdout)
    assert hub.repos["me/tiny-basis"].branches["dev"] == branch[0]["commit"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_hub_errors_are_one_line(zoo, tmp_path, hub, monkeypatch):
    publish(zoo, tmp_path, hub)
    cases = [
        (["pull", "me/nothing"], "Error: me/nothing: repository not found on "),
        (["pull", "me/task0@v9"], "Error: me/task0@v9: revision not found on "),
        (["pull", "not a repo"], "Error: not a repo: not a Hub repo id (expected org/name[@revision])"),
    ]
    for args, message in cases:
        result = run(*args, ok=False)
        last = result.output.strip().splitlines()[-1]
        assert result.exit_code == 1 and last.startswith(message) and result.output.count("Error:") == 1, result.output
    with LocalHub(token="right-token") as locked:
        set_hf(monkeypatch, endpoint=locked.url)
        result = run("push", "tiny-basis", "me/locked", "--token", "wrong-token-123", ok=False)
        assert result.exit_code == 1 and "unauthorized" in result.output and "wrong-token-123" not in result.output
        ok = json.loads(run("push", "tiny-basis", "me/locked", "--token", "right-token", "--private", "--json").stdout)
        assert ok[0]["repo_id"] == "me/locked"
        monkeypatch.setenv("UNISUB_HOME", str(tmp_path / "other"))
        hidden = run("pull", "me/locked", ok=False)
        assert hidden.exit_code == 1 and "repository not found" in hidden.output
    set_hf(monkeypatch, endpoint=f"http://127.0.0.1:{free_port()}")
    down = run("pull", "me/task0", ok=False)
    assert down.exit_code == 1 and "cannot reach http://127.0.0.1:" in down.output and "network down?" in down.output


def test_hub_sources_are_pinned_and_only_needed_files_fetched(zoo, tmp_path, hub):
    from huggingface_hub import HfApi

    base, adapters = zoo
    api = HfApi(endpoint=hub.url)
    for i, adapter in enumerate(adapters[:3]):
        api.create_repo(f"me/lora-{i}")
        api.upload_folder(repo_id=f"me/lora-{i}", folder_path=adapter)
        api.upload_file(repo_id=f"me/lora-{i}", path_or_fileobj=b"not needed", path_in_repo="training_args.bin")
    shas = [hub.repos[f"me/lora-{i}"].branches["main"] for i in range(3)]
    built = json.loads(
        run(
            "build", "me/lora-0", f"me/lora-1@{shas[1]}", "me/lora-2", "--out", tmp_path / "basis", "--k", "2", "--json"
        ).stdout
    )
    manifest = json.loads((tmp_path / "basis" / "unisub_basis.json").read_text())
    assert [(s["id"], s["revision"]) for s in manifest["sources"]] == [(f"me/lora-{i}", shas[i]) for i in range(3)]
    assert built["report"]["sources"] == [
        "me/lora-0",
        f"me/lora-1@{shas[1]}",
        "me/lora-2",
    ]  # as typed: the name identifies the source
    fetched = {r.path.rsplit("/", 1)[-1] for r in hub.requests if r.method == "GET" and "/resolve/" in r.path}
    assert "training_args.bin" not in fetched and "README.md" not in fetched
    assert {"adapter_model.safetensors", "adapter_config.json"} <= fetched
    projected = json.loads(
        run("project", "me/lora-0", "--basis", tmp_path / "basis", "--out", tmp_path / "task", "--json").stdout
    )
    task_manifest = json.loads((tmp_path / "task" / "unisub_coefficients.json").read_text())
    assert task_manifest["source"]["revision"] == shas[0] and projected["errors"]


def test_hub_errors_say_what_went_wrong_by_their_type():
    from unisub_hub.errors import HubConnectionError, HubError, HubUsageError
    from unisub_hub.hf import split_revision

    for bad in ("no-namespace", "a/b/c", "org/na..me", "-org/name", "org/name@"[:-1] + "/x"):
        with pytest.raises(HubUsageError, match="not a Hub repo id") as caught:
            split_revision(bad)
        assert not isinstance(caught.value, ConnectionError)  # a typo is not worth a retry
        assert isinstance(caught.value, ValueError) and isinstance(caught.value, HubError)
    assert split_revision("org/name@v1") == ("org/name", "v1")
    assert issubclass(HubConnectionError, ConnectionError)


def test_a_task_trained_on_a_hub_basis_is_pushed_and_pulled_like_any_other(zoo, tmp_path, hub, monkeypatch):
    import torch
    import transformers
    from models import logits_of

    from unisub_hub.adapt import attach

    base, _ = publish(zoo, tmp_path, hub)
    monkeypatch.setenv("UNISUB_HOME", str(tmp_path / "trainer-home"))  # a fresh home: the basis comes from the Hub
    model = transformers.BertForSequenceClassification.from_pretrained(base).eval()
    adapter = attach(model, "me/tiny-basis", heads=["classifier"])
    adapter.add_task("fresh")
    with torch.no_grad():
        for parameter in adapter.parameters():
            parameter.add_(0.2 * torch.randn(parameter.shape, generator=torch.Generator().manual_seed(3)))
    expected = logits_of(model)
    adapter.save_task(tmp_path / "fresh", training={"steps": 0})
    run("registry", "add", tmp_path / "fresh")
    run("push", "fresh", "me/fresh-task")
    monkeypatch.setenv("UNISUB_HOME", str(tmp_path / "user-home"))
    pulled = json.loads(run("pull", "me/fresh-task", "--json").stdout)
    again = transformers.BertForSequenceClassification.from_pretrained(base).eval()
    attach(again, "tiny-basis", heads=["classifier"]).load_task(pulled["pulled"]["path"])  # by registry name this time
    torch.testing.assert_close(logits_of(again), expected)


def test_a_basis_reference_to_a_coefficient_set_or_to_itself_is_refused_and_registers_nothing(
    zoo, tmp_path, hub, monkeypatch
):
    publish(zoo, tmp_path, hub)
    for repo, points_to in (("me/task0", "me/task0"), ("me/task1", "me/task2"), ("me/task2", "me/task1")):
        manifest = json.loads(hub.repos[repo].resolve("main").files["unisub_coefficients.json"])
        manifest["basis"].pop("revision", None)
        manifest["basis"]["repo_id"] = points_to
        hub.tamper(repo, "unisub_coefficients.json", json.dumps(manifest).encode())
    monkeypatch.setenv("UNISUB_HOME", str(tmp_path / "fresh"))
    for repo, points_to in (("me/task0", "me/task0"), ("me/task1", "me/task2")):
        result = run("pull", repo, ok=False)
        assert result.exit_code == 1 and "Traceback" not in result.output
        assert f"Error: {points_to}: is a coefficient set, not the basis" in result.output.strip().splitlines()[-1]
    assert json.loads(run("registry", "list", "tasks", "--json").stdout) == []
    assert json.loads(run("registry", "list", "bases", "--json").stdout) == []


def test_a_pull_fetches_and_keeps_the_artifact_files_only(zoo, tmp_path, hub, monkeypatch):
    from huggingface_hub import HfApi

    publish(zoo, tmp_path, hub)
    api = HfApi(endpoint=hub.url)
    for name, data in (("big.bin", b"x" * 100_000), ("evil.sh", b"rm -rf /\n"), ("stray.safetensors", b"not listed")):
        api.upload_file(repo_id="me/task1", path_or_fileobj=data, path_in_repo=name)
    monkeypatch.setenv("UNISUB_HOME", str(tmp_path / "fresh"))
    before = len(hub.requests)
    pulled = json.loads(run("pull", "me/task1", "--json").stdout)["pulled"]
    fetched = {r.path.rsplit("/", 1)[-1] for r in hub.requests[before:] if r.method == "GET" and "/resolve/" in r.path}
    assert not fetched & {"big.bin", "evil.sh"}
    assert sorted(p.name for p in Path(pulled["path"]).iterdir()) == [
        "README.md",
        "coefficients.safetensors",
        "unisub_coefficients.json",
    ]


@pytest.mark.parametrize("fault", ["drop-commit", "garbage-commit"])
def test_a_server_that_dies_or_garbles_its_answer_during_a_push_is_one_line(zoo, tmp_path, hub, fault):
    base, adapters = zoo
    run("build", *adapters[:3], "--out", tmp_path / "basis", "--k", "2", "--name", "b")
    hub.fail_next(fault)
    result = run("push", "b", "me/b", ok=False)
    expected = "broke off mid-transfer" if fault == "drop-commit" else "answered with something that is not JSON"
    assert (
        result.exit_code == 1
        and "Traceback" not in result.output
        and expected in result.output.strip().splitlines()[-1]
    )
    assert hub.repos["me/b"].resolve("main").files.keys() == {".gitattributes"}  # nothing committed
    assert run("registry", "show", "b", "--json").exit_code == 0  # still registered, not yet pushed: a retry works
    assert run("push", "b", "me/b").exit_code == 0


@pytest.mark.slow
def test_a_download_cut_short_is_retried_and_one_that_keeps_failing_registers_nothing(zoo, tmp_path, hub, monkeypatch):
    publish(zoo, tmp_path, hub)
    monkeypatch.setenv("UNISUB_HOME", str(tmp_path / "fresh"))
    hub.fail_next("cut-download")
    assert run("pull", "me/task0").exit_code == 0  # huggingface_hub resumes the cut file
    monkeypatch.setenv("UNISUB_HOME", str(tmp_path / "fresh2"))
    hub.fail_next("cut-download", times=50)
    result = run("pull", "me/task1", ok=False)
    assert (
        result.exit_code == 1
        and "Traceback" not in result.output
        and "broke off mid-transfer" in result.output.strip().splitlines()[-1]
    )
    assert json.loads(run("registry", "list", "--json").stdout) == []
    assert not any((tmp_path / "fresh2" / "downloads").iterdir())


def test_a_push_target_with_a_revision_is_refused_before_anything_is_sent(zoo, tmp_path, hub):
    base, adapters = zoo
    run("build", *adapters[:3], "--out", tmp_path / "basis", "--k", "2", "--name", "b")
    result = run("push", "b", "me/b@main", ok=False)
    assert (
        result.exit_code == 1
        and result.output.strip().splitlines()[-1]
        == "Error: me/b@main: a push target is a repo id without @revision; give the branch with --revision main"
    )
    assert "me/b" not in hub.repos and "me/b@main" not in hub.repos


@pytest.mark.parametrize(
    "name", ["../evil.safetensors", "/abs/evil.safetensors", "sub/../../evil.safetensors", "sub/extra.safetensors"]
)
def test_a_repo_file_name_that_climbs_out_is_neither_fetched_nor_written(zoo, tmp_path, hub, monkeypatch, name):
    import base64

    base, adapters = zoo
    run("build", *adapters[:3], "--out", tmp_path / "basis", "--k", "2", "--name", "b")
    run("push", "b", "me/b")
    hub.commit(
        hub.repos["me/b"],
        "main",
        [{"key": "file", "value": {"path": name, "content": base64.b64encode(b"payload").decode()}}],
        create_pr=False,
    )
    monkeypatch.setenv("UNISUB_HOME", str(tmp_path / "fresh"))
    pulled = json.loads(run("pull", "me/b", "--json").stdout)
    assert pulled["pulled"]["kind"] == "basis"
    assert not [p for p in tmp_path.rglob("*") if p.name in {"evil.safetensors", "extra.safetensors"}]
    assert not [r for r in hub.requests if "evil" in r.path or "extra" in r.path]


def test_a_source_repo_listing_with_climbing_names_downloads_only_safe_files(zoo, tmp_path, hub):
    from huggingface_hub import HfApi

    base, adapters = zoo
    api = HfApi(endpoint=hub.url)
    for i, adapter in enumerate(adapters[:3]):
        api.create_repo(f"me/lora-{i}")
        api.upload_folder(repo_id=f"me/lora-{i}", folder_path=adapter)
    import base64

    hub.commit(
        hub.repos["me/lora-0"],
        "main",
        [{"key": "file", "value": {"path": "../evil.safetensors", "content": base64.b64encode(b"x").decode()}}],
        create_pr=False,
    )
    assert run("build", "me/lora-0", "me/lora-1", "me/lora-2", "--out", tmp_path / "basis", "--k", "2").exit_code == 0
    assert not [r for r in hub.requests if "evil" in r.path] and not list(tmp_path.rglob("evil.safetensors"))


def test_hf_token_from_the_environment_authorizes_a_push(zoo, tmp_path, monkeypatch):
    base, adapters = zoo
    run("build", *adapters[:3], "--out", tmp_path / "basis", "--k", "2", "--name", "b")
    with LocalHub(token="env-token") as locked:
        set_hf(monkeypatch, endpoint=locked.url, home=tmp_path / "hf-home")
        denied = run("push", "b", "me/b", ok=False)
        assert denied.exit_code == 1 and "unauthorized" in denied.output
        monkeypatch.setenv("HF_TOKEN", "env-token")
        pushed = json.loads(run("push", "b", "me/b", "--json").stdout)
        assert pushed[0]["repo_id"] == "me/b" and "env-token" not in json.dumps(pushed)


def test_validate_against_a_base_model_on_the_hub_reads_only_its_headers(zoo, tmp_path, hub):
    import torch
    from huggingface_hub import HfApi
    from safetensors.torch import load_file, save_file

    base, adapters = zoo
    big = tmp_path / "big-base"
    big.mkdir()
    save_file(
        {**load_file(base / "model.safetensors"), "zz.padding": torch.zeros(1_000_000)}, big / "model.safetensors"
    )  # 4 MB past the header
    api = HfApi(endpoint=hub.url)
    api.create_repo("me/base")
    api.upload_folder(repo_id="me/base", folder_path=big)
    run("build", *adapters[:3], "--out", tmp_path / "basis", "--k", "2", "--no-register")
    before = hub.bytes_downloaded("me/base")
    report = json.loads(run("validate", tmp_path / "basis", "--against", "me/base", "--json").stdout)
    check = next(c for c in report["checks"] if c["name"] == "layers present in base model me/base")
    assert check["ok"] and "layers found with matching shapes" in check["detail"]
    assert (
        hub.bytes_downloaded("me/base") - before < 200_000
    )  # the header (huggingface_hub asks for 100 kB), not the 4 MB of weights
    other = run("validate", tmp_path / "basis", "--against", "me/nothing", "--json", ok=False)
    assert (
        other.exit_code == 1 and "no safetensors weights found on" in other.output and "Traceback" not in other.output
    )
