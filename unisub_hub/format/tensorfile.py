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
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save

from ..errors import FormatError

__all__ = ["canonical_bytes", "content_id", "open_tensor_file", "read_header", "read_tensors", "write_tensor_file"]

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


TORCH_DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16, "I64": torch.int64,
                "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8, "BOOL": torch.bool, "U16": torch.uint16,
                "U32": torch.uint32, "U64": torch.uint64, "F8_E4M3": torch.float8_e4m3fn, "F8_E5M2": torch.float8_e5m2}

DTYPE_SIZES = {name: dtype.itemsize for name, dtype in TORCH_DTYPES.items()}


def read_header(path: Path) -> dict:
    """The JSON header of a safetensors file, checked entry by entry against the file's real size.

    Every tensor entry must have a known dtype, a shape of non-negative integers and
    ``data_offsets`` that match its byte size; entries must tile the data section exactly.
    This catches truncated files and headers that lie before any tensor is read.

    Raises:
        FormatError: naming the file and the first problem found.
    """
    size = path.stat().st_size
    with path.open("rb") as handle:
        prefix = handle.read(8)
        length = _header_length(prefix, size, path)
        return _parse_header(handle.read(length), size, path)


def read_tensors(path: Path, keys: Iterable[str]) -> dict[str, torch.Tensor]:
    """Tensors of a small safetensors file, read with one ``read`` and handed out as views.

    ``safe_open`` pays tens of microseconds per tensor; an adapter with hundreds of small
    factors read on every pass of a build spends more time there than in the math. The
    header is checked as in :func:`read_header` (offsets tile the data exactly), so every
    view lies inside the buffer. The tensors share one writable buffer owned by no one else.

    Raises:
        FormatError: naming the file: a bad header, or a key the file does not hold.
    """
    size = path.stat().st_size
    buffer = bytearray(size)
    with path.open("rb") as handle:
        if handle.readinto(buffer) != size:
            raise FormatError("the file changed size while being read", path=path)
    length = _header_length(bytes(buffer[:8]), size, path)
    header = _parse_header(bytes(buffer[8 : 8 + length]), size, path)
    data = torch.frombuffer(buffer, dtype=torch.uint8)[8 + length :] if size > 8 + length else torch.empty(0, dtype=torch.uint8)
    out = {}
    for key in keys:
        entry = header.get(key)
        if key == "__metadata__" or entry is None:
            raise FormatError(f"no tensor {key!r} in the file", path=path)
        start, stop = entry["data_offsets"]
        out[key] = data[start:stop].view(TORCH_DTYPES[entry["dtype"]]).reshape(entry["shape"])
    return out


def _header_length(prefix: bytes, size: int, path: Path) -> int:
    if len(prefix) < 8:
        raise FormatError("not a safetensors file (shorter than 8 bytes)", path=path)
    (length,) = struct.unpack("<Q", prefix)
    if length > size - 8:
        raise FormatError(f"header claims {length} bytes but the file has {size - 8} after the prefix (truncated?)", path=path)
    return length


def _parse_header(text: bytes, size: int, path: Path) -> dict:
    try:
        header = json.loads(text)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise FormatError(f"safetensors header is not valid JSON ({error.__class__.__name__})", path=path) from None
    if not isinstance(header, dict):
        raise FormatError("safetensors header is not a JSON object", path=path)
    metadata = header.get("__metadata__")
    if metadata is not None and not (isinstance(metadata, dict) and all(isinstance(v, str) for v in metadata.values())):
        raise FormatError("safetensors __metadata__ must map strings to strings", path=path)
    spans = []
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        spans.append((*_entry_span(name, entry, path), name))
    spans.sort()
    position = 0
    for start, stop, name in spans:
        if start != position:
            raise FormatError(f"tensor {name!r} starts at byte {start} of the data, expected {position} (overlapping or gapped offsets)", path=path)
        position = stop
    if 8 + len(text) + position != size:
        raise FormatError(f"tensor data should end at byte {8 + len(text) + position} but the file has {size} bytes (truncated or padded)", path=path)
    return header


def _entry_span(name: str, entry: object, path: Path) -> tuple[int, int]:
    if not isinstance(entry, dict):
        raise FormatError(f"header entry for {name!r} is not an object", path=path)
    dtype, shape, offsets = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
    if not isinstance(dtype, str) or dtype not in DTYPE_SIZES:
        raise FormatError(f"tensor {name!r} has unknown dtype {dtype!r}", path=path)
    if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape):
        raise FormatError(f"tensor {name!r} has an invalid shape {shape!r}", path=path)
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(isinstance(o, int) and not isinstance(o, bool) for o in offsets)):
        raise FormatError(f"tensor {name!r} has invalid data_offsets {offsets!r}", path=path)
    start, stop = offsets
    count = 1
    for d in shape:
        count *= d
    if start < 0 or stop - start != count * DTYPE_SIZES[dtype]:
        raise FormatError(f"tensor {name!r}: data_offsets {offsets} hold {stop - start} bytes, its shape and dtype need {count * DTYPE_SIZES[dtype]}", path=path)
    return start, stop


@contextmanager
def open_tensor_file(path: Path, device: str = "cpu") -> Iterator[Any]:
    """``safe_open`` whose errors (corrupt data, bad header) become :class:`FormatError` naming the file."""
    try:
        with safe_open(path, framework="pt", device=device) as handle:
            yield handle
    except SafetensorError as error:
        raise FormatError(f"cannot read tensors ({str(error).splitlines()[0] if str(error) else 'corrupt file'})", path=path) from None


def content_id(files: Iterable[Path]) -> str:
    """``sha256:<hex>`` over the bytes of the tensor files, concatenated in sorted file-name order."""
    digest = hashlib.sha256()
    for path in sorted(files, key=lambda p: p.name):
        with path.open("rb") as handle:
            while chunk := handle.read(_HASH_CHUNK):
                digest.update(chunk)
    return f"sha256:{digest.hexdigest()}"
