"""The one Lanczos kernel: the Lanczos relation, independent columns, breakdown handling."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from cases import DenseOp

from landscape_cli.hessian.lanczos import BlockLanczos, advance_together, tridiagonal
from landscape_cli.hessian.sampling import random_unit, unit_rademacher


def _matrix(n: int = 30, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    A = torch.randn(n, n, generator=g, dtype=torch.float64)
    return (A + A.T) / 2


class Dense:
    def __init__(self, H: torch.Tensor) -> None:
        self.H, self.n, self.device = H, H.shape[0], torch.device("cpu")

    def matmat(self, V: torch.Tensor) -> torch.Tensor:
        return self.H @ V


def _run(H: torch.Tensor, start: torch.Tensor, steps: int, **kw) -> BlockLanczos:
    """One single-vector recurrence from ``start`` (n, 1), ``steps`` steps or an end."""
    rec = BlockLanczos(start, capacity=steps, grow=False, **kw)
    advance_together(Dense(H), [rec], steps)
    return rec


@pytest.mark.parametrize("reorthogonalize", [True, False])
def test_a_single_vector_run_satisfies_the_lanczos_relation(reorthogonalize):
    H, m = _matrix(), 8
    start = unit_rademacher(H.shape[0], 1, torch.Generator().manual_seed(1))
    rec = _run(H, start, m, reorthogonalize=reorthogonalize)
    T = torch.as_tensor(rec.T())
    assert torch.equal(T, torch.as_tensor(tridiagonal(np.diag(T), np.diag(T, -1))))
    # Rebuild the basis from the recurrence alone: q_{j+1} = (H q_j − α_j q_j − β_{j−1}
    # q_{j−1}) / β_j, then check H Q = Q T + r e_mᵀ against the dense matrix.
    Q = torch.zeros(H.shape[0], m, dtype=torch.float64)
    Q[:, 0] = start[:, 0]
    for j in range(m - 1):
        r = H @ Q[:, j] - T[j, j] * Q[:, j] - (T[j - 1, j] * Q[:, j - 1] if j else 0)
        Q[:, j + 1] = r / T[j, j + 1]
    E = torch.zeros(1, m, dtype=torch.float64)
    E[0, -1] = 1.0
    lhs, rhs = H @ Q, Q @ T + rec._R.T @ E
    torch.testing.assert_close(lhs, rhs, atol=1e-9, rtol=0)
    torch.testing.assert_close(Q.T @ Q, torch.eye(m, dtype=torch.float64), atol=1e-9, rtol=0)


def test_recurrences_advanced_together_equal_each_alone():
    H = _matrix(seed=2)
    start = unit_rademacher(H.shape[0], 4, torch.Generator().manual_seed(3))
    together = [BlockLanczos(start[:, p : p + 1], capacity=10, grow=False) for p in range(4)]
    assert advance_together(Dense(H), together, 10) == 40  # one product per live column
    for p in range(4):
        alone = _run(H, start[:, p : p + 1].clone(), 10)
        np.testing.assert_allclose(together[p].T(), alone.T(), rtol=1e-12, atol=1e-12)


def test_breakdown_ends_a_run_or_restarts_it_orthogonally():
    # Five distinct eigenvalues: every Krylov space is at most 5-dimensional.
    d = torch.tensor([5.0, 4.0, 3.0, 2.0, 1.0] * 4, dtype=torch.float64)
    H = torch.diag(d)
    start = random_unit(20, torch.Generator().manual_seed(0), "cpu")[:, None]
    ended = _run(H, start, 12)
    assert ended.width == 0 and ended.rows == 5  # exact: T's spectrum is H's
    np.testing.assert_allclose(np.linalg.eigvalsh(ended.T()), [1, 2, 3, 4, 5], atol=1e-10)
    spent = advance_together(Dense(H), [BlockLanczos(start, capacity=12)], 12)
    assert spent == 5  # an ended recurrence takes no more products
    restarted = _run(H, start, 12, generator=torch.Generator().manual_seed(1))
    assert restarted.width == 1 and restarted.rows == 12
    assert restarted.T()[5, 4] == 0.0  # the coupling after the invariant subspace
    Q = restarted.basis()
    torch.testing.assert_close(Q @ Q.T, torch.eye(12, dtype=torch.float64), atol=1e-10, rtol=0)


def test_float32_basis_rows_are_the_vectors_the_recurrence_uses():
    H = _matrix(seed=4)
    start = random_unit(H.shape[0], torch.Generator().manual_seed(5), "cpu")[:, None]
    rec = BlockLanczos(start, capacity=6, basis_dtype=torch.float32, grow=False)
    for _ in range(5):
        rec.absorb(H @ rec.V.double())
        rec.advance()
    assert rec.Q.dtype == torch.float32 and rec.V.dtype == torch.float32
    # The recurrence continues from the stored (rounded) row: V is that row itself, not a copy.
    assert rec.V[:, 0].data_ptr() == rec.Q[rec.rows].data_ptr()


def test_continuing_a_run_leaves_its_basis_untouched():
    from landscape_cli.hessian.density import extend_krylov
    from landscape_cli.hessian.lanczos import lanczos_run

    op = DenseOp(_matrix(seed=6))
    for b in (1, 2):
        _, basis = lanczos_run(
            op, 2, tol=1e-3, max_steps=6, generator=torch.Generator().manual_seed(0), block_size=b
        )
        R, Q = basis.R.clone(), basis.Q.clone()
        extend_krylov(op, basis, 20, reorthogonalize=False)
        extend_krylov(op, basis, 20, reorthogonalize=True)
        assert torch.equal(basis.R, R) and torch.equal(basis.Q, Q)


def _resident() -> int:
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1]) * 1024 for line in fh if line.startswith("VmRSS:"))


def test_a_cpu_basis_is_reserved_once_and_resident_only_where_rows_are_stored():
    # 200 rows of 2^20 float32 entries reserved (800 MiB); 4 stored rows are resident (16 MiB)
    n, capacity = 1 << 20, 200
    start = unit_rademacher(n, 1, torch.Generator().manual_seed(0))
    before = _resident()
    rec = BlockLanczos(start, capacity=capacity, basis_dtype=torch.float32)
    diag = torch.linspace(-1.0, 1.0, n, dtype=torch.float64)

    class Diagonal:
        device = torch.device("cpu")

        def matmat(self, V: torch.Tensor) -> torch.Tensor:
            return V * diag[:, None]

    advance_together(Diagonal(), [rec], 3)
    assert rec.Q is not None and rec.Q.shape[0] == capacity  # no copy will be made to grow
    assert rec.rows == 3
    assert _resident() - before < 200 * 2**20  # far below the 800 MiB reserved


def test_a_basis_the_system_refuses_at_once_is_reserved_in_part_then_grown(monkeypatch):
    from landscape_cli.hessian import lanczos

    real = lanczos._rows

    def at_most_40(count, n, dtype, device):
        if count > 40:
            raise RuntimeError("DefaultCPUAllocator: can't allocate memory")
        return real(count, n, dtype, device)

    monkeypatch.setattr(lanczos, "_rows", at_most_40)
    H = _matrix(60)
    start = unit_rademacher(60, 1, torch.Generator().manual_seed(2))
    rec = BlockLanczos(start, capacity=59)
    assert rec.Q is not None and rec.Q.shape[0] == 29  # 59 refused, then its half granted
    monkeypatch.setattr(lanczos, "_rows", real)
    advance_together(Dense(H), [rec], 40)  # grows past the reservation
    Q = rec.basis()
    assert Q.shape[0] == rec.rows == 40 and rec.Q.shape[0] > 29
    torch.testing.assert_close(Q @ Q.T, torch.eye(40, dtype=torch.float64), atol=1e-10, rtol=0)


def test_gram_schmidt_repeats_only_when_the_norm_drops(monkeypatch):
    from landscape_cli.hessian import lanczos

    g = torch.Generator().manual_seed(2)
    Q = torch.linalg.qr(torch.randn(200, 6, generator=g, dtype=torch.float64))[0].T
    passes = []
    real = lanczos.project
    monkeypatch.setattr(lanczos, "project", lambda *a: passes.append(1) or real(*a))
    # a random vector keeps most of its norm: one pass leaves it orthogonal to rounding
    w = torch.randn(200, generator=g, dtype=torch.float64)
    lanczos._orthogonalise(w, Q)
    assert len(passes) == 1 and float((Q @ w).abs().max()) < 1e-13 * float(w.norm())
    # a vector almost in the span of Q loses nearly all of it: one pass leaves about
    # 1e-16 / 1e-9 of cancellation error; the second pass removes it
    passes.clear()
    w = Q.T @ torch.randn(6, generator=g, dtype=torch.float64)
    w += 1e-9 * torch.randn(200, generator=g, dtype=torch.float64)
    once = w.clone()
    lanczos._subtract_lift(once, Q, lanczos.project(Q, once))
    lanczos._orthogonalise(w, Q)
    assert len(passes) == 2 + 1
    assert float((Q @ w).abs().max()) < 1e-13 * float(w.norm())
    assert float((Q @ once).abs().max()) > 1e-9 * float(once.norm())  # the pass that was needed


def test_a_float32_run_keeps_no_float64_vector_of_the_model_size(monkeypatch):
    """With a float32 basis and float32 products, no float64 tensor of n entries is made.

    Every operation of the run (products, recurrence, reorthogonalisation, Ritz values, explicit
    residuals) is watched; float64 appears only in chunks of the columns and in the small
    matrices (the start block is drawn in float64, before any row is stored). The eigenvalues
    still match float64 eigenvalues to float32 accuracy.
    """
    from torch.utils._python_dispatch import TorchDispatchMode

    from landscape_cli.hessian import lanczos

    n = 4000
    monkeypatch.setattr(lanczos, "GRAM_CHUNK", n // 8)
    g = torch.Generator().manual_seed(3)
    d = torch.cat([torch.tensor([9.0, 8.0, 8.0, 7.0, 6.5]), torch.rand(n - 5, generator=g) * 5])

    class Diagonal:
        device, dtype = torch.device("cpu"), torch.float32

        def __init__(self, d):
            self.d, self.n = d, d.numel()

        def matmat(self, V):
            return self.d.to(V.dtype)[:, None] * V

    widest = []

    class Watch(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            for t in out if isinstance(out, tuple | list) else (out,):
                if isinstance(t, torch.Tensor) and t.dtype == torch.float64:
                    widest.append(max(t.shape, default=1))
            return out

    for b in (1, 2):
        # the start block is drawn in float64 (the seeded stream of every basis precision),
        # before the basis holds a row: drawn here, outside the watch
        start = lanczos._start_block(n, b, torch.Generator().manual_seed(0), "cpu")
        monkeypatch.setattr(lanczos, "_start_block", lambda *a, start=start: start)
        with Watch():
            result, basis = lanczos.lanczos_run(
                Diagonal(d), 4, generator=torch.Generator().manual_seed(0), tol=1e-5,
                max_steps=80, basis_dtype=torch.float32, block_size=b,
            )  # fmt: skip
        assert basis.Q.dtype == torch.float32 and max(widest) < n // 2, (b, max(widest))
        # a single vector finds one copy of the double 8 (block Lanczos both)
        top = [9.0, 8.0, 7.0, 6.5] if b == 1 else [9.0, 8.0, 8.0, 7.0]
        np.testing.assert_allclose(result.eigenvalues, top, rtol=2e-6)
        assert np.all(result.residuals <= 1e-5 * 9.0)
        assert result.orthogonality < 1e-5
        widest.clear()
