"""safetensors files with deterministic bytes, and the content id computed over them.

safetensors writes ``__metadata__`` in hash-map order, so the same tensors can give
different bytes from one run to the next. A content id over file bytes needs a canonical
file, so after safetensors has written the tensors the header is re-serialised with sorted
keys (the data section is untouched). Any safetensors reader opens the result.
"""

from __future__ import annotations

import hashlib
import json
import struct
from collections.abc import Iterable, Mapping
from pathlib import Path

import torch
from safetensors.torch import save

from ..errors import FormatError

__all__ = ["canonical_bytes", "content_id", "read_header", "write_tensor_file"]

_HASH_CHUNK = 1 << 22


def canonical_bytes(tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str]) -> bytes:
    """safetensors bytes of ``tensors`` with a header in sorted-key JSON (byte-for-byte reproducible)."""
    raw = save({name: t.contiguous() for name, t in tensors.items()}, metadata=dict(metadata))
    (length,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + length])
    text = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + raw[8 + length :]


def write_tensor_file(path: Path, tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str]) -> int:
    """Write one canonical safetensors file; returns its size in bytes."""
    data = canonical_bytes(tensors, metadata)
    path.write_bytes(data)
    return len(data)


def read_header(path: Path) -> dict:
    """The JSON header of a safetensors file, checked against the file's real size.

    Raises:
        FormatError: the file is shorter than its header says, or the header is not JSON.
    """
    size = path.stat().st_size
    with path.open("rb") as handle:
        prefix = handle.read(8)
        if len(prefix) < 8:
            raise FormatError("not a safetensors file (shorter than 8 bytes)", path=path)
        (length,) = struct.unpack("<Q", prefix)
        if length > size - 8:
            raise FormatError(f"header claims {length} bytes but the file has {size - 8} after the prefix (truncated?)", path=path)
        try:
            header = json.loads(handle.read(length))
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise FormatError(f"safetensors header is not valid JSON ({error.__class__.__name__})", path=path) from None
    if not isinstance(header, dict):
        raise FormatError("safetensors header is not a JSON object", path=path)
    end = max((entry["data_offsets"][1] for key, entry in header.items() if key != "__metadata__" and _is_entry(entry)), default=0)
    if 8 + length + end != size:
        raise FormatError(f"tensor data should end at byte {8 + length + end} but the file has {size} bytes (truncated or padded)", path=path)
    return header


def _is_entry(entry: object) -> bool:
    return isinstance(entry, dict) and isinstance(entry.get("data_offsets"), list) and len(entry["data_offsets"]) == 2


def content_id(files: Iterable[Path]) -> str:
    """``sha256:<hex>`` over the bytes of the tensor files, concatenated in sorted file-name order."""
    digest = hashlib.sha256()
    for path in sorted(files, key=lambda p: p.name):
        with path.open("rb") as handle:
            while chunk := handle.read(_HASH_CHUNK):
                digest.update(chunk)
    return f"sha256:{digest.hexdigest()}"
