"""Every dtype the format names, in one table: its manifest name, its safetensors code, its torch dtype."""

from __future__ import annotations

import torch

__all__ = ["DTYPE_CODES", "DTYPES", "TORCH_DTYPES", "dtype_name"]

_TABLE: tuple[tuple[str, str, torch.dtype], ...] = (
    ("float64", "F64", torch.float64),
    ("float32", "F32", torch.float32),
    ("float16", "F16", torch.float16),
    ("bfloat16", "BF16", torch.bfloat16),
    ("float8_e4m3fn", "F8_E4M3", torch.float8_e4m3fn),
    ("float8_e5m2", "F8_E5M2", torch.float8_e5m2),
    ("int64", "I64", torch.int64),
    ("int32", "I32", torch.int32),
    ("int16", "I16", torch.int16),
    ("int8", "I8", torch.int8),
    ("uint64", "U64", torch.uint64),
    ("uint32", "U32", torch.uint32),
    ("uint16", "U16", torch.uint16),
    ("uint8", "U8", torch.uint8),
    ("bool", "BOOL", torch.bool),
)

_STORAGE = ("float64", "float32", "float16", "bfloat16")

DTYPES: dict[str, torch.dtype] = {name: dtype for name, _, dtype in _TABLE if name in _STORAGE}
"""The dtypes a basis or coefficient set may store its factors in, by manifest name."""

DTYPE_CODES: dict[str, str] = {name: code for name, code, _ in _TABLE}
"""A manifest's dtype name -> the safetensors header's dtype code."""

TORCH_DTYPES: dict[str, torch.dtype] = {code: dtype for _, code, dtype in _TABLE}
"""A safetensors header's dtype code -> the torch dtype."""


def dtype_name(dtype: torch.dtype) -> str:
    """The manifest name of a torch dtype (``torch.float32`` -> ``float32``)."""
    return next((name for name, _, known in _TABLE if known == dtype), str(dtype).removeprefix("torch."))
