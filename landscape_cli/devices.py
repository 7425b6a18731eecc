"""Which torch device a command runs on (``--device auto|cpu|cuda|cuda:N``)."""

from __future__ import annotations

import torch

from landscape_cli.errors import LandscapeError


def resolve_device(device: str) -> torch.device:
    """``auto`` is the first CUDA device when there is one, else the CPU.

    Any other name must be a device that computes and exists here: ``cpu``, ``cuda`` or
    ``cuda:N`` (N below the number of CUDA devices), or ``mps`` where it is available (one
    :class:`LandscapeError` line otherwise). ``meta`` holds shapes, not numbers, and is refused
    like any other device type.
    """
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device) if isinstance(device, str) else torch.device(str(device))
    except (RuntimeError, ValueError, TypeError):
        raise LandscapeError(f"unknown device {device!r}: use auto, cpu, cuda or cuda:N") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise LandscapeError("`device='cuda'` asked for, but no CUDA device is available")
        count = torch.cuda.device_count()
        if dev.index is not None and dev.index >= count:
            raise LandscapeError(
                f"`device={device!r}` does not exist: this machine has {count} CUDA device(s), "
                f"cuda:0 to cuda:{count - 1}"
            )
        return dev
    if dev.type == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise LandscapeError("`device='mps'` asked for, but no MPS device is available")
        return dev
    if dev.type == "cpu" and dev.index in (None, 0):
        return dev
    raise LandscapeError(f"unknown device {device!r}: use auto, cpu, cuda or cuda:N")
