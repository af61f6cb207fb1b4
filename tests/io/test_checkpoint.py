"""Checkpoint folders: sharded files as the Hub cache stores them, and malformed shard indexes."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file

from unisub_hub.errors import FormatError
from unisub_hub.io.checkpoint import CheckpointSource


def write_sharded(folder, *, links_into=None):
    """Two shards and their index.

    With ``links_into``, the shards are symlinks into that blob store, as in the Hub cache.
    """
    folder.mkdir(parents=True)
    tensors = {"a.weight": torch.randn(4, 3), "b.weight": torch.randn(3, 5)}
    for number, (name, tensor) in enumerate(tensors.items(), start=1):
        file_name = f"model-0000{number}-of-00002.safetensors"
        target = folder / file_name
        if links_into is not None:
            links_into.mkdir(parents=True, exist_ok=True)
            target = links_into / f"blob{number}"
            (folder / file_name).symlink_to(target)
        save_file({name: tensor}, target)
    weight_map = {"a.weight": "model-00001-of-00002.safetensors", "b.weight": "model-00002-of-00002.safetensors"}
    (folder / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    return folder, tensors


def test_shards_that_are_symlinks_into_a_blob_store_are_read(tmp_path):
    folder, tensors = write_sharded(tmp_path / "snapshots" / "abc123", links_into=tmp_path / "blobs")
    source = CheckpointSource(folder)
    assert set(source.tensors) == set(tensors)
    assert torch.equal(source.load_rows("b.weight", 0, 3), tensors["b.weight"].double())


@pytest.mark.parametrize(
    ("index", "message"),
    [
        ("[]", r"not a valid safetensors index \(AttributeError\)"),
        (
            '{"weight_map": ["a"]}',
            r"not a valid safetensors index \(weight_map must map tensor names to shard file names\)",
        ),
        (
            '{"weight_map": {}}',
            r"not a valid safetensors index \(weight_map must map tensor names to shard file names\)",
        ),
        (
            '{"weight_map": {"a.weight": 7}}',
            "tensor 'a.weight' is mapped to 7, which is not a file name in the index's folder",
        ),
        (
            '{"weight_map": {"a.weight": "../outside.safetensors"}}',
            "tensor 'a.weight' is mapped to '../outside.safetensors', which is not a file name",
        ),
        (
            '{"weight_map": {"a.weight": "/etc/passwd"}}',
            "tensor 'a.weight' is mapped to '/etc/passwd', which is not a file name",
        ),
        ('{"weight_map": {"a.weight": "gone.safetensors"}}', "shard gone.safetensors named in the index is missing"),
        ("\\xff", r"not a valid safetensors index \(JSONDecodeError\)"),
    ],
)
def test_a_malformed_index_is_one_line_naming_it(tmp_path, index, message):
    folder, _ = write_sharded(tmp_path / "m")
    (folder / "model.safetensors.index.json").write_text(index)
    with pytest.raises(FormatError, match=f"model.safetensors.index.json: {message}"):
        CheckpointSource(folder)
