r"""Curvature of each parameter's diagonal Hessian block :math:`H_{bb}`.

For every parameter tensor :math:`b` (a slice of θ), λmax of :math:`H_{bb}` by Lanczos with full
reorthogonalisation (one single-vector :class:`~landscape_cli.hessian.lanczos.BlockLanczos` per
block, breakdown ending the block exactly) and its trace by Hutchinson. All blocks advance together:
one :meth:`matmat` per Lanczos step carries one vector per block (zero outside its block), so
each batch's graph is built once per step for all blocks. The trace uses shared Rademacher probes
:math:`z` over all parameters: :math:`z_b^\top (Hz)_b` is an unbiased sample of
:math:`\operatorname{tr}H_{bb}` (the cross-block terms have mean zero), so ``probes`` HVPs give
every block's trace at once. Cost: ``steps`` × (number of blocks) + ``probes`` HVPs.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from landscape_cli.hessian.lanczos import BlockLanczos
from landscape_cli.hessian.protocol import BlockOperator
from landscape_cli.hessian.sampling import rademacher, random_unit
from landscape_cli.hessian.types import LayerCurvature


def per_layer_curvature(
    op: BlockOperator,
    *,
    generator: torch.Generator,
    steps: int = 20,
    probes: int = 20,
) -> tuple[tuple[LayerCurvature, ...], int]:
    """λmax (with residual) and trace (with stderr) of each block; returns (layers, hvps).

    Args:
        op: The operator and its parameter blocks (``blocks()``).
        generator: The random stream: each block's Lanczos start vector (uniform on its
            sphere, in block order), then the shared Rademacher probes.
        steps: Lanczos steps per block (at most its size).
        probes: Rademacher probes for the traces.
    """
    blocks = op.blocks()
    length = [min(steps, stop - start) for _, start, stop in blocks]
    chains = [
        BlockLanczos(
            random_unit(stop - start, generator, op.device)[:, None], capacity=L, grow=False
        )
        for (_, start, stop), L in zip(blocks, length, strict=True)
    ]
    hvps = 0
    for j in range(max(length)):
        active = [b for b, c in enumerate(chains) if j < length[b] and c.width]
        if not active:
            break
        V = torch.zeros(op.n, len(active), dtype=torch.float64, device=op.device)
        for c, b in enumerate(active):
            _, start, stop = blocks[b]
            V[start:stop, c] = chains[b].V[:, 0]
        W = op.matmat(V)
        hvps += len(active)
        for c, b in enumerate(active):
            _, start, stop = blocks[b]
            chains[b].absorb(W[start:stop, c : c + 1])
            if j + 1 < length[b]:
                chains[b].advance()  # an invariant subspace ends the block: λmax is exact

    Z = rademacher(op.n, probes, generator).to(op.device)
    HZ = op.matmat(Z)
    hvps += probes
    out = []
    for chain, (name, start, stop) in zip(chains, blocks, strict=True):
        theta, S = np.linalg.eigh(chain.T())
        res = float(chain.residual_norms(S)[-1])  # ‖H_bb y − θ y‖ of the top Ritz pair
        samples = (Z[start:stop] * HZ[start:stop]).sum(0).cpu().numpy()
        stderr = float(samples.std(ddof=1) / math.sqrt(len(samples))) if probes > 1 else math.inf
        out.append(
            LayerCurvature(
                name=name,
                numel=stop - start,
                lambda_max=float(theta[-1]),
                lambda_max_residual=float(res),
                trace=float(samples.mean()),
                trace_stderr=stderr,
            )
        )
    return tuple(out), hvps
