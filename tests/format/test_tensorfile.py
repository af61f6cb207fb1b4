"""Reading safetensors files through the library: bit-exact, and every bad header refused in one line."""

from __future__ import annotations

import json
import struct

import pytest
import torch
from safetensors.torch import load_file, save_file

from unisub_hub.errors import FormatError
from unisub_hub.format.dtypes import TORCH_DTYPES
from unisub_hub.format.tensorfile import parse_bytes, read_header, read_tensors


def test_every_dtype_reads_bit_exact_as_safetensors_does(tmp_path):
    gen = torch.Generator().manual_seed(0)
    tensors = {
        f"t.{dtype}": (torch.randn(3, 5, generator=gen) * 4).to(dtype)
        for dtype in set(TORCH_DTYPES.values())
        if dtype.is_floating_point
    }
    tensors["ints"] = torch.arange(-6, 6, dtype=torch.int64).reshape(2, 2, 3)
    tensors["mask"] = torch.tensor([True, False, True])
    tensors["empty"] = torch.zeros(0, 4)
    tensors["scalar"] = torch.tensor(2.5)
    path = tmp_path / "a.safetensors"
    save_file(tensors, path, metadata={"format": "pt"})
    expected = load_file(path)
    found = read_tensors(path, list(tensors))
    header, in_memory = parse_bytes(path.read_bytes(), path)
    for name, tensor in expected.items():
        for read in (found[name], in_memory[name]):
            assert read.dtype == tensor.dtype and read.shape == tensor.shape
            assert read.reshape(-1).view(torch.uint8).tolist() == tensor.reshape(-1).view(torch.uint8).tolist()
    assert header == read_header(path)


def test_missing_key_and_truncation_name_the_file(tmp_path):
    path = tmp_path / "a.safetensors"
    save_file({"x": torch.ones(64, 64)}, path)
    with pytest.raises(FormatError, match="a.safetensors.*no tensor 'y'"):
        read_tensors(path, ["y"])
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(FormatError, match="truncated"):
        read_tensors(path, ["x"])
    with pytest.raises(FormatError, match="a.safetensors.*truncated"):
        parse_bytes(path.read_bytes(), path)


def _raw_file(path, header: bytes, data: bytes) -> None:
    path.write_bytes(struct.pack("<Q", len(header)) + header + data)


def test_a_valid_file_with_unaligned_offsets_reads_as_safetensors_reads_it(tmp_path):
    path = tmp_path / "odd.safetensors"
    values = torch.tensor([1.5, -2.25], dtype=torch.float32)
    header = json.dumps(
        {
            "b": {"dtype": "U8", "shape": [3], "data_offsets": [0, 3]},
            "f": {"dtype": "F32", "shape": [2], "data_offsets": [3, 11]},
        }
    ).encode()
    _raw_file(path, header, bytes([7, 8, 9]) + values.numpy().tobytes())
    found = read_tensors(path, ["b", "f"])
    assert found["f"].tolist() == [1.5, -2.25] and found["b"].tolist() == [7, 8, 9]
    assert read_header(path)["f"] == parse_bytes(path.read_bytes(), path)[0]["f"] == {"dtype": "F32", "shape": [2]}


def test_a_huge_header_claim_is_refused_without_reading_it(tmp_path):
    path = tmp_path / "sparse.safetensors"
    with path.open("wb") as handle:
        handle.write(struct.pack("<Q", 1_500_000_000))
        handle.truncate(1_500_000_100)  # sparse: no disk, and a reader that trusts the length would allocate 1.5 GB
    with pytest.raises(FormatError, match="sparse.safetensors.*header too large"):
        read_header(path)


def test_a_deeply_nested_header_is_refused_in_one_line(tmp_path):
    path = tmp_path / "deep.safetensors"
    _raw_file(path, b'{"x":' + b"[" * 200_000 + b"]" * 200_000 + b"}", b"")
    with pytest.raises(FormatError, match="deep.safetensors"):
        read_header(path)
    with pytest.raises(FormatError, match="deep.safetensors"):
        parse_bytes(path.read_bytes(), path)
