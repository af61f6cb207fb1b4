"""The duplicate check before a build: every weight file hashed once, identities as documented."""

from __future__ import annotations

import hashlib
import json
import shutil
import threading

import pytest
import torch
from safetensors.torch import save_file

import unisub_hub.format.tensorfile as tensorfile
from unisub_hub.errors import IncompatibleSourcesError
from unisub_hub.io.checkpoint import CheckpointSource
from unisub_hub.io.peft_adapter import LoraSource
from unisub_hub.pipeline.build import check_duplicates


def write_adapter(folder, seed=0):
    gen = torch.Generator().manual_seed(seed)
    folder.mkdir()
    save_file(
        {
            "base_model.model.q.lora_A.weight": torch.randn(2, 8, generator=gen),
            "base_model.model.q.lora_B.weight": torch.randn(6, 2, generator=gen),
        },
        folder / "adapter_model.safetensors",
    )
    (folder / "adapter_config.json").write_text(
        json.dumps({"peft_type": "LORA", "r": 2, "lora_alpha": 4, "target_modules": ["q"]})
    )
    return folder


def write_sharded(folder):
    folder.mkdir()
    weight_map = {}
    for number, name in enumerate(("a.weight", "b.weight"), start=1):
        weight_map[name] = f"model-0000{number}-of-00002.safetensors"
        save_file({name: torch.randn(4, 3)}, folder / weight_map[name])
    (folder / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    return folder


@pytest.fixture
def hashed_paths(monkeypatch):
    """The files each ``sha256_files`` call hashed, in call order.

    The first two calls wait for each other: they pass only if two files are hashed at the
    same time (a lock shared by all sources, as ``cached_property``'s was on Python 3.11,
    would let the second in only after the first returned, and the wait would time out).
    """
    calls = []
    real = tensorfile.sha256_files
    together = threading.Barrier(2, timeout=10)

    def counting(files):
        files = list(files)
        calls.extend(files)
        if len(calls) <= 2:
            together.wait()
        return real(files)

    monkeypatch.setattr("unisub_hub.io.files.sha256_files", counting)
    return calls


def digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_each_file_is_hashed_once_and_identities_are_the_documented_ones(tmp_path, hashed_paths):
    adapters = [LoraSource(write_adapter(tmp_path / f"a{n}", seed=n)) for n in range(3)]
    folder = write_sharded(tmp_path / "sharded")
    checkpoint = CheckpointSource(folder)
    check_duplicates([*adapters, checkpoint])
    provenance = [source.provenance()["sha256"] for source in [*adapters, checkpoint]]

    shards = sorted(folder.glob("*.safetensors"))
    assert sorted(map(str, hashed_paths)) == sorted(
        str(p) for p in [*(tmp_path / f"a{n}" / "adapter_model.safetensors" for n in range(3)), *shards]
    )
    assert provenance[:3] == [digest(tmp_path / f"a{n}" / "adapter_model.safetensors") for n in range(3)]
    lines = "".join(f"{shard.name} {digest(shard)}\n" for shard in shards)
    assert provenance[3] == hashlib.sha256(lines.encode()).hexdigest()


def test_a_copied_adapter_is_refused_naming_both(tmp_path):
    first = write_adapter(tmp_path / "a0")
    write_adapter(tmp_path / "a1", seed=1)
    shutil.copytree(first, tmp_path / "copy")
    sources = [LoraSource(tmp_path / name) for name in ("a0", "a1", "copy")]
    with pytest.raises(IncompatibleSourcesError, match="has the same bytes .sha256. as .*a0: duplicate source"):
        check_duplicates(sources)
