r"""Lanczos with full reorthogonalisation for the extreme eigenpairs of a symmetric operator.

Starting from a random unit vector :math:`q_1`, the Lanczos recurrence (Golub & Van Loan,
*Matrix Computations*, Alg. 10.1.1) builds an orthonormal basis :math:`Q_m=[q_1,\dots,q_m]` of
the Krylov space :math:`\mathcal{K}_m(H, q_1)` with

.. math::

    H Q_m = Q_m T_m + \beta_m q_{m+1} e_m^\top,

where :math:`T_m` is tridiagonal (diagonal :math:`\alpha_j`, off-diagonal :math:`\beta_j`). Each new
vector is orthogonalised against *all* previous ones, twice ("twice is enough", Parlett), so no
ghost copies of converged eigenvalues appear. For an eigenpair :math:`T_m s = \theta s` the Ritz
pair :math:`(\theta, y=Q_m s)` has the residual

.. math::

    \|H y - \theta y\| = |\beta_m|\,|e_m^\top s|,

which this module uses as the stopping rule: stop once each of the ``k`` algebraically largest
Ritz values has ``residual <= tol * |θ|``. That identity assumes exact products; with float32
Hessian-vector products the estimate can fall far below the truth, so the residuals reported (and
the ``converged`` flags) are recomputed explicitly as ``‖Hy − θy‖`` at the end, one product per
pair. Their floor is the accuracy of the products themselves (about 1e-7·‖H‖ in float32; use
float64 for tighter tolerances). The tridiagonal problem
is solved in float64 with :func:`numpy.linalg.eigh`. If the recurrence breaks down
(:math:`\beta_j\approx 0`, an invariant subspace) before ``k`` pairs exist, it restarts with a
random vector orthogonal to the basis, so it finds all ``k`` whenever ``k <= n``.

**Basis precision.** The basis is kept in float64 while ``(max_steps + 1)·n`` doubles fit in
:data:`BASIS_BUDGET` (1 GiB), or whenever the products are float64. Above that (a full-width
ResNet-18 has n = 11.2 M: 101 rows are 9 GB in float64) and with float32 products, it is kept in
float32: the products themselves carry float32 rounding (about 1e-7·‖H‖), so a float64 basis
buys nothing the residuals could show. Projections then run in float32 and accumulate into
float64 vectors. What this costs is *measured*, not assumed: the run reports the basis's loss of
orthogonality :math:`\max_{ij}|(QQ^\top - I)_{ij}|` (``orthogonality``), and the certificate
stays the explicit residual ‖Hy − θy‖ of each (renormalised) Ritz vector, which bounds
:math:`|\lambda-\theta|` whatever the basis's precision.

Unlike power iteration (PyHessian), which converges to the eigenvalue of largest *magnitude*
and needs a deflation round per eigenvalue, Lanczos returns the algebraically largest eigenvalues
with the correct sign, and all ``k`` from one Krylov space.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch
from torch import Tensor

from landscape_cli.hessian.types import LanczosResult


@dataclass(frozen=True)
class KrylovBasis:
    """The Lanczos relation ``H Q = Q T + beta_last q_next e_mᵀ`` of a finished run.

    ``Q`` has shape (m, n) (rows orthonormal); ``alpha``/``beta`` are T's diagonal and
    off-diagonal. Trace estimators use it to deflate the top of the spectrum for free.
    """

    Q: Tensor
    alpha: np.ndarray
    beta: np.ndarray
    beta_last: float
    q_next: Tensor | None
    ritz: np.ndarray  # (m, k): T's eigenvectors of the reported eigenvalues, same order

    @property
    def T(self) -> np.ndarray:
        m = len(self.alpha)
        t = np.diag(self.alpha)
        if m > 1:
            t += np.diag(self.beta, 1) + np.diag(self.beta, -1)
        return t


def random_unit(n: int, generator: torch.Generator, device: torch.device | str) -> Tensor:
    v = torch.randn(n, generator=generator, dtype=torch.float64).to(device)
    return v / v.norm()


#: Bytes of Lanczos basis (top-k run, its SLQ continuation, SLQ probes) kept in float64; above
#: it, the top-k basis is float32 (with float32 products) and SLQ uses the three-term recurrence.
BASIS_BUDGET = 1024**3


def basis_dtype_for(n: int, max_steps: int, products: torch.dtype) -> torch.dtype:
    """The dtype of the top-k Lanczos basis (module docstring, "Basis precision")."""
    rows = max(1, min(int(max_steps), int(n))) + 1
    if products == torch.float64 or rows * int(n) * 8 <= BASIS_BUDGET:
        return torch.float64
    return torch.float32


def project(Q: Tensor, x: Tensor) -> Tensor:
    """``Q @ x`` in float64, computed in ``Q``'s precision (no float64 copy of ``Q``)."""
    return Q @ x if Q.dtype == x.dtype else (Q @ x.to(Q.dtype)).to(x.dtype)


def lift(Q: Tensor, c: Tensor) -> Tensor:
    """``Qᵀ @ c`` in ``c``'s precision, computed in ``Q``'s (no float64 copy of ``Q``)."""
    return Q.T @ c if Q.dtype == c.dtype else (Q.T @ c.to(Q.dtype)).to(c.dtype)


def _orthogonalise(w: Tensor, Q: Tensor) -> Tensor:
    for _ in range(2):
        w = w - lift(Q, project(Q, w))
    return w


def orthogonality(Q: Tensor, chunk: int = 1 << 18) -> float:
    """Loss of orthogonality ``max |Q Qᵀ − I|`` of the rows of ``Q``, accumulated in float64
    over column chunks (so a float32 basis is never copied whole to float64)."""
    m = Q.shape[0]
    G = torch.zeros(m, m, dtype=torch.float64, device=Q.device)
    for start in range(0, Q.shape[1], chunk):
        block = Q[:, start : start + chunk].double()
        G += block @ block.T
    G -= torch.eye(m, dtype=torch.float64, device=Q.device)
    return float(G.abs().max()) if m else 0.0


_FIRST_ROWS = 16


def _grow(Q: Tensor, rows: int, cap: int) -> Tensor:
    """``Q`` with room for at least ``rows`` rows (the existing ones copied, the rest zero)."""
    if Q.shape[0] >= rows:
        return Q
    size = min(cap, max(rows, Q.shape[0] + max(_FIRST_ROWS, Q.shape[0] // 2)))
    bigger = torch.zeros(size, Q.shape[1], dtype=Q.dtype, device=Q.device)
    bigger[: Q.shape[0]] = Q
    return bigger


def lanczos_run(
    op,
    k: int = 1,
    *,
    tol: float = 1e-4,
    max_steps: int = 100,
    generator: torch.Generator | None = None,
    seed: int = 0,
    basis_dtype: torch.dtype | None = None,
    explicit_residuals: bool = True,
) -> tuple[LanczosResult, KrylovBasis]:
    """Lanczos on ``op`` (with ``op.n`` and ``op.matvec``) for the ``k`` largest eigenvalues.

    Stops on the recurrence's residual estimates; with ``explicit_residuals`` (default) the
    reported residuals and ``converged`` flags are then recomputed as ‖Hy − θy‖ with k + 1 more
    products. ``basis_dtype`` defaults to :func:`basis_dtype_for` (float64 unless the basis
    would exceed :data:`BASIS_BUDGET` with float32 products). Returns the result (without
    eigenvectors) and the Krylov basis of the run.
    """
    n = int(op.n)
    k = max(1, min(int(k), n))
    max_steps = max(k, min(int(max_steps), n))
    gen = generator if generator is not None else torch.Generator().manual_seed(seed)
    device = getattr(op, "device", torch.device("cpu"))
    if basis_dtype is None:
        basis_dtype = basis_dtype_for(n, max_steps, getattr(op, "dtype", torch.float64))

    # The basis grows with the steps taken (by half its size, at least 16 rows, at most to
    # max_steps + 1), not allocated for max_steps + 1 rows up front: a run that converges early
    # never holds the memory of the steps it did not take.
    Q = torch.zeros(min(max_steps + 1, _FIRST_ROWS), n, dtype=basis_dtype, device=device)
    Q[0] = random_unit(n, gen, device).to(basis_dtype)
    alphas: list[float] = []
    betas: list[float] = []
    theta = res = S = None
    beta = 0.0
    for j in range(max_steps):
        q = Q[j].double()
        w = op.matvec(q)
        a = float(q @ w)
        w = w - a * q
        if j > 0:
            w = w - betas[-1] * Q[j - 1].double()
        w = _orthogonalise(w, Q[: j + 1])
        beta = float(w.norm())
        alphas.append(a)
        m = j + 1
        T = np.diag(alphas) + (np.diag(betas, 1) + np.diag(betas, -1) if m > 1 else 0.0)
        theta, S = np.linalg.eigh(T)
        res = np.abs(beta * S[-1, :])
        scale = max(np.abs(theta).max(), np.finfo(float).tiny)
        top = slice(max(0, m - k), m)
        done = m >= k and bool(np.all(res[top] <= tol * np.abs(theta[top])))
        if done or m == max_steps:
            break
        if beta <= 1e-12 * scale:  # invariant subspace: restart orthogonally to the basis
            w = _orthogonalise(random_unit(n, gen, device), Q[:m])
            w = _orthogonalise(w, Q[:m])
            beta_next, beta = 0.0, 0.0
            Q = _grow(Q, m + 1, max_steps + 1)
            Q[m] = (w / w.norm()).to(basis_dtype)
            betas.append(beta_next)
            continue
        betas.append(beta)
        Q = _grow(Q, m + 1, max_steps + 1)
        Q[m] = (w / beta).to(basis_dtype)

    assert theta is not None and res is not None and S is not None
    m = len(alphas)
    kk = min(k, m)
    order = np.arange(m - 1, m - 1 - kk, -1)
    spent = m
    if explicit_residuals:
        # The recurrence's |β s_m| assumes exact products; with float32 HVPs it can sit far
        # below the truth. Report ‖Hy − θy‖ itself: one more product per pair (and λmin).
        cols = [*order.tolist(), 0]
        coeff = torch.as_tensor(S[:, cols], dtype=torch.float64, device=device)
        Y = (coeff.T.to(Q.dtype) @ Q[:m]).T.double()  # (n, kk + 1) unit Ritz vectors
        if Q.dtype != torch.float64:  # unit to float64 rounding, so |λ − θ| ≤ ‖Hy − θy‖ holds
            Y = Y / Y.norm(dim=0)
        HY = op.matmat(Y)
        spent += len(cols)
        true = (HY - Y * torch.as_tensor(theta[cols], device=device)).norm(dim=0).cpu().numpy()
        res = res.copy()
        res[order], res[0] = true[:-1], true[-1]
    result = LanczosResult(
        eigenvalues=theta[order].copy(),
        residuals=res[order].copy(),
        converged=res[order] <= tol * np.abs(theta[order]),
        lambda_min=float(theta[0]),
        lambda_min_residual=float(res[0]),
        steps=m,
        hvp_count=spent,
        tol=tol,
        basis_dtype=str(Q.dtype).removeprefix("torch."),
        orthogonality=orthogonality(Q[:m]),
    )
    q_next = None
    if beta > 0 and m < n:
        q_next = (w / beta).double()
    basis = KrylovBasis(
        Q=Q[:m],
        alpha=np.array(alphas),
        beta=np.array(betas[: m - 1]),
        beta_last=beta if q_next is not None else 0.0,
        q_next=q_next,
        ritz=S[:, order].copy(),
    )
    return result, basis


def ritz_vectors(basis: KrylovBasis) -> np.ndarray:
    """The unit Ritz vectors (k, n) of the run's reported eigenvalues, as float32."""
    coeff = torch.as_tensor(basis.ritz.T, dtype=torch.float64, device=basis.Q.device)
    return (coeff.to(basis.Q.dtype) @ basis.Q).float().cpu().numpy()


def lanczos_top(
    op,
    k: int = 1,
    *,
    tol: float = 1e-4,
    max_steps: int = 100,
    generator: torch.Generator | None = None,
    seed: int = 0,
    eigenvectors: bool = False,
) -> LanczosResult:
    """The ``k`` algebraically largest eigenvalues of ``op`` with residuals (see module doc)."""
    result, basis = lanczos_run(op, k, tol=tol, max_steps=max_steps, generator=generator, seed=seed)
    if eigenvectors:
        result = replace(result, eigenvectors=ritz_vectors(basis))
    return result
