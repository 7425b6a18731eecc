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

**One kernel.** :class:`LanczosRecurrence` is the recurrence itself, for several start vectors
at once (the columns of a block, each its own Krylov space), with or without full
reorthogonalisation, a basis dtype, and breakdown handling (:math:`\beta_j\le
\text{breakdown}\cdot\|T\|`: an invariant subspace, where the column either restarts orthogonally
to its basis or ends, exact). The caller applies the operator, so it decides how products are
batched and when to stop: :func:`lanczos_run` here (one column, restarts, stops on the Ritz
residuals), :func:`~landscape_cli.hessian.density.slq_nodes` and
:func:`~landscape_cli.hessian.density.extend_krylov` (SLQ probes as columns, or a finished run
continued; without reorthogonalisation the O(n)-memory three-term recurrence) and
:func:`~landscape_cli.hessian.per_layer.per_layer_curvature` (one recurrence per parameter
block, all blocks in one product). :func:`tridiagonal` builds every :math:`T_m`.

Unlike power iteration (PyHessian), which converges to the eigenvalue of largest *magnitude*
and needs a deflation round per eigenvalue, Lanczos returns the algebraically largest eigenvalues
with the correct sign, and all ``k`` from one Krylov space.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch
from torch import Tensor

from landscape_cli.hessian.protocol import SymmetricOperator
from landscape_cli.hessian.sampling import random_unit
from landscape_cli.hessian.types import LanczosResult

__all__ = [
    "BASIS_BUDGET",
    "KrylovBasis",
    "LanczosRecurrence",
    "basis_dtype_for",
    "lanczos_run",
    "lanczos_top",
    "lift",
    "orthogonality",
    "project",
    "random_unit",
    "ritz_vectors",
    "tridiagonal",
]


def tridiagonal(alpha, beta) -> np.ndarray:
    """The symmetric tridiagonal :math:`T_m` as a dense float64 array.

    The symmetric tridiagonal :math:`T_m` with diagonal ``alpha`` (length m) and
    off-diagonal ``beta[:m - 1]``, as a dense float64 array.
    """
    alpha = np.asarray(alpha, dtype=np.float64)
    m = len(alpha)
    t = np.diag(alpha)
    if m > 1:
        off = np.asarray(beta, dtype=np.float64)[: m - 1]
        t += np.diag(off, 1) + np.diag(off, -1)
    return t


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
        """The tridiagonal matrix of the run as a dense array."""
        return tridiagonal(self.alpha, self.beta)


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
    """``(I − QᵀQ) w`` applied twice (classical Gram–Schmidt, "twice is enough")."""
    for _ in range(2):
        w = w - lift(Q, project(Q, w))
    return w


def orthogonality(Q: Tensor, chunk: int = 1 << 18) -> float:
    """Loss of orthogonality ``max |Q Qᵀ − I|`` of the rows of ``Q``.

    Loss of orthogonality ``max |Q Qᵀ − I|`` of the rows of ``Q``, accumulated in float64
    over column chunks (so a float32 basis is never copied whole to float64).
    """
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


class LanczosRecurrence:
    r"""Lanczos recurrences from the columns of a start block, advanced one step at a time.

    Column :math:`p` runs its own recurrence (Golub & Van Loan, Alg. 10.1.1) from the unit
    vector :math:`q^{(p)}_1`: given :math:`w=Hq_j` (the caller's product),

    .. math::

        \alpha_j = q_j^\top w,\quad
        r_j = w - \alpha_j q_j - \beta_{j-1} q_{j-1},\quad
        \beta_j = \|r_j\|,\quad q_{j+1} = r_j/\beta_j,

    with, when ``reorthogonalize``, :math:`r_j \leftarrow (I-Q_jQ_j^\top)r_j` applied twice
    against the column's basis :math:`Q_j` (rows stored in ``basis_dtype``; the next vector is
    then the stored, rounded row, so the recurrence and the basis agree). Without it, the
    three-term recurrence needs O(n) memory per column and loses orthogonality as Ritz values
    converge (Paige 1976), which the quadrature of SLQ tolerates but top-k eigenvalues do not.

    :meth:`absorb` takes the products :math:`W=HV` of the current vectors ``V`` (shape (d, P),
    float64) and records :math:`\alpha_j, \beta_j`; :meth:`advance` forms the next vectors.
    Between the two the caller may stop (then ``residual`` holds :math:`r_j` and ``last_beta``
    its norm: :math:`HQ_m = Q_mT_m + r_m e_m^\top`). **Breakdown**: when :math:`\beta_j \le`
    ``breakdown`` · scale (an invariant subspace; scale is the caller's estimate of
    :math:`\|T\|`, by default the largest :math:`|\alpha|` seen), the column restarts with a
    random unit vector orthogonalised against its basis if a ``generator`` was given (coupling
    :math:`\beta_j = 0`, so :math:`T` becomes block diagonal and the eigenvalues found stay
    exact), else it ends (``alive[p]`` false, its vector zero, its :math:`T` exact).
    """

    def __init__(
        self,
        start: Tensor,
        *,
        capacity: int,
        reorthogonalize: bool = True,
        basis_dtype: torch.dtype = torch.float64,
        breakdown: float = 1e-12,
        generator: torch.Generator | None = None,
        grow: bool = False,
    ) -> None:
        """Start from the unit columns of ``start`` (d, P), float64.

        Args:
            start: The start vectors as columns.
            capacity: The most basis rows a column will hold (its steps, + 1 for the next).
            reorthogonalize: Keep each column's basis and orthogonalise against it.
            basis_dtype: The precision the basis rows are stored in.
            breakdown: Relative size of β below which a column has met an invariant subspace.
            generator: Restart a broken-down column from a random vector drawn from it
                (default: the column ends).
            grow: Allocate the basis as the steps need it (by half, at least 16 rows), not
                ``capacity`` rows up front: a run that stops early never holds the rest.
        """
        self.d, self.P = start.shape
        self.device = start.device
        self.capacity = int(capacity)
        self.breakdown = float(breakdown)
        self.generator = generator
        self.alpha: list[list[float]] = [[] for _ in range(self.P)]
        self.beta: list[list[float]] = [[] for _ in range(self.P)]  # couplings (0.0: restart)
        self.last_beta = np.zeros(self.P)
        self.alive = np.ones(self.P, dtype=bool)
        self.steps = 0  # rows absorbed per column
        self.coupling = [0.0] * self.P
        # Vectors are kept as contiguous rows (P, d), so each column's work runs on contiguous
        # memory; ``V`` and ``residual`` are (d, P) views of them.
        self._prev: Tensor | None = None
        self._res: Tensor | None = None
        self.Q: list[Tensor] | None = None
        self._rows = start.to(torch.float64).T.clone(memory_format=torch.contiguous_format)
        if reorthogonalize:
            rows = min(self.capacity, _FIRST_ROWS) if grow else self.capacity
            self.Q = [
                torch.zeros(rows, self.d, dtype=basis_dtype, device=self.device)
                for _ in range(self.P)
            ]
            for p, Qp in enumerate(self.Q):
                Qp[0] = self._rows[p].to(basis_dtype)
                self._rows[p] = Qp[0]

    @classmethod
    def resume(
        cls, basis: KrylovBasis, rows: int, *, capacity: int, reorthogonalize: bool, **kw
    ) -> LanczosRecurrence:
        """The recurrence of a finished single-column run, continued from ``basis.q_next``.

        The recurrence of a finished single-column run, continued after its first ``rows``
        rows from ``basis.q_next`` (the basis in float64; the run must not have restarted).
        """
        assert basis.q_next is not None
        v = basis.q_next.to(dtype=torch.float64)
        rec = cls(v[:, None], capacity=1, reorthogonalize=False, **kw)
        rec.capacity = int(capacity)
        if reorthogonalize:
            Q = torch.empty(rec.capacity, rec.d, dtype=torch.float64, device=v.device)
            Q[:rows] = basis.Q[:rows].to(device=v.device, dtype=torch.float64)
            Q[rows] = v
            rec.Q = [Q]
        rec.alpha = [np.asarray(basis.alpha, dtype=np.float64)[:rows].tolist()]
        rec.beta = [[*np.asarray(basis.beta, dtype=np.float64)[: rows - 1].tolist()]]
        rec.beta[0].append(float(basis.beta_last))
        rec.coupling = [float(basis.beta_last)]
        rec._prev = basis.Q[rows - 1].to(device=v.device, dtype=torch.float64)[None, :]
        rec.steps = rows
        return rec

    @property
    def V(self) -> Tensor:
        """The current vectors (d, P), float64 (zero for ended columns)."""
        return self._rows.T

    @property
    def residual(self) -> Tensor | None:
        """The last step's residuals :math:`r_j` (d, P) (``None`` before the first step)."""
        return None if self._res is None else self._res.T

    def basis(self, p: int = 0) -> Tensor:
        """The rows of column ``p``'s basis absorbed so far, shape (steps, d)."""
        assert self.Q is not None
        return self.Q[p][: self.steps]

    def absorb(self, W: Tensor) -> None:
        """Record one step from the products ``W = H @ V`` (d, P) of the live columns."""
        j = self.steps
        R = torch.zeros_like(self._rows)
        Wt = W.T if W.shape[1] == 1 else W.T.contiguous()
        for p in np.flatnonzero(self.alive).tolist():
            q = self._rows[p]
            w = Wt[p]
            a = float(q @ w)
            w = w - a * q
            if self._prev is not None:
                w = w - self.coupling[p] * self._prev[p]
            if self.Q is not None:
                w = _orthogonalise(w, self.Q[p][: j + 1])
            self.alpha[p].append(a)
            self.last_beta[p] = float(w.norm())
            R[p] = w
        self._res = R
        self.steps = j + 1

    def advance(self, scale: float | None = None) -> None:
        """Form the next vector of every live column (restart or end on breakdown)."""
        m = self.steps
        assert self._res is not None
        self._prev = self._rows.clone()
        for p in np.flatnonzero(self.alive).tolist():
            b = float(self.last_beta[p])
            size = scale
            if size is None:
                size = max(float(np.max(np.abs(self.alpha[p]))), np.finfo(float).tiny)
            if b > self.breakdown * size:
                self.beta[p].append(b)
                self.coupling[p] = b
                self._store(p, m, self._res[p] / b)
            elif self.generator is not None and self.Q is not None:
                w = random_unit(self.d, self.generator, self.device)
                w = _orthogonalise(_orthogonalise(w, self.Q[p][:m]), self.Q[p][:m])
                self.beta[p].append(0.0)
                self.coupling[p] = 0.0
                self._store(p, m, w / w.norm())
            else:
                self.alive[p] = False
                self._rows[p] = 0.0

    def _store(self, p: int, row: int, v: Tensor) -> None:
        if self.Q is None:
            self._rows[p] = v
            return
        self.Q[p] = _grow(self.Q[p], row + 1, self.capacity)
        self.Q[p][row] = v.to(self.Q[p].dtype)
        self._rows[p] = self.Q[p][row]

    def krylov_basis(self, ritz: np.ndarray, n: int) -> KrylovBasis:
        """Column 0's Lanczos relation ``H Q = Q T + β q_next e_mᵀ``.

        Column 0's relation ``H Q = Q T + β q_next e_mᵀ`` (``q_next`` None when β = 0 or
        the space is all of R^n).
        """
        m = len(self.alpha[0])
        b = float(self.last_beta[0])
        q_next = None
        if b > 0 and m < n and self._res is not None:
            q_next = (self._res[0] / b).double()
        return KrylovBasis(
            Q=self.basis(0)[:m],
            alpha=np.array(self.alpha[0]),
            beta=np.array(self.beta[0][: m - 1]),
            beta_last=b if q_next is not None else 0.0,
            q_next=q_next,
            ritz=ritz,
        )


def lanczos_run(
    op: SymmetricOperator,
    k: int = 1,
    *,
    generator: torch.Generator,
    tol: float = 1e-4,
    max_steps: int = 100,
    basis_dtype: torch.dtype | None = None,
    explicit_residuals: bool = True,
) -> tuple[LanczosResult, KrylovBasis]:
    """Lanczos on ``op`` for the ``k`` algebraically largest eigenvalues (module docstring).

    Args:
        op: The symmetric operator (``n``, ``device``, ``matvec``, ``matmat``; ``dtype``).
        k: How many of the largest eigenvalues (at most ``n``).
        generator: The random stream of the start vector (and of restarts after a breakdown).
        tol: Stop once each of the ``k`` has residual ≤ ``tol``·|θ|.
        max_steps: The most Lanczos steps (products).
        basis_dtype: The basis precision; default :func:`basis_dtype_for` (float64 unless the
            basis would exceed :data:`BASIS_BUDGET` with float32 products).
        explicit_residuals: Recompute the reported residuals and ``converged`` flags as
            ‖Hy − θy‖ at the end, with k + 1 more products.

    Returns:
        The result (without eigenvectors) and the Krylov basis of the run.
    """
    n = int(op.n)
    k = max(1, min(int(k), n))
    max_steps = max(k, min(int(max_steps), n))
    device = getattr(op, "device", torch.device("cpu"))
    if basis_dtype is None:
        basis_dtype = basis_dtype_for(n, max_steps, getattr(op, "dtype", torch.float64))
    rec = LanczosRecurrence(
        random_unit(n, generator, device)[:, None],
        capacity=max_steps + 1,
        basis_dtype=basis_dtype,
        generator=generator,
        grow=True,
    )
    m, theta, S, res = _iterate(op, rec, k, tol, max_steps)
    order = np.arange(m - 1, m - 1 - min(k, m), -1)
    spent = m
    if explicit_residuals:
        res = _explicit_residuals(op, rec.basis(0), S, theta, order, res)
        spent += len(order) + 1
    result = LanczosResult(
        eigenvalues=theta[order].copy(),
        residuals=res[order].copy(),
        converged=res[order] <= tol * np.abs(theta[order]),
        lambda_min=float(theta[0]),
        lambda_min_residual=float(res[0]),
        steps=m,
        hvp_count=spent,
        tol=tol,
        basis_dtype=str(basis_dtype).removeprefix("torch."),
        orthogonality=orthogonality(rec.basis(0)),
    )
    return result, rec.krylov_basis(S[:, order].copy(), n)


def _iterate(op: SymmetricOperator, rec: LanczosRecurrence, k: int, tol: float, max_steps: int):
    """Lanczos steps until the top ``k`` Ritz pairs meet ``tol`` or ``max_steps``.

    Returns ``(steps, Ritz values, tridiagonal eigenvectors, residual estimates)``.
    """
    for _ in range(max_steps):
        rec.absorb(op.matvec(rec.V[:, 0])[:, None])
        m = rec.steps
        theta, S = np.linalg.eigh(tridiagonal(rec.alpha[0], rec.beta[0]))
        res = np.abs(rec.last_beta[0] * S[-1, :])
        top = slice(max(0, m - k), m)
        if (m >= k and bool(np.all(res[top] <= tol * np.abs(theta[top])))) or m == max_steps:
            break
        rec.advance(scale=max(np.abs(theta).max(), np.finfo(float).tiny))
    return m, theta, S, res


def _explicit_residuals(op, Q: Tensor, S, theta, order, res) -> np.ndarray:
    """``res`` with the reported pairs' (and λmin's) entries replaced by ‖Hy − θy‖.

    The recurrence's |β s_m| assumes exact products; with float32 HVPs it can sit far below
    the truth, so the residual itself is recomputed: one more product per pair (and λmin).
    """
    cols = [*order.tolist(), 0]
    coeff = torch.as_tensor(S[:, cols], dtype=torch.float64, device=Q.device)
    Y = (coeff.T.to(Q.dtype) @ Q).T.double()  # (n, kk + 1) unit Ritz vectors
    if Q.dtype != torch.float64:  # unit to float64 rounding, so |λ − θ| ≤ ‖Hy − θy‖ holds
        Y = Y / Y.norm(dim=0)
    HY = op.matmat(Y)
    true = (HY - Y * torch.as_tensor(theta[cols], device=Q.device)).norm(dim=0).cpu().numpy()
    res = res.copy()
    res[order], res[0] = true[:-1], true[-1]
    return res


def ritz_vectors(basis: KrylovBasis) -> np.ndarray:
    """The unit Ritz vectors (k, n) of the run's reported eigenvalues, as float32."""
    coeff = torch.as_tensor(basis.ritz.T, dtype=torch.float64, device=basis.Q.device)
    return (coeff.to(basis.Q.dtype) @ basis.Q).float().cpu().numpy()


def lanczos_top(
    op: SymmetricOperator,
    k: int = 1,
    *,
    generator: torch.Generator,
    tol: float = 1e-4,
    max_steps: int = 100,
    eigenvectors: bool = False,
) -> LanczosResult:
    """The ``k`` algebraically largest eigenvalues of ``op`` with residuals (module docstring).

    Args:
        op: The symmetric operator.
        k: How many eigenvalues.
        generator: The random stream of the start vector.
        tol: Relative residual to stop at (residual ≤ tol·|λ|).
        max_steps: The most Lanczos steps.
        eigenvectors: Also return the unit Ritz vectors (k, n) as float32.
    """
    result, basis = lanczos_run(op, k, tol=tol, max_steps=max_steps, generator=generator)
    if eigenvectors:
        result = replace(result, eigenvectors=ritz_vectors(basis))
    return result
