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
from safetensors.torch import load, save

from ..errors import FormatError

__all__ = [
    "canonical_bytes",
    "SMALL_FILE_BYTES",
    "content_id",
    "open_tensor_file",
    "parse_bytes",
    "read_header",
    "read_tensors",
    "sha256_files",
    "write_tensor_file",
]

_HASH_CHUNK = 1 << 22

SMALL_FILE_BYTES = 1 << 20
"""Tensor files up to this size (a task's coefficients: a few KiB) are read and parsed whole,
once, when their artifact is opened: one read and one parse instead of a file opening per
tensor read, which was most of a server's cold load of a task."""


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
    """The header of a safetensors file: ``{name: {"dtype", "shape"}}`` plus ``__metadata__``.

    The ``safetensors`` library parses and checks it (a header of at most 100 MB, known
    dtypes, offsets that tile the data section up to the file's real size), so a truncated
    file or a header that lies fails here, before any tensor is read.

    Raises:
        FormatError: naming the file and the problem.
    """
    with open_tensor_file(path) as handle:
        header: dict[str, Any] = {"__metadata__": handle.metadata()}
        for name in handle.keys():
            view = handle.get_slice(name)
            header[name] = {"dtype": view.get_dtype(), "shape": list(view.get_shape())}
    if header["__metadata__"] is None:
        del header["__metadata__"]
    return header


def parse_bytes(raw: bytes, path: Path) -> tuple[dict, dict[str, torch.Tensor]]:
    """The header (as :func:`read_header` gives it) and every tensor of a file already read into ``raw``.

    ``safetensors`` checks the bytes as it checks a file it opens (header size, dtypes, offsets
    that tile the data); the header's JSON is read only after that.

    Raises:
        FormatError: naming ``path`` and the problem.
    """
    with _readable(path):
        tensors = load(raw)
    (length,) = struct.unpack("<Q", raw[:8])
    described = json.loads(raw[8 : 8 + length])
    header: dict[str, Any] = {
        name: {"dtype": entry["dtype"], "shape": list(entry["shape"])}
        for name, entry in described.items()
        if name != "__metadata__"
    }
    if described.get("__metadata__") is not None:
        header["__metadata__"] = described["__metadata__"]
    return header, tensors


def read_tensors(path: Path, keys: Iterable[str]) -> dict[str, torch.Tensor]:
    """Tensors ``keys`` of a safetensors file, read on the CPU.

    Raises:
        FormatError: naming the file: a bad header, or a key the file does not hold.
    """
    with open_tensor_file(path) as handle:
        present = set(handle.keys())
        out = {}
        for key in keys:
            if key not in present:
                raise FormatError(f"no tensor {key!r} in the file", path=path)
            out[key] = handle.get_tensor(key)
    return out


@contextmanager
def open_tensor_file(path: Path, device: str = "cpu") -> Iterator[Any]:
    """``safe_open`` whose errors (corrupt data, bad header) become :class:`FormatError` naming the file."""
    with _readable(path), safe_open(path, framework="pt", device=device) as handle:
        yield handle


@contextmanager
def _readable(path: Path) -> Iterator[None]:
    """safetensors' and the file system's errors as one :class:`FormatError` naming ``path``."""
    try:
        yield
    except SafetensorError as error:
        raise FormatError(
            "not a readable safetensors file: truncated, padded or corrupt "
            f"({str(error).splitlines()[0] if str(error) else 'no detail'})",
            path=path,
        ) from None
    except OSError as error:
        raise FormatError(f"cannot open the file ({error.strerror or error})", path=path) from None


def sha256_files(files: Iterable[Path]) -> str:
    """Hex sha256 over the files' bytes, concatenated in sorted file-name order."""
    digest = hashlib.sha256()
    for path in sorted(files, key=lambda p: p.name):
        with path.open("rb") as handle:
            while chunk := handle.read(_HASH_CHUNK):
                digest.update(chunk)
    return digest.hexdigest()


def content_id(files: Iterable[Path]) -> str:
    """``sha256:<hex>`` over the bytes of the tensor files (see :func:`sha256_files`)."""
    return f"sha256:{sha256_files(files)}"
