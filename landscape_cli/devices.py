"""Which torch device a command runs on (``--device auto|cpu|cuda|cuda:N``)."""

from __future__ import annotations

import torch

from landscape_cli.errors import LandscapeError


def resolve_device(device: str) -> torch.device:
    """``auto`` is the first CUDA device when there is one, else the CPU.

    Any other name must be a torch device that exists here (one :class:`LandscapeError` line
    otherwise).
    """
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise LandscapeError(f"unknown device {device!r}: use auto, cpu, cuda or cuda:N") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise LandscapeError("`device='cuda'` asked for, but no CUDA device is available")
    return dev
