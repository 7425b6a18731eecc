r"""How many vectors one product carries: the block of the probe estimators.

The trace estimators (:mod:`~landscape_cli.hessian.trace`) and SLQ
(:mod:`~landscape_cli.hessian.density`) apply the operator to several probes at once,
``op.matmat(V)`` with V of shape (n, b): each batch's first-order graph is then built (or read
from the cache) once for b vectors instead of b times. Their ``block`` argument is the most
columns one product carries; ``None`` takes :func:`default_block` of the operator's device.

**The rule** (measured with ``benchmarks/batched_products.py``; benchmarks/RESULTS.md, "Batched
products"): on the CPU a product of 8 columns costs per column what a single product costs where
the first-order graphs are kept (1.0–1.1×, within the noise), and 1.5× less where they are
rebuilt for every product (each graph then serves 8 vectors); 16 columns gain nothing
consistent over 8, and 8 is one stopping round of the trace (no product past the stop), so
:data:`CPU_BLOCK` is 8. On CUDA, where one product of a small batch leaves most of the GPU idle,
:data:`CUDA_BLOCK` is 8 as well until a GPU run of ``benchmarks/gpu_check.sh`` measures
otherwise (its "batched products" rows; not yet run).

**Memory caps the block.** Each column of a product holds about four float64 vectors of the
model's size at once (the probe, its product, their copies), so at language-model scale 8
columns are tens of bytes a parameter more than the rest of the run: at 50 M parameters, a trace
with 8 columns per product grew past 20 GB. The default block is therefore also at most
:data:`BLOCK_BYTES` / (32 · n) columns (8 up to n ≈ 8.4 M; 1 from n ≈ 34 M), which changes no
estimate (below).

**Same numbers whatever the block.** The block only groups products: the probes are drawn the
same way and in the same order (trace probes in rounds of :data:`ROUND`, SLQ probes one column
after another) and the stopping rules look at the same rounds, so every estimate is the same
for every block. The products are bitwise the same
(:class:`~landscape_cli.hessian.operator.HessianOperator`'s columns never interact), and so are
the trace's samples; SLQ's nodes and weights agree to float64 rounding (about 1e-15 relative:
the Lanczos recurrence's vector sums are SIMD reductions whose rounding depends on where a
probe's vector sits in memory). Only ``hvp_count`` can differ: a trace whose block spans several
rounds may compute a round past the one it stops at, and counts it (rounds are drawn ahead from
the generator for that product too).
"""

from __future__ import annotations

import torch
from torch import Tensor

from landscape_cli.errors import LandscapeError
from landscape_cli.hessian.protocol import SymmetricOperator

__all__ = ["CPU_BLOCK", "CUDA_BLOCK", "ROUND", "apply_in_blocks", "default_block"]

#: Trace probes per draw and per look at the stopping rule (the estimators' random stream).
ROUND = 8
#: The most columns per product on the CPU (benchmarks/RESULTS.md, "Batched products").
CPU_BLOCK = 8
#: The most columns per product on CUDA; a GPU run of benchmarks/gpu_check.sh confirms it.
CUDA_BLOCK = 8
#: Bytes the columns of one product may hold by default (4 float64 vectors of n per column).
BLOCK_BYTES = 2 * 1024**3


def default_block(device: torch.device | str | None, n: int | None = None) -> int:
    """The most columns per product on ``device`` for an operator of size ``n``.

    :data:`CUDA_BLOCK` on CUDA, else :data:`CPU_BLOCK`, and at most :data:`BLOCK_BYTES` of
    column vectors (4 float64 vectors of ``n`` per column), at least 1.
    """
    kind = torch.device(device).type if device is not None else "cpu"
    most = CUDA_BLOCK if kind == "cuda" else CPU_BLOCK
    if n:
        most = max(1, min(most, BLOCK_BYTES // (4 * 8 * int(n))))
    return most


def resolve_block(op: SymmetricOperator, block: int | None) -> int:
    """``block``, or the default of ``op``'s device and size when it is None; refused below 1."""
    if block is None:
        return default_block(getattr(op, "device", None), getattr(op, "n", None))
    if int(block) < 1:
        raise LandscapeError(f"`block` must be >= 1, got {block}")
    return int(block)


def apply_in_blocks(op: SymmetricOperator, V: Tensor, block: int) -> Tensor:
    """``op.matmat(V)`` in products of at most ``block`` columns, concatenated."""
    k = V.shape[1]
    if k <= block:
        return op.matmat(V)
    return torch.cat([op.matmat(V[:, i : i + block]) for i in range(0, k, block)], 1)
