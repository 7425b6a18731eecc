r"""Curvature of each parameter's diagonal Hessian block :math:`H_{bb}`.

For every parameter tensor :math:`b` (a slice of θ), λmax of :math:`H_{bb}` by Lanczos with full
reorthogonalisation and its trace by Hutchinson. All blocks advance together: one
:meth:`matmat` per Lanczos step carries one vector per block (zero outside its block), so each
batch's graph is built once per step for all blocks. The trace uses shared Rademacher probes
:math:`z` over all parameters: :math:`z_b^\top (Hz)_b` is an unbiased sample of
:math:`\operatorname{tr}H_{bb}` (the cross-block terms have mean zero), so ``probes`` HVPs give
every block's trace at once. Cost: ``steps`` × (number of blocks) + ``probes`` HVPs.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from landscape_cli.hessian.trace import rademacher
from landscape_cli.hessian.types import LayerCurvature


def per_layer_curvature(
    op,
    *,
    steps: int = 20,
    probes: int = 20,
    generator: torch.Generator | None = None,
    seed: int = 0,
) -> tuple[tuple[LayerCurvature, ...], int]:
    """λmax (with residual) and trace (with stderr) of each block; returns (layers, hvps)."""
    gen = generator if generator is not None else torch.Generator().manual_seed(seed)
    blocks = op.blocks()
    nb = len(blocks)
    sizes = [stop - start for _, start, stop in blocks]
    length = [min(steps, s) for s in sizes]
    bases = [
        torch.zeros(L, s, dtype=torch.float64, device=op.device)
        for L, s in zip(length, sizes, strict=True)
    ]
    for (_, start, stop), basis in zip(blocks, bases, strict=True):
        v = torch.randn(stop - start, generator=gen, dtype=torch.float64).to(op.device)
        basis[0] = v / v.norm()
    alphas: list[list[float]] = [[] for _ in blocks]
    betas: list[list[float]] = [[] for _ in blocks]
    last_beta = [0.0] * nb
    hvps = 0
    for j in range(max(length)):
        active = [b for b in range(nb) if j < length[b]]
        if not active:
            break
        V = torch.zeros(op.n, len(active), dtype=torch.float64, device=op.device)
        for c, b in enumerate(active):
            _, start, stop = blocks[b]
            V[start:stop, c] = bases[b][j]
        W = op.matmat(V)
        hvps += len(active)
        for c, b in enumerate(active):
            _, start, stop = blocks[b]
            q = bases[b][j]
            w = W[start:stop, c]
            a = float(q @ w)
            w = w - a * q
            if j > 0:
                w = w - betas[b][-1] * bases[b][j - 1]
            B = bases[b][: j + 1]
            for _ in range(2):
                w = w - B.T @ (B @ w)
            beta = float(w.norm())
            alphas[b].append(a)
            last_beta[b] = beta
            scale = max(abs(x) for x in alphas[b]) or 1.0
            if j + 1 < length[b]:
                if beta <= 1e-12 * scale:
                    length[b] = j + 1  # invariant subspace: λmax is exact
                else:
                    betas[b].append(beta)
                    bases[b][j + 1] = w / beta

    Z = rademacher(op.n, probes, gen).to(op.device)
    HZ = op.matmat(Z)
    hvps += probes
    out = []
    for b, (name, start, stop) in enumerate(blocks):
        m = len(alphas[b])
        T = np.diag(alphas[b])
        if m > 1:
            off = np.array(betas[b][: m - 1])
            T += np.diag(off, 1) + np.diag(off, -1)
        theta, S = np.linalg.eigh(T)
        res = abs(last_beta[b] * S[-1, -1])  # ‖H_bb y − θ y‖ of the top Ritz pair
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
