r"""Lanczos with full reorthogonalisation for the extreme eigenpairs of a symmetric operator.

Starting from a random unit vector :math:`q_1`, the Lanczos recurrence (Golub & Van Loan,
*Matrix Computations*, Alg. 10.1.1) builds an orthonormal basis :math:`Q_m=[q_1,\dots,q_m]` of
the Krylov space :math:`\mathcal{K}_m(H, q_1)` with

.. math::

    H Q_m = Q_m T_m + \beta_m q_{m+1} e_m^\top,

where :math:`T_m` is tridiagonal (diagonal :math:`\alpha_j`, off-diagonal :math:`\beta_j`). Each new
vector is orthogonalised against *all* previous ones by classical Gram–Schmidt, a second time
when the first pass removed more than 1 − 1/√2 of its norm (the test of Daniel, Gragg, Kaufman &
Stewart 1976, as in ARPACK; "twice is enough", Parlett), so no ghost copies of converged
eigenvalues appear. For an eigenpair :math:`T_m s = \theta s` the Ritz
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
buys nothing the residuals could show. The working rows (the block, its residual, the products
and the Ritz vectors of the explicit residuals) are then float32 too: the block *is* its stored
rows, and no n-sized float64 vector is made; the recurrence's coefficients are float64 sums over
column chunks (:func:`_gram`). What this costs is *measured*, not assumed: the run reports the
basis's loss of orthogonality :math:`\max_{ij}|(QQ^\top - I)_{ij}|` (``orthogonality``), and the
certificate stays the explicit residual ‖Hy − θy‖ of each (renormalised) Ritz vector, which bounds
:math:`|\lambda-\theta|` whatever the basis's precision.

**One kernel.** :class:`BlockLanczos` is the recurrence itself: a block of b start vectors
(b = 1 is single-vector Lanczos), with or without full reorthogonalisation, a basis dtype,
breakdown handling (a direction of the residual below ``breakdown``·‖T‖ has met an invariant
subspace: it is replaced by a random vector orthogonal to the basis, or dropped, exact) and
growth of the block. The caller applies the operator, so it decides how products are batched and
when to stop: :func:`lanczos_run` here (one block, grown while eigenvalues cluster, stops on the
Ritz residuals and the clusters), :func:`~landscape_cli.hessian.density.extend_krylov` (the
top-k run continued into the density's first probes),
:func:`~landscape_cli.hessian.density.slq_nodes` (one single-vector recurrence per SLQ probe,
all advanced by one product per step, :func:`advance_together`; without reorthogonalisation
the O(n)-memory three-term recurrence) and
:func:`~landscape_cli.hessian.per_layer.per_layer_curvature` (one recurrence per parameter
block, all blocks in one product). :func:`tridiagonal` builds a single-vector :math:`T_m` from
its coefficients.

**Repeated eigenvalues.** :func:`lanczos_run` runs :class:`BlockLanczos` from a random
orthonormal block (b = 1 for k = 1, else 2: :func:`default_block_size`) until each of the ``k``
largest Ritz values has ``residual ≤ tol·|θ|``. Then it looks for *clusters* (:func:`clusters`):
converged Ritz values whose relative gap is at most ``max(10·tol, CLUSTER_RTOL)``. A block of
width b holds at most b directions of an eigenspace, so a cluster of b or more values with a
reported value below it may hide further copies that belong in the top ``k``: the block then
grows (to ``max(2b, c + 1)`` for a cluster of c, at most ``max_block``) by random vectors
orthogonal to the basis, and the run goes on for at least as many block steps as that cluster
took to first show a converged value, so that the new directions can converge too. It ends when
no cluster is saturated, or when ``max_steps`` products are spent. The certificate it returns:
``residuals`` (explicit ‖Hy − θy‖: each value lies within its residual of an eigenvalue of H),
``gaps`` (θᵢ minus the next lower Ritz value), ``multiplicity_resolved`` (no saturated cluster,
or the run spanned all of R^n: no copy of a reported eigenvalue is missing from the list),
``largest_cluster`` and ``block_size`` (the widest block). It does not prove that no larger
eigenvalue was missed entirely: a random start has a component along every eigenvector with
probability 1, and Lanczos finds the extreme eigenvalues first, but an eigenvector nearly
orthogonal to the start converges late.

Unlike power iteration (PyHessian), which converges to the eigenvalue of largest *magnitude*
and needs a deflation round per eigenvalue, Lanczos returns the algebraically largest eigenvalues
with the correct sign, and all ``k`` from one Krylov space.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
import torch
from torch import Tensor

from landscape_cli.hessian.protocol import SymmetricOperator
from landscape_cli.hessian.sampling import random_unit
from landscape_cli.hessian.types import LanczosResult

__all__ = [
    "BASIS_BUDGET",
    "MAX_BLOCK",
    "BlockLanczos",
    "KrylovBasis",
    "advance_together",
    "basis_dtype_for",
    "clusters",
    "default_block_size",
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
    r"""The block Lanczos relation :math:`HQ^\top = Q^\top T + R^\top E^\top` of a finished run.

    ``Q`` has shape (m, n) (rows orthonormal), ``T = Q H Qᵀ`` is (m, m), block tridiagonal with
    block widths ``sizes`` (all 1 for single-vector Lanczos: then ``T`` is tridiagonal), and ``R``
    (b, n) holds the rows of the last block's residual (orthogonal to ``Q``; ``E`` selects the
    last block's b columns), or is None when it vanished or ``Q`` spans all of R^n. ``ritz``
    (m, k) holds T's eigenvectors of the reported eigenvalues, in the same order. Trace
    estimators use the basis to deflate the top of the spectrum for free, and the density
    continues it (:func:`~landscape_cli.hessian.density.extend_krylov`).
    """

    Q: Tensor
    T: np.ndarray
    sizes: tuple[int, ...]
    R: Tensor | None
    ritz: np.ndarray

    @property
    def alpha(self) -> np.ndarray:
        """The diagonal of ``T`` (the α of single-vector Lanczos)."""
        return np.diag(self.T).copy()

    @property
    def beta(self) -> np.ndarray:
        """The first off-diagonal of ``T`` (the β couplings of single-vector Lanczos)."""
        return np.diag(self.T, -1).copy()

    @property
    def beta_last(self) -> float:
        """‖R‖: the coupling to the next vector (single-vector runs), 0 when there is none."""
        return 0.0 if self.R is None else float(self.R.norm())

    @property
    def q_next(self) -> Tensor | None:
        """The next Lanczos vector ``R / ‖R‖`` of a run whose last block has width 1."""
        if self.R is None or self.R.shape[0] != 1:
            return None
        return (self.R[0] / self.R[0].norm()).double()


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


#: Daniel, Gragg, Kaufman & Stewart (1976): a vector whose norm one Gram–Schmidt pass keeps
#: above this fraction is orthogonal to the basis to working precision; below it, a second pass
#: ("twice is enough") restores that. ARPACK's reorthogonalisation uses the same test.
DGKS = 0.7071


def _norms(w: Tensor) -> Tensor:
    """The 2-norms of ``w`` (a vector, or the columns of a matrix), as float64 sums."""
    rows = w[None] if w.dim() == 1 else w.T
    return torch.diagonal(_gram(rows, rows)).clamp_min(0.0).sqrt()


def _subtract_lift(w: Tensor, Q: Tensor, C: Tensor) -> None:
    """``w −= Qᵀ C`` in place; with ``w`` in ``Q``'s dtype no n-sized temporary is made."""
    if w.dtype != Q.dtype:
        w.sub_(lift(Q, C))
    elif w.dim() == 1:
        w.addmv_(Q.T, C.to(Q.dtype), alpha=-1.0)
    else:
        w.T.addmm_(C.T.to(Q.dtype), Q, alpha=-1.0)


def _orthogonalise(w: Tensor, Q: Tensor) -> Tensor:
    """``(I − QᵀQ) w`` by classical Gram–Schmidt, repeated once when the norm drops.

    One pass, then a second only where a column lost more than :data:`DGKS` of its norm
    (Daniel et al. 1976; "twice is enough", Parlett): the second pass would change nothing
    above rounding otherwise, and at language-model scale each pass reads the whole basis.
    ``w`` is updated in place (no second n-sized copy of it) and returned.
    """
    before = _norms(w)
    _subtract_lift(w, Q, project(Q, w))
    if bool(torch.any(_norms(w) < DGKS * before)):
        _subtract_lift(w, Q, project(Q, w))
    return w


#: Columns of float32 rows whose products :func:`_gram` sums at once.
GRAM_CHUNK = 1 << 20
#: Columns summed in the rows' own precision before the float64 sum (:func:`_gram`).
PARTIAL = 1024


def _gram(X: Tensor, Y: Tensor) -> Tensor:
    """``X Yᵀ`` (rows of X and Y, length n) in float64, without float64 copies of the rows.

    Float32 rows are multiplied in runs of :data:`PARTIAL` columns in float32 (one batched
    product; each partial sum has the rounding of a 1,024-term dot product, about 1e-7 of its
    terms' size) and the partial sums are added in float64: for 2·10⁷ columns, 20× faster than
    float64 copies and within 1e-9 of their result relative to ‖x‖‖y‖, where torch's float32
    norm of the same row was off by 1e-3. Float64 rows are multiplied as they are.
    """
    if torch.float64 in (X.dtype, Y.dtype):
        return X.double() @ Y.double().T  # no copy of float64 rows
    n = X.shape[1]
    whole = n - n % PARTIAL
    step = max(PARTIAL, GRAM_CHUNK // PARTIAL * PARTIAL)
    G = torch.zeros(X.shape[0], Y.shape[0], dtype=torch.float64, device=X.device)
    for start in range(0, whole, step):
        stop = min(start + step, whole)
        Xc = X[:, start:stop].reshape(X.shape[0], -1, PARTIAL).transpose(0, 1)
        Yc = Y[:, start:stop].reshape(Y.shape[0], -1, PARTIAL).transpose(0, 1)
        G += torch.bmm(Xc, Yc.transpose(1, 2)).sum(0, dtype=torch.float64)
    if whole < n:
        G += X[:, whole:].double() @ Y[:, whole:].double().T
    return G


def orthogonality(Q: Tensor) -> float:
    """Loss of orthogonality ``max |Q Qᵀ − I|`` of the rows of ``Q``.

    Loss of orthogonality ``max |Q Qᵀ − I|`` of the rows of ``Q``, accumulated in float64
    over column chunks (so a float32 basis is never copied whole to float64).
    """
    m = Q.shape[0]
    G = _gram(Q, Q) - torch.eye(m, dtype=torch.float64, device=Q.device)
    return float(G.abs().max()) if m else 0.0


_FIRST_ROWS = 16

#: Bytes of Ritz vectors (and their products) that one product of the explicit residuals takes.
_RESIDUAL_BYTES = 1024**3


def _rows(count: int, n: int, dtype: torch.dtype, device) -> Tensor:
    """Room for ``count`` basis rows; only the rows written take memory on the CPU.

    The rows are left unset (only the stored rows are ever read): on the CPU a large tensor is
    its own memory mapping, whose pages the system supplies when a row is first written, so
    the resident memory follows the rows stored, not the room reserved.
    """
    return torch.empty(count, n, dtype=dtype, device=device)


def _first_rows(b: int, capacity: int, n: int, dtype: torch.dtype, device) -> Tensor:
    """The basis of a run that may store ``capacity`` rows, first ``b`` of them.

    On the CPU as many of the ``capacity`` rows as the system grants at once are reserved
    (halving the request until it does): only stored rows become resident, and the basis is
    copied to grow only past the reservation. On accelerators, whose memory is taken when
    reserved, room for the first rows only (:func:`_grow` adds more).
    """
    first = min(capacity, max(_FIRST_ROWS, b))
    if torch.device(device).type == "cpu":
        count = capacity
        while count > first:
            try:
                return _rows(count, n, dtype, device)
            except RuntimeError:  # more than the system grants at once
                count //= 2
    return _rows(first, n, dtype, device)


def _grow(Q: Tensor, rows: int, cap: int) -> Tensor:
    """``Q`` with room for at least ``rows`` rows (the existing ones copied, the rest unset)."""
    if Q.shape[0] >= rows:
        return Q
    size = min(cap, max(rows, Q.shape[0] + max(_FIRST_ROWS, Q.shape[0] // 2)))
    bigger = _rows(size, Q.shape[1], Q.dtype, Q.device)
    bigger[: Q.shape[0]] = Q
    return bigger


def advance_together(op: SymmetricOperator, columns: Sequence[BlockLanczos], steps: int) -> int:
    """``steps`` steps of independent recurrences, one product per step for all of them.

    The current blocks of the live recurrences go through one ``matmat``; a recurrence that
    met an invariant subspace (width 0: exact) takes no more products. Returns the products.
    """
    spent = 0
    for j in range(steps):
        live = [c for c in columns if c.width]
        if not live:
            break
        W = op.matmat(torch.cat([c.V for c in live], 1).contiguous())
        spent += W.shape[1]
        at = 0
        for c in live:
            c.absorb(W[:, at : at + c.width])
            at += c.sizes[-1]
            if j < steps - 1:
                c.advance()
    return spent


def _rows_orthogonalise(R: Tensor, Q: Tensor) -> Tensor:
    """The rows of ``R`` made orthogonal to the rows of ``Q`` (as :func:`_orthogonalise`).

    ``R`` is updated in place and returned.
    """
    return _orthogonalise(R.T, Q).T if Q.shape[0] else R


class BlockLanczos:
    r"""The block Lanczos recurrence from an orthonormal start block, one block step at a time.

    Block Lanczos (Golub & Underwood 1977; Golub & Van Loan, *Matrix Computations*, §10.3.6)
    runs the recurrence on blocks of b orthonormal vectors :math:`Q_j` (n × b): given
    :math:`W=HQ_j` (the caller's product of b columns),

    .. math::

        A_j = Q_j^\top W,\quad R_j = W - Q_jA_j - Q_{j-1}B_{j-1}^\top,\quad
        R_j = Q_{j+1}B_j \ \text{(a rank-revealing QR)},

    so that :math:`HQ = QT + R_mE_m^\top` with :math:`T` block tridiagonal (diagonal blocks
    :math:`A_j`, sub-diagonal blocks :math:`B_j`). Its Krylov space
    :math:`\operatorname{span}\{Q_1, HQ_1, H^2Q_1,\dots\}` holds min(b, m) independent directions
    of every eigenspace of multiplicity m (the projection of a random start block on it has rank
    min(b, m) almost surely), so an eigenvalue of multiplicity m ≤ b appears as m Ritz values;
    single-vector Lanczos (b = 1) finds one copy in exact arithmetic, and further copies only
    through rounding. With ``reorthogonalize``, :math:`R_j` is orthogonalised
    (:func:`_orthogonalise`) against every stored row (kept in ``basis_dtype``; the next block
    is then the stored, rounded rows, so the recurrence and the basis agree). Without it only
    the previous block is kept (the three-term block recurrence, O(b·n) memory), which loses
    orthogonality as Ritz values converge (Paige 1976): fine for SLQ's quadrature, not
    for top-k eigenvalues.

    **Deflation.** :math:`Q_{j+1}B_j` comes from the QR of :math:`R_j` followed by an SVD of the
    b × b factor: a direction whose singular value is at most ``breakdown`` · ``scale`` has met an
    invariant subspace. It is dropped from the block (the block narrows; without a ``generator``
    a block of width 0 ends the run, its :math:`T` exact), or, with a ``generator``, replaced by a
    random unit vector orthogonalised against the whole basis, coupled by a zero row of
    :math:`B_j`. The same injection **grows** the block on request (:meth:`advance`'s ``extra``):
    a random vector orthogonal to the basis keeps :math:`T` block tridiagonal (for every earlier
    block :math:`Q_i^\top Hz = (HQ_i)^\top z = 0`), and acts as a further start vector. Converged
    Ritz vectors stay in the basis, so every later vector is orthogonal to them: they are
    deflated from the rest of the run. Block widths may therefore differ (``sizes``).

    :meth:`absorb` takes the products of the current block (``V``, shape (n, b), float64) and
    records :math:`A_j` and the residual; :meth:`advance` forms the next block. Between the two
    the caller may stop (``residual_norms`` gives the Ritz residuals :math:`\|R_m s_{last}\|`).
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
        grow: bool = True,
    ) -> None:
        """Start from the orthonormal columns of ``start`` (n, b), float64.

        Args:
            start: The start block (orthonormal columns).
            capacity: The most basis rows the run will store (its products, + the next block).
            reorthogonalize: Keep the basis and orthogonalise each new block against it.
            basis_dtype: The precision the basis rows are stored in.
            breakdown: Relative singular value below which a direction has met an invariant
                subspace.
            generator: Replace such directions (and grow the block) with random vectors drawn
                from it (default: the block narrows).
            grow: Allocate the basis as the steps need it, not ``capacity`` rows up front.
        """
        self.n = int(start.shape[0])
        self.device = start.device
        self.capacity = int(capacity)
        self.breakdown = float(breakdown)
        self.generator = generator
        self.A: list[np.ndarray] = []  # diagonal blocks
        self.B: list[np.ndarray] = []  # B[j] (sizes[j+1], sizes[j]): R_j = Q_{j+1} B[j]
        self.sizes: list[int] = []  # widths of the absorbed blocks
        self.rows = 0  # basis rows absorbed
        # The n-sized working rows (the block, its residual) are kept in the basis's precision:
        # with a float32 basis they are its stored rows, and no float64 copy of them is made.
        self.work = basis_dtype if reorthogonalize else torch.float64
        self._V = start.to(self.work).T.contiguous()  # the current block, as rows (b, n)
        self._P: Tensor | None = None  # the previous block's rows
        self._R: Tensor | None = None  # the current block's residual rows, after absorb
        self.Q: Tensor | None = None
        if reorthogonalize:
            b = self._V.shape[0]
            if grow:
                self.Q = _first_rows(b, self.capacity, self.n, basis_dtype, self.device)
            else:
                self.Q = _rows(self.capacity, self.n, basis_dtype, self.device)
            self._V = self._store(0, self._V)

    @classmethod
    def resume(
        cls, basis: KrylovBasis, *, capacity: int, reorthogonalize: bool, breakdown: float
    ) -> BlockLanczos:
        """The recurrence of a finished run (its ``basis``), ready to :meth:`advance`."""
        assert basis.R is not None
        m, sizes = basis.Q.shape[0], list(basis.sizes)
        last = basis.Q[m - sizes[-1] :].to(torch.float64)  # a resumed run works in float64
        rec = cls(last.T, capacity=1, reorthogonalize=False, breakdown=breakdown)
        rec.capacity = max(int(capacity), m + sizes[-1])
        if reorthogonalize:
            rec.Q = _rows(rec.capacity, rec.n, torch.float64, rec.device)
            rec.Q[:m] = basis.Q.to(torch.float64)
        edges = np.concatenate([[0], np.cumsum(sizes)])
        for j in range(len(sizes)):
            rec.A.append(basis.T[edges[j] : edges[j + 1], edges[j] : edges[j + 1]].copy())
            if j + 1 < len(sizes):
                rec.B.append(basis.T[edges[j + 1] : edges[j + 2], edges[j] : edges[j + 1]].copy())
        rec.sizes, rec.rows = sizes, m
        rec._R = basis.R.to(torch.float64, copy=True)  # advance consumes it
        return rec

    @property
    def V(self) -> Tensor:
        """The current block (n, b), in :attr:`work` precision (width 0 once the run has ended)."""
        return self._V.T

    @property
    def width(self) -> int:
        """The current block's width."""
        return int(self._V.shape[0])

    def basis(self) -> Tensor:
        """The basis rows absorbed so far, shape (rows, n)."""
        assert self.Q is not None
        return self.Q[: self.rows]

    def T(self) -> np.ndarray:
        """The block tridiagonal projection ``Q H Qᵀ`` of the blocks absorbed so far."""
        edges = np.concatenate([[0], np.cumsum(self.sizes)]).astype(int)
        T = np.zeros((self.rows, self.rows))
        for j, A in enumerate(self.A):
            T[edges[j] : edges[j + 1], edges[j] : edges[j + 1]] = A
            if j + 1 < len(self.A):
                Bj = self.B[j]
                T[edges[j + 1] : edges[j + 2], edges[j] : edges[j + 1]] = Bj
                T[edges[j] : edges[j + 1], edges[j + 1] : edges[j + 2]] = Bj.T
        return T

    def residual_norms(self, S: np.ndarray) -> np.ndarray:
        """``‖R s_last‖`` for T's eigenvectors ``S`` (columns): the Ritz residual estimates."""
        assert self._R is not None
        b = self._R.shape[0]
        G = _gram(self._R, self._R).cpu().numpy()
        last = S[-b:, :]
        return np.sqrt(np.maximum(np.sum(last * (G @ last), axis=0), 0.0))

    def absorb(self, W: Tensor) -> None:
        """Record one block step from the products ``W = H @ V`` (n, b).

        ``W`` is consumed: its memory becomes the residual's when it is in :attr:`work`
        precision (the products of one step are not kept, so no copy of n-vectors is made).
        The coefficients are float64 sums whatever the rows' precision (:func:`_gram`).
        """
        V = self._V
        R = W.T.to(self.work).contiguous()
        A = _gram(V, R).cpu().numpy()
        A = (A + A.T) / 2
        R.addmm_(torch.as_tensor(A, dtype=self.work, device=self.device), V, alpha=-1.0)
        if self._P is not None and self._P.shape[0]:
            # the previous block as stored (a view of the basis): one scaled subtraction per
            # entry of B, with no copy of its rows
            for i, row in enumerate(self.B[-1]):
                for j, coef in enumerate(row):
                    if coef != 0.0:
                        R[i].sub_(self._P[j], alpha=float(coef))
        self.A.append(A)
        self.sizes.append(self.width)
        self.rows += self.width
        if self.Q is not None:
            R = _rows_orthogonalise(R, self.Q[: self.rows])
        self._R = R

    def advance(self, scale: float | None = None, extra: int = 0) -> None:
        """Form the next block from the residual: deflate, replace, and grow by ``extra``.

        ``scale`` is the caller's estimate of ‖T‖ for the breakdown test (default: the largest
        entry of the diagonal blocks seen so far).
        """
        assert self._R is not None
        R, b = self._R, self._R.shape[0]
        if scale is None:
            scale = max((float(np.abs(A).max()) for A in self.A if A.size), default=0.0)
        tiny = self.breakdown * max(scale, np.finfo(float).tiny)
        if b == 1:
            beta = float(_norms(R[0]))
            keep = beta > tiny
            new = R.div_(beta) if keep else R[:0]
            if keep:  # the residual became the next row (no copy); a vanished one is kept
                self._R = None
            Bn = np.array([[beta]]) if keep else np.zeros((0, 1))
        else:
            Qt, Rt = torch.linalg.qr(R.T)
            U, s, Vh = torch.linalg.svd(Rt.double())
            good = s > tiny
            new = (Qt @ U[:, good].to(Qt.dtype)).T
            Bn = (torch.diag(s) @ Vh)[good].cpu().numpy()
        room = min(self.capacity, self.n) - self.rows
        add = (b - new.shape[0] if self.generator is not None else 0) + int(extra)
        add = max(0, min(add, room - new.shape[0]))
        if add:
            assert self.Q is not None and self.generator is not None
            new = torch.cat([new, self._random_rows(add, new)])
            Bn = np.concatenate([Bn, np.zeros((add, b))])
        new = new[: max(0, room)]
        self.B.append(Bn[: new.shape[0]])
        width = self.width
        self._P = self._V
        self._V = self._store(self.rows, new) if self.Q is not None else new.contiguous()
        if self.Q is not None:  # the stored rows, not a float64 copy of them
            self._P = self.Q[self.rows - width : self.rows]

    def _random_rows(self, count: int, new: Tensor) -> Tensor:
        """``count`` random unit rows orthogonal to the basis and to ``new``."""
        assert self.Q is not None and self.generator is not None
        rows: list[Tensor] = []
        for _ in range(count):
            w = random_unit(self.n, self.generator, self.device, self.work)
            # against the basis, the new rows and the earlier random rows, each in place (no
            # copy of the basis); twice, as a random vector may lie close to their span
            for _ in range(2):
                for part in (self.Q[: self.rows], new, *(r[None] for r in rows)):
                    if part.shape[0]:
                        _orthogonalise(w, part)
            rows.append(w / _norms(w).to(w.dtype))
        return torch.stack(rows)

    def _store(self, row: int, block: Tensor) -> Tensor:
        """Store ``block``'s rows at ``row`` of the basis; returns them as stored (rounded)."""
        assert self.Q is not None
        b = block.shape[0]
        self.Q = _grow(self.Q, row + b, self.capacity)
        self.Q[row : row + b] = block.to(self.Q.dtype)
        return self.Q[row : row + b]

    def krylov_basis(self, ritz: np.ndarray) -> KrylovBasis:
        """The relation ``H Qᵀ = Qᵀ T + Rᵀ Eᵀ`` of the blocks absorbed so far."""
        R = self._R
        if R is not None and (self.rows >= self.n or float(R.norm()) == 0.0):
            R = None
        return KrylovBasis(
            Q=self.basis(),
            T=self.T(),
            sizes=tuple(self.sizes),
            R=None if R is None else R.clone(),
            ritz=ritz,
        )


#: The default block size: 1 for the top eigenvalue alone (its value does not depend on its
#: multiplicity), else 2, grown while Ritz values cluster (:func:`lanczos_run`).
def default_block_size(k: int) -> int:
    """The block size ``lanczos_run`` starts from for the top ``k`` (module docstring)."""
    return 1 if k <= 1 else 2


#: The largest block :func:`lanczos_run` grows to.
MAX_BLOCK = 64
#: Ritz values closer than this (relative), or than 10·tol, count as one cluster.
CLUSTER_RTOL = 1e-3


def clusters(theta: np.ndarray, converged: np.ndarray, rtol: float) -> list[tuple[int, int]]:
    """Runs ``[i, j)`` of consecutive converged values of descending ``theta`` that cluster.

    Neighbours belong to one cluster when ``θᵢ − θᵢ₊₁ ≤ rtol · max(|θᵢ|, |θᵢ₊₁|)``; a value
    that has not converged ends the run (it is not counted as a copy).
    """
    out: list[tuple[int, int]] = []
    i = 0
    while i < len(theta):
        if not converged[i]:
            i += 1
            continue
        j = i + 1
        while j < len(theta) and converged[j]:
            scale = max(abs(theta[j - 1]), abs(theta[j]))
            if theta[j - 1] - theta[j] > rtol * scale:
                break
            j += 1
        out.append((i, j))
        i = j
    return out


def _saturated(runs: list[tuple[int, int]], width: int, k: int) -> int:
    """The size of the largest cluster that may hide copies inside the top ``k`` (else 0).

    A cluster of at least ``width`` copies may have more (the block holds at most ``width``
    directions of an eigenspace); that changes the top ``k`` only when a reported value lies
    below the cluster.
    """
    sizes = [j - i for i, j in runs if j - i >= width and j < k]
    return max(sizes, default=0)


def _start_block(n: int, b: int, generator: torch.Generator, device) -> Tensor:
    """``b`` orthonormal random columns; the first is :func:`random_unit`'s vector."""
    V = torch.stack([random_unit(n, generator, device) for _ in range(b)], 1)
    if b == 1:
        return V
    Q, Rf = torch.linalg.qr(V)
    return Q * torch.sign(torch.diagonal(Rf))


def lanczos_run(
    op: SymmetricOperator,
    k: int = 1,
    *,
    generator: torch.Generator,
    tol: float = 1e-4,
    max_steps: int = 100,
    basis_dtype: torch.dtype | None = None,
    explicit_residuals: bool = True,
    block_size: int = 0,
    max_block: int = MAX_BLOCK,
) -> tuple[LanczosResult, KrylovBasis]:
    r"""Block Lanczos for the ``k`` largest eigenvalues of ``op``, with their multiplicities.

    The run, its clusters, the growth of its block and its certificate are described in the
    module docstring ("Repeated eigenvalues").

    Args:
        op: The symmetric operator (``n``, ``device``, ``matvec``, ``matmat``; ``dtype``).
        k: How many of the largest eigenvalues (at most ``n``).
        generator: The random stream of the start block (and of replacements and growth).
        tol: Stop once each of the ``k`` has residual ≤ ``tol``·|θ|.
        max_steps: The most products (basis rows) of the run.
        basis_dtype: The basis precision; default :func:`basis_dtype_for` (float64 unless the
            basis would exceed :data:`BASIS_BUDGET` with float32 products).
        explicit_residuals: Recompute the reported residuals and ``converged`` flags as
            ‖Hy − θy‖ at the end, with k + 1 more products.
        block_size: The starting block width (0: :func:`default_block_size`; 1: single-vector
            Lanczos, which never grows).
        max_block: The widest block to grow to.

    Returns:
        The result (without eigenvectors) and the Krylov basis of the run.
    """
    n = int(op.n)
    k = max(1, min(int(k), n))
    max_steps = max(k, min(int(max_steps), n))
    b = int(block_size) or default_block_size(k)
    b = max(1, min(b, max_steps, n))
    max_block = max(b, min(int(max_block), max_steps, n))
    device = getattr(op, "device", torch.device("cpu"))
    if basis_dtype is None:
        basis_dtype = basis_dtype_for(n, max_steps, getattr(op, "dtype", torch.float64))
    rec = BlockLanczos(
        _start_block(n, b, generator, device),
        capacity=max_steps,
        basis_dtype=basis_dtype,
        generator=generator,
    )
    rtol = max(10.0 * tol, CLUSTER_RTOL)
    growable = block_size != 1 and b < max_block
    theta, S, res, settled = _iterate(op, rec, k, tol, max_steps, rtol, growable, max_block)
    m = rec.rows
    order = np.arange(m - 1, m - 1 - min(k, m), -1)
    spent = m
    if explicit_residuals:
        res = _explicit_residuals(op, rec.basis(), S, theta, order, res)
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
        orthogonality=orthogonality(rec.basis()),
        **_certificate(theta, res, len(order), tol, rtol, rec, settled),
    )
    return result, rec.krylov_basis(S[:, order].copy())


def _certificate(theta, res, k: int, tol: float, rtol: float, rec, settled: bool) -> dict:
    """The top-k's gaps and multiplicity fields (module docstring, "Repeated eigenvalues")."""
    m, desc = len(theta), theta[::-1]
    runs = clusters(desc, res[::-1] <= tol * np.abs(desc), rtol)
    return {
        "gaps": np.array([desc[i] - desc[i + 1] if i + 1 < m else np.inf for i in range(k)]),
        "block_size": max(rec.sizes),
        # the whole space (m = n) gives every eigenvalue with every copy
        "multiplicity_resolved": m >= rec.n
        or (settled and _saturated(runs, max(rec.sizes), k) == 0),
        "largest_cluster": max((min(j, k) - i for i, j in runs if i < k), default=1),
    }


def _iterate(op, rec: BlockLanczos, k, tol, max_steps, rtol, growable: bool, max_block: int):
    """Block steps until the top ``k`` converge with no saturated cluster, or the budget ends.

    When a cluster fills the block, the block grows and the run goes on for at least as many
    block steps as that cluster took to first show a converged value (its new directions start
    from random vectors, as the first ones did). Returns ``(Ritz values ascending, T's
    eigenvectors, residual estimates, settled)``; ``settled`` is False when the run ended while
    a grown block was still settling.
    """
    seen: list[np.ndarray] = []  # the converged Ritz values of each block step
    settle = 0
    steps = 0
    while True:
        rec.absorb(op.matmat(rec.V))
        steps += 1
        theta, S = np.linalg.eigh(rec.T())
        res = rec.residual_norms(S)
        desc, ok = theta[::-1], (res <= tol * np.abs(theta))[::-1]
        seen.append(desc[ok])
        m = rec.rows
        extra = 0
        if m >= k and bool(np.all(ok[:k])):
            runs = clusters(desc, ok, rtol)
            full = _saturated(runs, rec.width, k)
            if full and growable and rec.width < max_block:
                extra = min(max_block, max(2 * rec.width, full + 1)) - rec.width
                i = next(i for i, j in runs if j - i == full and j < k)
                settle = steps + _first_seen(seen, desc[i], rtol)
            elif steps >= settle:
                break
        # The space's own size may cut the last block (the residual then has no more
        # directions than are left); the budget ends the run at a whole block.
        if m >= rec.n or m + min(rec.width + extra, rec.n - m) > max_steps:
            break
        rec.advance(max(np.abs(theta).max(), np.finfo(float).tiny), extra=extra)
        if rec.width == 0:
            break
    return theta, S, res, steps >= settle or rec.rows >= rec.n


def _first_seen(seen: list[np.ndarray], value: float, rtol: float) -> int:
    """The first block step (1-based) whose converged Ritz values include ``value``."""
    for step, values in enumerate(seen, 1):
        if np.any(np.abs(values - value) <= rtol * abs(value)):
            return step
    return len(seen)


def _explicit_residuals(op, Q: Tensor, S, theta, order, res) -> np.ndarray:
    """``res`` with the reported pairs' (and λmin's) entries replaced by ‖Hy − θy‖.

    The recurrence's residual estimate assumes exact products; with float32 HVPs it can sit far
    below the truth, so the residual itself is recomputed: one more product per pair (and λmin).
    """
    cols = [*order.tolist(), 0]
    coeff = torch.as_tensor(S[:, cols], dtype=torch.float64, device=Q.device)
    # a few Ritz vectors per product, in the basis's precision: with their products (and the
    # operator's copies of them) they take about 3 n-vectors each
    chunk = max(1, _RESIDUAL_BYTES // max(1, 3 * Q.element_size() * int(Q.shape[1])))
    true = np.empty(len(cols))
    for at in range(0, len(cols), chunk):
        part = coeff[:, at : at + chunk]
        Y = (part.T.to(Q.dtype) @ Q).T  # (n, c) Ritz vectors, unit up to the basis's rounding
        size = _norms(Y)  # |λ − θ| ≤ ‖Hy − θy‖ / ‖y‖ holds for any y ≠ 0
        HY = op.matmat(Y)
        for j in range(Y.shape[1]):
            HY[:, j].sub_(Y[:, j].to(HY.dtype), alpha=float(theta[cols[at + j]]))
        true[at : at + Y.shape[1]] = (_norms(HY) / size).cpu().numpy()
        del Y, HY
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
    block_size: int = 0,
) -> LanczosResult:
    """The ``k`` algebraically largest eigenvalues of ``op`` with residuals (:func:`lanczos_run`).

    Args:
        op: The symmetric operator.
        k: How many eigenvalues.
        generator: The random stream of the start block.
        tol: Relative residual to stop at (residual ≤ tol·|λ|).
        max_steps: The most products of the run.
        eigenvectors: Also return the unit Ritz vectors (k, n) as float32 (within a cluster,
            an orthonormal basis of its invariant subspace).
        block_size: The starting block width (0: :func:`default_block_size`).
    """
    result, basis = lanczos_run(
        op, k, tol=tol, max_steps=max_steps, generator=generator, block_size=block_size
    )
    if eigenvectors:
        result = replace(result, eigenvectors=ritz_vectors(basis))
    return result
