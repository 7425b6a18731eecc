"""Running on several processes with ``torchrun`` (torch.distributed), one machine or many.

``torchrun --nproc-per-node N -m landscape_cli hessian|scan|audit ...`` starts N copies of the
command. Each rank loads the same checkpoint and the same ordered sample set, then:

- **Hessian-vector products and losses** are computed on a disjoint shard of the batches
  (batch ``b`` belongs to rank ``b mod N``), weighted by the *global* sample count, and summed
  across ranks (reduced to rank 0 and broadcast, so every rank holds bit-identical vectors and the
  replicated Lanczos/trace/SLQ iterations, whose random probes follow from the same seed on every
  rank, take identical decisions). The result equals the single-process run up to floating-point
  summation order.
- **Scans** distribute grid points (each rank evaluates whole points on the full sample set, rank 0
  gathers and records them) when at least N points are missing, and otherwise shard the samples of
  each point. Points need no communication while they are computed, so that is the cheaper split
  whenever there are enough points; the journal and results file make resume independent of the
  world size.
- Only rank 0 writes results files and prints; other ranks are silent.

The backend is NCCL when the processes use CUDA devices and Gloo on the CPU; with CUDA each rank
takes the device ``cuda:LOCAL_RANK``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import torch
import torch.distributed as dist


def active() -> bool:
    """Whether a process group of more than one process is running."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    """This process's rank (0 without a process group)."""
    return dist.get_rank() if active() else 0


def world() -> int:
    """The number of processes (1 without a process group)."""
    return dist.get_world_size() if active() else 1


def is_main() -> bool:
    """Whether this is the main process (rank 0)."""
    return rank() == 0


def launched() -> bool:
    """True inside a process started by torchrun with more than one process."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init(device: str = "auto") -> None:
    """Join the process group torchrun set up (NCCL with CUDA devices, Gloo otherwise)."""
    if not launched() or (dist.is_available() and dist.is_initialized()):
        return
    use_cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
    if use_cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend="nccl" if use_cuda else "gloo")


def local_device(device: torch.device) -> torch.device:
    """Under torchrun with CUDA, this rank's GPU; otherwise ``device`` unchanged."""
    if active() and device.type == "cuda":
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return device


def shard(items: list) -> list:
    """This rank's share of ``items`` (every world-th item, starting at its rank)."""
    return items[rank() :: world()] if active() else items


def sum_(tensor: torch.Tensor) -> torch.Tensor:
    """Sum ``tensor`` over the ranks; every rank gets rank 0's bits of the result."""
    if active():
        dist.reduce(tensor, dst=0)
        dist.broadcast(tensor, src=0)
    return tensor


def sum_floats(*values: float) -> list[float]:
    """The sums of ``values`` over all processes, as float64."""
    t = torch.tensor(values, dtype=torch.float64)
    if active() and dist.get_backend() == "nccl":
        t = t.cuda()
    return sum_(t).cpu().tolist()


def on_main(fn: Callable[[], Any]) -> Any:
    """Run ``fn`` on rank 0 only and give every rank its result, or raise its error everywhere.

    Errors travel as (type name, message): a :class:`LandscapeError` on rank 0 is raised on every
    rank, so all of them stop together instead of waiting on each other.
    """
    if not active():
        return fn()
    box: list[Any] = [None]
    if is_main():
        try:
            box[0] = ("ok", fn())
        except Exception as exc:  # re-raised below on every rank
            box[0] = ("error", exc)
    dist.broadcast_object_list(box, src=0)
    status, value = box[0]
    if status == "error":
        raise value
    return value


def gather_rows(rows: list[tuple[int, int, float, float]]) -> list[tuple[int, int, float, float]]:
    """All ranks' ``(i, j, loss, accuracy)`` rows, on every rank, in rank order."""
    if not active():
        return rows
    out: list[Any] = [None] * world()
    dist.all_gather_object(out, rows)
    return [r for part in out for r in part]


def barrier() -> None:
    """Wait for every process (nothing without a process group)."""
    if active():
        dist.barrier()
