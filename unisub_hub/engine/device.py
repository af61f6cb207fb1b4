"""Choosing the compute device: ``auto`` takes CUDA when present."""

from __future__ import annotations

import torch

from ..errors import DeviceError, option

__all__ = ["resolve_device"]


def resolve_device(device: str | torch.device) -> torch.device:
    """Turn ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"cuda:1"`` into an available device.

    Raises:
        DeviceError: CUDA was asked for and is not available.
    """
    if isinstance(device, torch.device):
        resolved = device
    elif device == "auto":
        resolved = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        try:
            resolved = torch.device(device)
        except RuntimeError as error:
            raise DeviceError(f"unknown device {device!r}: use auto, cpu or cuda") from error
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise DeviceError(
            f"{option('device')} cuda was asked for, but torch sees no CUDA device (use {option('device')} auto or cpu)"
        )
    return resolved
