r"""Eigenvalue density by stochastic Lanczos quadrature (SLQ).

Ghorbani, Krishnan & Xiao 2019 ("An Investigation into Neural Net Optimization via Hessian
Eigenvalue Density", §2 and Alg. 1), after Golub & Meurant and Lin, Saad & Yang 2016. The spectral
density :math:`\phi(t)=\frac1n\sum_i\delta(t-\lambda_i)` is estimated from probes :math:`v` with
:math:`\|v\|=1` and :math:`\mathbb{E}[vv^\top]=I/n`: for each probe, :math:`m` Lanczos steps give
:math:`T_m=S\,\operatorname{diag}(\theta)\,S^\top`, and the Gauss quadrature with nodes
:math:`\theta_i` and weights :math:`\tau_i=S_{1i}^2` is exact for polynomials of degree up to
:math:`2m-1`:

.. math::

    v^\top f(H) v \approx \sum_{i=1}^m \tau_i f(\theta_i), \qquad
    \hat\phi_\sigma(t) = \frac1{P}\sum_{p=1}^P\sum_{i=1}^m \tau^{(p)}_i\,
    g_\sigma\big(t-\theta^{(p)}_i\big),

with :math:`g_\sigma` a Gaussian. Defaults as in Ghorbani et al.: 90 steps, 10 probes.

Two choices differ from PyHessian's port of it, on purpose:

- **The smoothing width is relative**: :math:`\sigma = \text{sigma\_rel}\cdot(\theta_{max}-
  \theta_{min})`, not a fixed variance of :math:`10^{-5}\max(1,\text{range})`, so a rescaled
  loss gives a rescaled density of the same shape.
- **The spectral bounds are read off the Ritz values** (the extreme Ritz values of the probes
  converge first), with no separate eigenvalue solver spent on them first.

All probes advance together (one :meth:`matmat` per step, so each batch's graph is built once per
step for all probes). With ``reorthogonalize=True`` each probe's basis is kept and every new vector
is orthogonalised against it (memory probes × steps × n doubles); without, the O(n)-memory
three-term recurrence is used, which is fine for the density (ghost eigenvalues carry the
quadrature weight of the eigenvalue they copy) though not for top-k eigenvalues.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from scipy.integrate import trapezoid

from landscape_cli.hessian.trace import rademacher
from landscape_cli.hessian.types import DensityResult


def slq_nodes(
    op,
    *,
    probes: int = 10,
    steps: int = 90,
    generator: torch.Generator | None = None,
    seed: int = 0,
    reorthogonalize: bool | None = None,
    memory_budget: int = 1024**3,
) -> tuple[np.ndarray, np.ndarray, int]:
    """Gauss-quadrature nodes and weights (probes, steps) of SLQ; returns (nodes, weights, hvps).

    Probes are normalised Rademacher vectors. A probe whose recurrence breaks down early (an
    invariant subspace, e.g. when ``steps`` reaches ``n``) keeps its exact nodes and pads the
    rest with zero-weight copies of its last node.
    """
    gen = generator if generator is not None else torch.Generator().manual_seed(seed)
    n = int(op.n)
    m = max(1, min(int(steps), n))
    P = max(1, int(probes))
    if reorthogonalize is None:
        reorthogonalize = P * m * n * 8 <= memory_budget
    V = rademacher(n, P, gen).to(op.device) / math.sqrt(n)  # (n, P), unit columns
    basis = None
    if reorthogonalize:
        basis = torch.zeros(m, n, P, dtype=torch.float64, device=op.device)
        basis[0] = V
    alpha = np.zeros((P, m))
    beta = np.zeros((P, m))
    alive = np.ones(P, dtype=bool)
    length = np.full(P, m)
    prev = torch.zeros_like(V)
    hvps = 0
    for j in range(m):
        W = op.matmat(V)
        hvps += P
        a = (V * W).sum(0)
        W = W - V * a - prev * torch.as_tensor(beta[:, j - 1] if j else 0.0, device=V.device)
        if basis is not None:
            B = basis[: j + 1]
            for _ in range(2):
                W = W - (B * torch.einsum("jnp,np->jp", B, W)[:, None, :]).sum(0)
        b = W.norm(dim=0)
        alpha[:, j] = a.cpu().numpy()
        beta[:, j] = b.cpu().numpy()
        if j == m - 1:
            break
        scale = np.maximum(np.abs(alpha[:, : j + 1]).max(1), 1e-300)
        ended = alive & (beta[:, j] <= 1e-10 * scale)
        length[ended] = j + 1
        alive &= ~ended
        if not alive.any():
            break
        safe = torch.where(b > 0, b, torch.ones_like(b))
        prev, V = V, W / safe
        V[:, torch.as_tensor(~alive, device=V.device)] = 0.0
        if basis is not None:
            basis[j + 1] = V

    nodes = np.zeros((P, m))
    weights = np.zeros((P, m))
    for p in range(P):
        L = int(length[p])
        T = np.diag(alpha[p, :L])
        if L > 1:
            off = beta[p, : L - 1]
            T += np.diag(off, 1) + np.diag(off, -1)
        theta, S = np.linalg.eigh(T)
        nodes[p, :L] = theta
        weights[p, :L] = S[0, :] ** 2
        nodes[p, L:] = theta[-1]
    return nodes, weights, hvps


def smooth_density(
    nodes: np.ndarray,
    weights: np.ndarray,
    *,
    sigma_rel: float = 0.005,
    grid_points: int = 2000,
) -> tuple[np.ndarray, np.ndarray, float]:
    """Gaussian-smoothed SLQ density on a grid spanning the nodes ±4σ; integrates to 1."""
    lo, hi = float(nodes.min()), float(nodes.max())
    spread = hi - lo
    if spread <= 0:
        spread = max(abs(hi), 1.0)
    sigma = sigma_rel * spread
    grid = np.linspace(lo - 4 * sigma, hi + 4 * sigma, grid_points)
    dens = np.zeros_like(grid)
    P = nodes.shape[0]
    for p in range(P):
        for theta, tau in zip(nodes[p], weights[p], strict=True):
            if tau > 0:
                dens += tau * np.exp(-0.5 * ((grid - theta) / sigma) ** 2)
    dens /= P * sigma * math.sqrt(2 * math.pi)
    dens /= trapezoid(dens, grid)
    return grid, dens, sigma


def slq_density(
    op,
    *,
    probes: int = 10,
    steps: int = 90,
    generator: torch.Generator | None = None,
    seed: int = 0,
    sigma_rel: float = 0.005,
    grid_points: int = 2000,
    reorthogonalize: bool | None = None,
) -> DensityResult:
    """The SLQ eigenvalue density of ``op`` (see module docstring)."""
    nodes, weights, hvps = slq_nodes(
        op,
        probes=probes,
        steps=steps,
        generator=generator,
        seed=seed,
        reorthogonalize=reorthogonalize,
    )
    grid, dens, sigma = smooth_density(nodes, weights, sigma_rel=sigma_rel, grid_points=grid_points)
    return DensityResult(
        grid=grid,
        density=dens,
        nodes=nodes,
        weights=weights,
        sigma=sigma,
        lanczos_steps=nodes.shape[1],
        probes=nodes.shape[0],
        hvp_count=hvps,
    )
