"""Hugging Face-style sharded tensor files, written one shard at a time.

Tensors are buffered until the next one would push the shard past ``shard_size`` bytes;
the shard is then written and dropped from memory. At ``close`` the files get their final
names (``<stem>.safetensors``, or ``<stem>-0000i-of-0000N.safetensors`` plus
``<stem>.safetensors.index.json``), as ``transformers`` and ``peft`` expect.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path

import torch

from .tensorfile import write_tensor_file

__all__ = ["ShardWriter"]


class ShardWriter:
    """Write tensors into shards of at most ``shard_size`` bytes (a single larger tensor gets its own).

    Args:
        folder: where the files go (normally a temporary folder renamed into place later).
        stem: ``model``, ``basis``, ``coefficients``, ...
        shard_size: bytes per shard.
        metadata: safetensors ``__metadata__`` of every file (strings only).

    Example:
        >>> writer = ShardWriter(folder, "model", 5 * 1024**3, {"format": "pt"})
        >>> writer.add("lm_head.weight", tensor)
        >>> files = writer.close()
    """

    def __init__(self, folder: Path, stem: str, shard_size: int, metadata: Mapping[str, str]) -> None:
        if shard_size < 1:
            raise ValueError(f"shard size must be a positive number of bytes, got {shard_size}")
        self.folder, self.stem, self.shard_size, self.metadata = Path(folder), stem, shard_size, dict(metadata)
        self._buffer: dict[str, torch.Tensor] = {}
        self._buffered = 0
        self._parts: list[tuple[Path, list[str]]] = []
        self.total_size = 0

    def add(self, name: str, tensor: torch.Tensor) -> None:
        size = tensor.numel() * tensor.element_size()
        if self._buffer and self._buffered + size > self.shard_size:
            self._flush()
        self._buffer[name] = tensor.detach().to("cpu").contiguous()
        self._buffered += size
        self.total_size += size

    def _flush(self) -> None:
        part = self.folder / f".{self.stem}-part{len(self._parts) + 1}.safetensors"
        write_tensor_file(part, self._buffer, self.metadata)
        self._parts.append((part, list(self._buffer)))
        self._buffer, self._buffered = {}, 0

    def close(self) -> list[str]:
        """Write what is buffered, give the files their final names; returns those names."""
        if self._buffer or not self._parts:
            self._flush()
        if len(self._parts) == 1:
            final = f"{self.stem}.safetensors"
            os.replace(self._parts[0][0], self.folder / final)
            return [final]
        count = len(self._parts)
        names, weight_map = [], {}
        for number, (part, tensor_names) in enumerate(self._parts, 1):
            final = f"{self.stem}-{number:05d}-of-{count:05d}.safetensors"
            os.replace(part, self.folder / final)
            names.append(final)
            weight_map.update({tensor_name: final for tensor_name in tensor_names})
        index = {"metadata": {"total_size": self.total_size}, "weight_map": dict(sorted(weight_map.items()))}
        (self.folder / f"{self.stem}.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n")
        return names
