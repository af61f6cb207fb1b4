"""Reading small safetensors files in one ``read``: bit-exact against safetensors itself."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file, save_file

from unisub_hub.errors import FormatError
from unisub_hub.format.tensorfile import TORCH_DTYPES, read_tensors


def test_every_dtype_reads_bit_exact_as_safetensors_does(tmp_path):
    gen = torch.Generator().manual_seed(0)
    tensors = {f"t.{dtype}": (torch.randn(3, 5, generator=gen) * 4).to(dtype) for dtype in set(TORCH_DTYPES.values()) if dtype.is_floating_point}
    tensors["ints"] = torch.arange(-6, 6, dtype=torch.int64).reshape(2, 2, 3)
    tensors["mask"] = torch.tensor([True, False, True])
    tensors["empty"] = torch.zeros(0, 4)
    tensors["scalar"] = torch.tensor(2.5)
    path = tmp_path / "a.safetensors"
    save_file(tensors, path, metadata={"format": "pt"})
    expected = load_file(path)
    found = read_tensors(path, list(tensors))
    for name, tensor in expected.items():
        assert found[name].dtype == tensor.dtype and found[name].shape == tensor.shape
        assert found[name].reshape(-1).view(torch.uint8).tolist() == tensor.reshape(-1).view(torch.uint8).tolist()


def test_missing_key_and_truncation_name_the_file(tmp_path):
    path = tmp_path / "a.safetensors"
    save_file({"x": torch.ones(64, 64)}, path)
    with pytest.raises(FormatError, match="a.safetensors.*no tensor 'y'"):
        read_tensors(path, ["y"])
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(FormatError, match="truncated"):
        read_tensors(path, ["x"])
