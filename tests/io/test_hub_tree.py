"""Hub sources: planned from metadata, downloaded where they are read, one identity on disk and on the Hub."""

from __future__ import annotations

import pytest
import torch
from clitools import run
from conftest import max_principal_angle, set_hf
from models import save_adapters, save_base, save_finetunes

from unisub_hub.errors import HubError
from unisub_hub.format import load_basis
from unisub_hub.format.tensorfile import sha256_files
from unisub_hub.io.checkpoint import CheckpointSource
from unisub_hub.io.collection import open_source
from unisub_hub.io.peft_adapter import LoraSource


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("hubsources")
    base = save_base(root / "base")
    return save_finetunes(base, root, 3), save_adapters(base, root, 3, ranks=(4, 2))


def upload(hub, folder, repo_id):
    from huggingface_hub import HfApi

    api = HfApi(endpoint=hub.url)
    api.create_repo(repo_id)
    api.upload_folder(repo_id=repo_id, folder_path=folder)
    return repo_id


def weight_downloads(hub) -> list[str]:
    """Whole-file downloads of weights (a header read is a Range request, answered 206)."""
    return [
        r.path
        for r in hub.requests
        if r.method == "GET" and "/resolve/" in r.path and r.path.endswith(".safetensors") and r.status == 200
    ]


def cached_weights(root) -> list[str]:
    return sorted(p.name for p in root.rglob("*.safetensors"))


def test_a_sharded_hub_checkpoint_is_planned_from_headers_and_downloaded_on_first_read(models, hub, tmp_path):
    finetunes, _ = models
    local = CheckpointSource(finetunes[0])
    assert len(local.files) > 1  # sharded
    source = open_source(upload(hub, finetunes[0], "me/ft-0"))
    assert isinstance(source, CheckpointSource) and source.revision == hub.repos["me/ft-0"].branches["main"]
    assert source.tensors == local.tensors and source.size_bytes() == local.size_bytes()
    assert source.sha256 == local.sha256  # from the Hub's per-file hashes, without reading a byte
    assert weight_downloads(hub) == [] and cached_weights(tmp_path / "hf-home") == []
    name = next(n for n, info in local.tensors.items() if len(info.shape) == 2)
    assert torch.equal(source.load([name])[name].value, local.load([name])[name].value)
    assert len(weight_downloads(hub)) == 1  # the one shard holding it


def test_a_lora_file_on_the_hub_has_the_identity_of_its_local_copy(models, hub):
    _, adapters = models
    source = open_source(upload(hub, adapters[0], "me/lora-0"))
    local = LoraSource(adapters[0])
    assert isinstance(source, LoraSource) and source.sha256 == local.sha256 and source.tensors == local.tensors
    assert source.scales == local.scales and weight_downloads(hub) == []


def test_a_weight_file_stored_in_git_is_downloaded_and_hashed_once(models, hub, monkeypatch):
    import unisub_hub.io.hub_tree as download
    from unisub_hub.pipeline.build import check_duplicates

    monkeypatch.setattr("unisub_hub.testing.hub._LFS_SUFFIXES", ())  # no LFS sha256 in the listing
    hashed = []
    monkeypatch.setattr(download, "sha256_files", lambda files: hashed.append(files) or sha256_files(files))
    _, adapters = models
    source = open_source(upload(hub, adapters[1], "me/lora-git"))
    check_duplicates([source, LoraSource(adapters[0])])
    assert source.provenance()["sha256"] == LoraSource(adapters[1]).sha256
    assert len(weight_downloads(hub)) == 1 and len(hashed) == 1


def test_a_kohya_file_on_the_hub_is_planned_from_its_header_and_its_alphas_read_with_its_weights(hub, tmp_path):
    from safetensors.torch import save_file

    folder = tmp_path / "kohya"
    folder.mkdir()
    save_file(
        {
            "lora_unet_mid_attn.lora_down.weight": torch.randn(2, 6),
            "lora_unet_mid_attn.lora_up.weight": torch.randn(5, 2),
            "lora_unet_mid_attn.alpha": torch.tensor(3.0, dtype=torch.float16),
        },
        folder / "style.safetensors",
    )
    source = open_source(upload(hub, folder, "me/style"))
    assert isinstance(source, LoraSource) and source.layout.name == "kohya"
    local = LoraSource(folder / "style.safetensors")
    assert list(source.header.items()) == list(
        local.header.items()
    )  # the same entries in the same order (the file's is by dtype)
    assert source.tensors == local.tensors and weight_downloads(hub) == []
    assert source.scales == {"lora_unet_mid_attn.weight": 3.0 / 2} and len(weight_downloads(hub)) == 1


@pytest.mark.parametrize("which", [0, 1])
def test_a_model_given_twice_once_from_disk_and_once_from_the_hub_is_refused(models, hub, tmp_path, which):
    collection = models[which]
    repo = upload(hub, collection[0], "me/twice")
    result = run("build", collection[0], repo, collection[1], "--out", tmp_path / "basis", "--k", "1", ok=False)
    assert (
        result.exit_code != 0
        and f"{repo}: has the same bytes (sha256) as {collection[0]}: duplicate source" in result.output
    )
    assert not (tmp_path / "basis").exists() and weight_downloads(hub) == []


def test_bytes_that_differ_from_the_listed_hash_are_refused_when_read_and_dropped_from_the_cache(models, hub, tmp_path):
    _, adapters = models
    source = open_source(upload(hub, adapters[0], "me/lora-0"))
    weights = bytearray(hub.repos["me/lora-0"].resolve("main").files["adapter_model.safetensors"])
    weights[-1] ^= 0xFF
    hub.tamper("me/lora-0", "adapter_model.safetensors", bytes(weights))
    with pytest.raises(
        HubError,
        match=r"me/lora-0/adapter_model.safetensors@\w{12}: the downloaded bytes do not match the sha256 the Hub lists",
    ):
        source.load(list(source.tensors))
    assert cached_weights(tmp_path / "hf-home") == []


def test_a_basis_built_from_hub_ids_equals_the_one_built_from_the_same_files_on_disk(
    models, hub, tmp_path, monkeypatch
):
    finetunes, _ = models
    repos = [upload(hub, folder, f"me/ft-{i}") for i, folder in enumerate(finetunes)]
    run("build", *finetunes, "--out", tmp_path / "local", "--k", "2", "--no-register")
    run("build", *repos, "--out", tmp_path / "hub", "--k", "2", "--no-register")
    local, remote = load_basis(tmp_path / "local"), load_basis(tmp_path / "hub")
    assert [s["sha256"] for s in local.manifest["sources"]] == [s["sha256"] for s in remote.manifest["sources"]]
    assert (
        remote.layer_names == local.layer_names
    )  # in the same order: headers are read alike from disk and from the Hub
    for name in local.layer_names:
        assert max_principal_angle(local.layer(name).left, remote.layer(name).left) < 1e-6
    # What the build read is in the cache: offline, the same sources open from it alone.
    set_hf(monkeypatch, offline=True)
    asked = len(hub.requests)
    offline = open_source(repos[0])
    assert (
        offline.sha256 == CheckpointSource(finetunes[0]).sha256
        and offline.revision == remote.manifest["sources"][0]["revision"]
    )
    assert len(hub.requests) == asked


@pytest.mark.slow
def test_a_distributed_build_downloads_hub_weights_in_the_workers_only(models, hub, tmp_path, monkeypatch):
    pytest.importorskip("distributed")
    from unisub_hub.engine.dask_executor import DaskExecutor, dask_client
    from unisub_hub.pipeline.build import BuildSettings, build

    finetunes, _ = models
    repos = [upload(hub, folder, f"me/ft-{i}") for i, folder in enumerate(finetunes)]
    run("build", *finetunes, "--out", tmp_path / "serial", "--k", "2", "--no-register")
    set_hf(monkeypatch, cache=tmp_path / "workers")  # the workers start with this cache
    with dask_client("dask", workers=2) as client:
        set_hf(monkeypatch, cache=tmp_path / "driver")  # and the driver plans with this one
        build(repos, tmp_path / "spread", BuildSettings(k=2), executor=DaskExecutor(client))
    assert cached_weights(tmp_path / "driver") == []  # only configs and the index were fetched here
    assert len(cached_weights(tmp_path / "workers")) == sum(len(CheckpointSource(f).files) for f in finetunes)
    serial, spread = load_basis(tmp_path / "serial"), load_basis(tmp_path / "spread")
    for name in serial.layer_names:
        assert max_principal_angle(serial.layer(name).left, spread.layer(name).left) < 1e-6
