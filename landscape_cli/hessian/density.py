r"""Eigenvalue density by stochastic Lanczos quadrature (SLQ), with as many probes as it needs.

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

with :math:`g_\sigma` a Gaussian. Ghorbani et al. use 90 steps and 10 probes; here 90 steps and
*as many probes as the density needs*, 10 at most (below).

Two choices differ from PyHessian's port of it, on purpose:

- **The smoothing width is relative**: :math:`\sigma = \text{sigma\_rel}\cdot(\theta_{max}-
  \theta_{min})`, not a fixed variance of :math:`10^{-5}\max(1,\text{range})`, so a rescaled
  loss gives a rescaled density of the same shape.
- **The spectral bounds are read off the Ritz values** (the extreme Ritz values of the probes
  converge first), with no separate eigenvalue solver spent on them first.

**How many probes.** Each probe gives a discrete measure :math:`\mu_p=\sum_i\tau^{(p)}_i
\delta_{\theta^{(p)}_i}` and the estimate is their mean :math:`\hat\mu_P`. Its error is measured
in the Wasserstein-1 distance

.. math::

    W_1(\mu,\nu)=\int|F_\mu(t)-F_\nu(t)|\,dt=\sup_{\|f\|_{\rm Lip}\le1}
    \Big|\int f\,d\mu-\int f\,d\nu\Big|

(Kantorovich–Rubinstein), i.e. the worst error of :math:`\operatorname{tr}f(H)/n` over all
1-Lipschitz :math:`f` at once: the quantity Ubaru, Chen & Saad 2017 ("Fast estimation of
tr(f(A)) via stochastic Lanczos quadrature", SIAM J. Matrix Anal. Appl. 38(4)) bound for one
:math:`f` at a time, uniformly, and one that the Gaussian smoothing cannot increase
(:math:`W_1(g_\sigma*\mu, g_\sigma*\nu)\le W_1(\mu,\nu)`). Their a-priori probe count
(:math:`\ge 24\varepsilon^{-2}\log(2/\eta)` Rademacher probes for relative error
:math:`\varepsilon`) is a worst case; for network Hessians the spectral measure of a single random
vector concentrates around :math:`\phi` as :math:`n` grows (Ghorbani et al. 2019, §2.2: one
probe is already close), so the count is decided a posteriori from the spread of the probes. By
Fubini and Jensen, with :math:`\bar F=\mathbb{E}F_p`,

.. math::

    \mathbb{E}\,W_1(\hat\mu_P,\mathbb{E}\hat\mu_P)
    =\int\mathbb{E}\,|\hat F_P(t)-\bar F(t)|\,dt
    \le\frac{1}{\sqrt P}\int\operatorname{sd}F_p(t)\,dt.

The error is estimated by that bound with the standard deviation replaced by a 95 % upper
confidence limit from the probes' sample standard deviation :math:`s_P(t)`,

.. math::

    \hat\varepsilon_P = \kappa\,\sqrt{\frac{P-1}{\chi^2_{0.05}(P-1)}}\;
    \frac{\int s_P(t)\,dt}{\sqrt P},

(the χ² factor is 15.9 for two probes, 2.9 for four, 1.6 for ten: a spread read off a few
probes says little), and the constant :math:`\kappa` = :data:`CALIBRATION` (1.5) is set so
that on exact Hessians :math:`\hat\varepsilon_P` bounds the actual W1 error from the exact
spectrum in at least 95 % of seeded runs. That actual error includes what the expectation bound
leaves out: the heavy tails of single probes' measures (a probe far off moves a mean of few)
and the quadrature's own error from finite ``steps``, measured to be 100–1000× smaller than
the sampling error on those Hessians. The calibration table, with the cases (MLPs with CE and
MSE, a BatchNorm CNN in eval and train mode, a synthetic spectrum with outliers) and their
coverage, is in benchmarks/RESULTS.md (``benchmarks/density_calibration.py``). Probes are added
(at least ``min_probes`` = 2, at most ``probes``; the next batch's size predicted from
:math:`\hat\varepsilon_P\propto P^{-1/2}`, at most doubling) until
:math:`\hat\varepsilon_P\le\text{tol}\cdot(\theta_{max}-\theta_{min})`; the relative
:math:`\hat\varepsilon_P` reached is reported as ``achieved_tol``. The default tolerance of
``landscape hessian``, :math:`3\cdot10^{-3}` of the spectral range, is below the smoothing width
(:math:`5\cdot10^{-3}`), so below what the plotted density can show.

**Reused work.** The top-k (block) Lanczos run of ``landscape hessian`` starts from a random
orthonormal block whose columns are each uniform on the sphere (so
:math:`\mathbb{E}[q_pq_p^\top]=I/n`, like a normalised Rademacher probe), and its first
:math:`m_0` fully reorthogonalised block steps are exactly those block Lanczos would take from
it. :func:`extend_krylov` continues that run to ``steps`` block steps, and the block's columns
are the first probes (block Gauss quadrature), :math:`m_0` block steps cheaper; its orthonormal
basis (when it fits in ``memory_budget``) also deflates the trace over a ``b·steps``-dimensional
Krylov space instead of the top-k run's (:mod:`landscape_cli.hessian.trace`), which cuts the
trace's variance per probe. The columns of one block are orthogonal, not independent: their
sample spread overstates the error of their mean, so the stopping rule stays on the safe side.

The probes of a batch advance together, each its own single-vector
:class:`~landscape_cli.hessian.lanczos.BlockLanczos` recurrence, with one :meth:`matmat` per step
for all of them (so each batch's graph is built once per step for all of them), at most
``block`` at a time
(:mod:`landscape_cli.hessian.batching`: 8 by default on the CPU and on CUDA); each probe's
recurrence is its own, so the block changes no node or weight. With ``reorthogonalize=True``
each probe's basis is kept and every new vector is orthogonalised against it (memory probes ×
steps × n doubles); without, the O(n)-memory three-term recurrence is used, which is fine for
the density (ghost eigenvalues carry the quadrature weight of the eigenvalue they copy:
Greenbaum 1989) though not for top-k eigenvalues.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
import torch

from landscape_cli.hessian.batching import resolve_block
from landscape_cli.hessian.lanczos import (
    BASIS_BUDGET,
    BlockLanczos,
    KrylovBasis,
    advance_together,
)
from landscape_cli.hessian.protocol import SymmetricOperator
from landscape_cli.hessian.sampling import unit_rademacher
from landscape_cli.hessian.types import DensityResult

_BUDGET = BASIS_BUDGET  # bytes of Lanczos basis kept for reorthogonalisation (one budget)
#: β/max|α| below which an SLQ probe has met an invariant subspace (its quadrature is exact).
_BREAKDOWN = 1e-10


@dataclass(frozen=True)
class KrylovProbe:
    """The first SLQ probes, taken from the top-k Lanczos run's start block.

    ``nodes``/``weights`` (b, L): the Gauss quadrature of each of the run's b start vectors
    (nodes shared, the eigenvalues of the run's T; weights the squared first-block rows of its
    eigenvectors), ``hvps`` the products spent extending the run, ``basis`` the extended
    orthonormal Krylov basis (None when it was not kept, or the run needed no extension).
    """

    nodes: np.ndarray
    weights: np.ndarray
    hvps: int
    basis: KrylovBasis | None


def _trapezoid(y: np.ndarray, x: np.ndarray) -> float:
    """The trapezoid rule (scipy's ``trapezoid``, whose import cost a command 0.3 s to start)."""
    return float(np.sum((y[1:] + y[:-1]) * np.diff(x)) / 2.0)


def extend_krylov(
    op: SymmetricOperator,
    basis: KrylovBasis,
    steps: int,
    *,
    reorthogonalize: bool | None = None,
    memory_budget: int = _BUDGET,
) -> KrylovProbe | None:
    r"""Continue a finished (block) Lanczos run (``lanczos_run``'s basis) to ``steps`` block steps.

    Each column :math:`q_p` of the run's start block is a probe uniform on the sphere
    (:math:`\mathbb{E}[q_pq_p^\top]=I/n`), and block Gauss quadrature (Golub & Meurant,
    *Matrices, Moments and Quadrature*, ch. 7) gives its spectral measure from the block run's
    :math:`T = S\,\mathrm{diag}(\theta)S^\top`: nodes :math:`\theta_i`, weights
    :math:`S_{pi}^2`, exact for polynomials of degree up to :math:`2j-1` after j block steps, as
    single-vector Lanczos is after j steps. So a run of b columns continued to ``steps`` block
    steps yields b probes of the quadrature degree ``steps`` Lanczos steps give, for b × ``steps``
    products in all, the top-k run's included. A run with at least ``steps`` block steps is cut
    to ``steps``; one whose block grew (it met a cluster) is not continued (None): its later
    start vectors were drawn orthogonal to the basis, not uniform on the sphere.

    Args:
        op: The operator the run was made on.
        basis: The run's Krylov basis.
        steps: The block steps each probe should have in all.
        reorthogonalize: Fully reorthogonalise (and return the extended basis); default: when
            ``b × steps × n`` doubles fit in ``memory_budget``, else the block three-term
            recurrence.
        memory_budget: Bytes of basis allowed for the default above.
    """
    n = int(op.n)
    sizes = list(basis.sizes)
    b = sizes[0]
    if any(size > b for size in sizes):
        return None
    target = min(int(steps) * b, n)
    edges = np.cumsum(sizes)
    if edges[-1] >= target or basis.R is None:
        cut = int(edges[np.searchsorted(edges, min(target, edges[-1]))])
        return _probe(basis.T[:cut, :cut], b, 0, None)
    if reorthogonalize is None:
        reorthogonalize = target * n * 8 <= memory_budget
    rec = BlockLanczos.resume(
        replace(basis, R=basis.R.to(op.device), Q=basis.Q.to(op.device)),
        capacity=target,
        reorthogonalize=reorthogonalize,
        breakdown=_BREAKDOWN,
    )
    spent = 0
    while rec.rows < target:
        rec.advance(max(max(float(np.abs(A).max()) for A in rec.A), np.finfo(float).tiny))
        if rec.width == 0:  # an invariant subspace: the measure is exact
            break
        rec.absorb(op.matmat(rec.V))
        spent += rec.sizes[-1]
    extended = None
    if reorthogonalize:
        ritz = np.zeros((rec.rows, basis.ritz.shape[1]))
        ritz[: basis.ritz.shape[0]] = basis.ritz
        extended = rec.krylov_basis(ritz)
    return _probe(rec.T(), b, spent, extended)


def _probe(T: np.ndarray, b: int, hvps: int, basis: KrylovBasis | None) -> KrylovProbe:
    """The b start vectors' quadratures from a block run's ``T``."""
    theta, S = np.linalg.eigh(T)
    nodes = np.repeat(theta[None], b, axis=0)
    return KrylovProbe(nodes, S[:b, :] ** 2, hvps, basis)


def _quadrature(T: np.ndarray, m: int) -> tuple[np.ndarray, np.ndarray]:
    """Gauss nodes and weights of the single-vector run's ``T``, padded to ``m``.

    Padded with zero-weight copies of the last node.
    """
    theta, S = np.linalg.eigh(T)
    L = len(theta)
    nodes, weights = np.full(m, theta[-1]), np.zeros(m)
    nodes[:L] = theta
    weights[:L] = S[0, :] ** 2
    return nodes, weights


def slq_nodes(
    op: SymmetricOperator,
    *,
    generator: torch.Generator,
    probes: int = 10,
    steps: int = 90,
    reorthogonalize: bool | None = None,
    memory_budget: int = _BUDGET,
    block: int | None = None,
) -> tuple[np.ndarray, np.ndarray, int]:
    """Gauss-quadrature nodes and weights (probes, steps) of SLQ; returns (nodes, weights, hvps).

    Each probe runs its own single-vector :class:`~landscape_cli.hessian.lanczos.BlockLanczos`
    recurrence, and the probes of a batch advance together (one ``matmat`` per step,
    :func:`~landscape_cli.hessian.lanczos.advance_together`), ``block`` at a time. A probe whose
    recurrence breaks down early (an invariant subspace, e.g. when ``steps`` reaches ``n``)
    keeps its exact nodes and pads the rest with zero-weight copies of its last node; it takes
    no more products.

    Args:
        op: The symmetric operator.
        generator: The random stream; probes are normalised Rademacher vectors drawn one after
            the other (:func:`~landscape_cli.hessian.sampling.unit_rademacher`), so the p-th
            probe is the same whether the probes come in one batch or several.
        probes: How many probes.
        steps: Lanczos steps per probe (at most ``n``).
        reorthogonalize: Keep each probe's basis and orthogonalise against it; default: when
            ``probes × steps × n`` doubles fit in ``memory_budget``, else the three-term
            recurrence (O(n) memory per probe).
        memory_budget: Bytes of basis allowed for the default above.
        block: The most probes per product (:mod:`~landscape_cli.hessian.batching`; default:
            the operator's device's rule). Changes no node or weight.
    """
    n = int(op.n)
    m = max(1, min(int(steps), n))
    P = max(1, int(probes))
    block = resolve_block(op, block)
    if reorthogonalize is None:
        reorthogonalize = P * m * n * 8 <= memory_budget
    start = unit_rademacher(n, P, generator).to(op.device)
    nodes = np.zeros((P, m))
    weights = np.zeros((P, m))
    hvps = 0
    for first in range(0, P, block):
        columns = [
            BlockLanczos(
                start[:, p : p + 1],
                capacity=m,
                reorthogonalize=reorthogonalize,
                breakdown=_BREAKDOWN,
                grow=False,
            )
            for p in range(first, min(first + block, P))
        ]
        hvps += advance_together(op, columns, m)
        for c, col in enumerate(columns):
            nodes[first + c], weights[first + c] = _quadrature(col.T(), m)
    return nodes, weights, hvps


def _spread(nodes: np.ndarray) -> float:
    """The spectral range θmax − θmin of the nodes (max(|θ|, 1) when they coincide)."""
    lo, hi = float(np.min(nodes)), float(np.max(nodes))
    return hi - lo if hi > lo else max(abs(hi), 1.0)


def _cdfs(nodes: np.ndarray, weights: np.ndarray, at: np.ndarray) -> np.ndarray:
    """Each row's distribution function Σ_{θ ≤ t} τ at the points ``at``: shape (rows, len(at))."""
    nodes, weights = np.atleast_2d(nodes), np.atleast_2d(weights)
    out = np.empty((nodes.shape[0], len(at)))
    for p in range(nodes.shape[0]):
        order = np.argsort(nodes[p], kind="stable")
        cum = np.concatenate([[0.0], np.cumsum(weights[p][order])])
        out[p] = cum[np.searchsorted(nodes[p][order], at, side="right")]
    return out


def probe_error(nodes: np.ndarray, weights: np.ndarray) -> float:
    r"""The estimated W1 error of the mean of the probes' measures, relative to the spectral range.

    :math:`\hat\varepsilon_P/(\theta_{max}-\theta_{min})` of the module docstring (``inf`` with
    fewer than two probes).
    """
    P = nodes.shape[0]
    if P < 2:
        return math.inf
    t = np.unique(nodes)
    if len(t) < 2:
        return 0.0
    s = _cdfs(nodes, weights, t).std(axis=0, ddof=1)
    return float(np.sum(s[:-1] * np.diff(t))) * spread_factor(P) / (math.sqrt(P) * _spread(nodes))


def spread_factor(P: int) -> float:
    r"""The factor that turns P probes' sample spread into a 95 % upper bound of their true spread.

    :math:`\sqrt{(P-1)/\chi^2_{0.05}(P-1)}`, the upper end of the one-sided 95 % confidence
    interval of a standard deviation from P samples (15.9 for 2 probes, 2.9 for 4, 1.6 for 10),
    times :data:`CALIBRATION` (module docstring, "How many probes").
    """
    # lazy: scipy.stats takes about 0.6 s to import
    from scipy.stats import chi2

    return CALIBRATION * math.sqrt((P - 1) / float(chi2.ppf(0.05, P - 1)))


#: A constant factor on the error estimate, calibrated on exact Hessians so that the estimate
#: bounds the actual W1 error in at least 95 % of seeded runs (benchmarks/RESULTS.md).
CALIBRATION = 1.5


def wasserstein1(
    nodes_a: np.ndarray, weights_a: np.ndarray, nodes_b: np.ndarray, weights_b: np.ndarray
) -> float:
    """W1 distance between two SLQ estimates (each the mean of its rows' measures)."""
    a_n, a_w = np.atleast_2d(nodes_a), np.atleast_2d(weights_a)
    b_n, b_w = np.atleast_2d(nodes_b), np.atleast_2d(weights_b)
    t = np.unique(np.concatenate([a_n.ravel(), b_n.ravel()]))
    if len(t) < 2:
        return 0.0
    fa = _cdfs(a_n, a_w, t).mean(0)
    fb = _cdfs(b_n, b_w, t).mean(0)
    return float(np.sum(np.abs(fa - fb)[:-1] * np.diff(t)))


def smooth_density(
    nodes: np.ndarray,
    weights: np.ndarray,
    *,
    sigma_rel: float = 0.005,
    grid_points: int = 2000,
) -> tuple[np.ndarray, np.ndarray, float]:
    """Gaussian-smoothed SLQ density on a grid spanning the nodes ±4σ; integrates to 1."""
    lo, hi = float(nodes.min()), float(nodes.max())
    sigma = sigma_rel * _spread(nodes)
    grid = np.linspace(lo - 4 * sigma, hi + 4 * sigma, grid_points)
    dens = np.zeros_like(grid)
    P = nodes.shape[0]
    for p in range(P):
        for theta, tau in zip(nodes[p], weights[p], strict=True):
            if tau > 0:
                dens += tau * np.exp(-0.5 * ((grid - theta) / sigma) ** 2)
    dens /= P * sigma * math.sqrt(2 * math.pi)
    dens /= _trapezoid(dens, grid)
    return grid, dens, sigma


def _stack(rows_n: list[np.ndarray], rows_w: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """The probes' nodes and weights as two (probes, L) arrays, each row padded to the longest.

    The padding repeats a row's last node with zero weight (as :func:`_quadrature` pads).
    """
    width = max(r.shape[1] for r in rows_n)
    nodes = [np.pad(r, ((0, 0), (0, width - r.shape[1])), mode="edge") for r in rows_n]
    weights = [np.pad(w, ((0, 0), (0, width - w.shape[1]))) for w in rows_w]
    return np.concatenate(nodes), np.concatenate(weights)


def _adaptive_nodes(
    op, m, cap, floor, tol, first, generator, reorthogonalize, memory_budget, block=None
):
    """The quadrature nodes and weights of :func:`slq_density`'s probes.

    The quadrature nodes and weights of :func:`slq_density`'s probes, in batches until the W1
    error estimate meets ``tol`` (or ``cap`` probes); returns ``(nodes, weights, error, hvps)``.
    """
    rows_n: list[np.ndarray] = []
    rows_w: list[np.ndarray] = []
    hvps = 0
    if first is not None:
        rows_n.append(first.nodes)
        rows_w.append(first.weights)
        hvps += first.hvps
    batch = (floor if tol > 0 else cap) - sum(r.shape[0] for r in rows_n)
    while True:
        if batch > 0:
            nodes, weights, spent = slq_nodes(
                op,
                probes=batch,
                steps=m,
                generator=generator,
                reorthogonalize=reorthogonalize,
                memory_budget=memory_budget,
                block=block,
            )
            rows_n.append(nodes)
            rows_w.append(weights)
            hvps += spent
        nodes, weights = _stack(rows_n, rows_w)
        used = nodes.shape[0]
        error = probe_error(nodes, weights)
        if used >= cap or (tol > 0 and used >= floor and error <= tol):
            break
        wanted = math.ceil(used * (error / tol) ** 2) if tol > 0 and math.isfinite(error) else cap
        batch = max(1, min(wanted - used, used, cap - used))
    return nodes, weights, error, hvps


def slq_density(
    op: SymmetricOperator,
    *,
    generator: torch.Generator,
    probes: int = 10,
    steps: int = 90,
    sigma_rel: float = 0.005,
    grid_points: int = 2000,
    reorthogonalize: bool | None = None,
    tol: float = 0.0,
    min_probes: int = 2,
    first: KrylovProbe | None = None,
    memory_budget: int = _BUDGET,
    block: int | None = None,
) -> DensityResult:
    """The SLQ eigenvalue density of ``op`` (see module docstring).

    With ``tol > 0``, Rademacher probes are added in batches until the estimated W1 error is at
    most ``tol`` times the spectral range (at least ``min_probes``, at most ``probes`` in all);
    with ``tol = 0`` all ``probes`` are used. ``first`` (from :func:`extend_krylov`) holds the
    first probes (one per column of the top-k run's start block), counted in ``probes``, with
    their products counted in ``hvp_count``.

    Args:
        op: The symmetric operator.
        generator: The random stream of the probes (:func:`slq_nodes`).
        probes: The most probes (all of them with ``tol = 0``).
        steps: Lanczos steps per probe (the quadrature's degree).
        sigma_rel: Gaussian smoothing width relative to the spectral range.
        grid_points: Points of the density's grid.
        reorthogonalize: As in :func:`slq_nodes` (default: by ``memory_budget``).
        tol: W1 error / spectral range to stop adding probes at (0: use all ``probes``).
        min_probes: The fewest probes with ``tol > 0``.
        first: The first probes, continued from the top-k run (:func:`extend_krylov`).
        memory_budget: Bytes of basis allowed for reorthogonalisation.
        block: The most probes per product (:func:`slq_nodes`). Changes no number but the
            products spent on probes that ended early.
    """
    m = max(1, min(int(steps), int(op.n)))
    cap = max(1, int(probes))
    floor = min(cap, max(1, int(min_probes)))
    nodes, weights, error, hvps = _adaptive_nodes(
        op, m, cap, floor, tol, first, generator, reorthogonalize, memory_budget, block
    )
    used = nodes.shape[0]
    grid, dens, sigma = smooth_density(nodes, weights, sigma_rel=sigma_rel, grid_points=grid_points)
    return DensityResult(
        grid=grid,
        density=dens,
        nodes=nodes,
        weights=weights,
        sigma=sigma,
        lanczos_steps=m,
        probes=used,
        hvp_count=hvps,
        tol=float(tol),
        achieved_tol=error,
        max_probes=cap,
        krylov_start=first is not None,
    )
