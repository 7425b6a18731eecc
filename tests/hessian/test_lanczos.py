"""The Lanczos kernel and its results: the Lanczos relation, breakdowns and restarts; the basis
(reserved once, grown, in float32 for large models, with its measured orthogonality); block
Lanczos's multiplicities and clusters and the certificate that says when they might not be
resolved; and the top eigenvalues against exact dense Hessians."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from cases import DenseOp, Float64Shapes, Quadratic, dense_reference, quadratic_loss, runner
from torch import nn

from landscape_cli.commands import app
from landscape_cli.hessian import Batch, HessianOperator, lanczos, lanczos_top
from landscape_cli.hessian.lanczos import (
    BlockLanczos,
    advance_together,
    basis_dtype_for,
    clusters,
    lanczos_run,
    orthogonality,
    ritz_vectors,
    tridiagonal,
)
from landscape_cli.hessian.sampling import random_unit, unit_rademacher
from landscape_cli.hessian.trace import deflated_trace
from landscape_cli.losses import LOSSES
from landscape_cli.resources import hessian_bytes

# -- the kernel: one recurrence, several together, breakdowns --------------------------------------


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

    for b in (1, 2):
        # the start block is drawn in float64 (the seeded stream of every basis precision),
        # before the basis holds a row: drawn here, outside the watch
        start = lanczos._start_block(n, b, torch.Generator().manual_seed(0), "cpu")
        monkeypatch.setattr(lanczos, "_start_block", lambda *a, start=start: start)
        with Float64Shapes() as watch:
            result, basis = lanczos.lanczos_run(
                Diagonal(d), 4, generator=torch.Generator().manual_seed(0), tol=1e-5,
                max_steps=80, basis_dtype=torch.float32, block_size=b,
            )  # fmt: skip
        widest = max(max(shape, default=1) for shape in watch.shapes)
        assert basis.Q.dtype == torch.float32 and widest < n // 2, (b, widest)
        # a single vector finds one copy of the double 8 (block Lanczos both)
        top = [9.0, 8.0, 7.0, 6.5] if b == 1 else [9.0, 8.0, 8.0, 7.0]
        np.testing.assert_allclose(result.eigenvalues, top, rtol=2e-6)
        assert np.all(result.residuals <= 1e-5 * 9.0)
        assert result.orthogonality < 1e-5


# -- the basis: reserved once, grown, float32 for large models -------------------------------------


class _Diag:
    def __init__(self, d: torch.Tensor) -> None:
        self.d, self.n, self.device = d, d.numel(), torch.device("cpu")

    def matmat(self, v: torch.Tensor) -> torch.Tensor:
        return self.d[:, None] * v

    def matvec(self, v: torch.Tensor) -> torch.Tensor:
        return self.d * v


def test_lanczos_basis_is_reserved_once_and_holds_the_steps_taken(monkeypatch):
    # on the CPU the basis is one reservation (resident only where rows are stored: measured
    # by test_a_cpu_basis_is_reserved_once_and_resident_only_where_rows_are_stored), never
    # copied to grow
    n = 3000
    d = torch.cat([torch.tensor([10.0, 9.0]), torch.linspace(0, 1, n - 2)]).double()
    rows: list[int] = []
    real = lanczos._rows

    def spy(count, width, dtype, device):
        rows.append(count)
        return real(count, width, dtype, device)

    monkeypatch.setattr(lanczos, "_rows", spy)
    result, basis = lanczos.lanczos_run(
        _Diag(d), 1, tol=1e-6, max_steps=n, generator=torch.Generator().manual_seed(0)
    )
    assert result.eigenvalues[0] == pytest.approx(10.0, rel=1e-6)
    assert result.steps < 200  # converged long before max_steps
    assert rows == [n]  # one reservation of the run's capacity, no growth copies
    assert basis.Q.shape == (result.steps, n)


def test_lanczos_growth_keeps_results_and_basis_through_restarts():
    # Two clusters of equal eigenvalues: the recurrence breaks down and restarts; the basis
    # must grow across restarts past its first 16 rows and stay orthonormal.
    d = torch.tensor([2.0] * 20 + [1.0] * 20).double()
    result, basis = lanczos.lanczos_run(
        _Diag(d), 25, tol=1e-8, max_steps=40, generator=torch.Generator().manual_seed(1)
    )
    assert result.steps > 16
    assert np.all(np.isclose(result.eigenvalues, 2.0) | np.isclose(result.eigenvalues, 1.0))
    q = basis.Q
    torch.testing.assert_close(q @ q.T, torch.eye(q.shape[0], dtype=q.dtype), atol=1e-10, rtol=0)


def _spectrum_matrix(n=300, seed=0):
    """A symmetric matrix with a decaying spectrum and a few separated top eigenvalues."""
    g = torch.Generator().manual_seed(seed)
    U, _ = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=torch.float64))
    eig = torch.cat([torch.tensor([50.0, 30.0, 20.0, 12.0, 8.0]), torch.rand(n - 5, generator=g)])
    eig = eig.double() - 0.1
    return (U * eig) @ U.T, torch.sort(eig, descending=True).values.numpy()


def test_basis_dtype_rule(monkeypatch):
    assert basis_dtype_for(24_058, 100, torch.float32) == torch.float64  # 19 MB: float64
    resnet18 = 11_173_962  # 101 rows in float64 = 9 GB > 1 GiB
    assert basis_dtype_for(resnet18, 100, torch.float32) == torch.float32
    assert basis_dtype_for(resnet18, 100, torch.float64) == torch.float64  # float64 products
    assert basis_dtype_for(resnet18, 5, torch.float32) == torch.float64  # 6 rows fit
    monkeypatch.setattr(lanczos, "BASIS_BUDGET", 1000)
    assert basis_dtype_for(300, 20, torch.float32) == torch.float32


def test_float32_basis_keeps_the_certificate_and_measures_orthogonality():
    H, want = _spectrum_matrix()
    op = DenseOp(H)
    r64, _ = lanczos_run(op, 5, tol=1e-6, max_steps=80, generator=torch.Generator().manual_seed(1))
    r32, b32 = lanczos_run(
        op,
        5,
        tol=1e-6,
        max_steps=80,
        generator=torch.Generator().manual_seed(1),
        basis_dtype=torch.float32,
    )
    assert r64.basis_dtype == "float64" and r32.basis_dtype == "float32"
    assert b32.Q.dtype == torch.float32  # the basis is never copied whole to float64
    # The measured loss of orthogonality: float64 at rounding, float32 at float32 rounding.
    assert r64.orthogonality < 1e-12
    assert 1e-9 < r32.orthogonality < 1e-5
    assert r32.orthogonality == pytest.approx(orthogonality(b32.Q), rel=1e-12)
    # The explicit residuals bound the eigenvalue error whatever the basis's precision.
    err = np.abs(r32.eigenvalues - want[:5])
    assert np.all(err <= r32.residuals + 1e-12)
    np.testing.assert_allclose(r32.eigenvalues, r64.eigenvalues, rtol=1e-5)
    # The Ritz vectors from the float32 basis are unit eigenvector estimates.
    V = torch.as_tensor(ritz_vectors(b32), dtype=torch.float64)
    np.testing.assert_allclose(V.norm(dim=1).numpy(), 1.0, atol=1e-5)
    rayleigh = ((V @ H) * V).sum(1).numpy()
    np.testing.assert_allclose(rayleigh, r32.eigenvalues, rtol=1e-5)


def test_float32_basis_is_picked_automatically_for_float32_products(monkeypatch):
    H, want = _spectrum_matrix(n=200, seed=2)
    op = DenseOp(H.float())
    monkeypatch.setattr(lanczos, "BASIS_BUDGET", 10 * 200 * 8)  # 10 float64 rows
    res, basis = lanczos_run(
        op, 3, tol=1e-4, max_steps=60, generator=torch.Generator().manual_seed(0)
    )
    assert res.basis_dtype == "float32" and basis.Q.dtype == torch.float32
    assert np.all(np.abs(res.eigenvalues - want[:3]) <= res.residuals + 1e-4)


def test_deflated_trace_with_a_float32_basis_matches_float64():
    H, want = _spectrum_matrix(seed=3)
    exact = float(np.sum(want))
    op = DenseOp(H)
    _, b64 = lanczos_run(op, 5, tol=1e-6, max_steps=40, generator=torch.Generator().manual_seed(0))
    _, b32 = lanczos_run(
        op,
        5,
        tol=1e-6,
        max_steps=40,
        generator=torch.Generator().manual_seed(0),
        basis_dtype=torch.float32,
    )
    t64 = deflated_trace(
        op, b64, probes=30, rtol=0.0, generator=torch.Generator().manual_seed(4), adaptive=False
    )
    t32 = deflated_trace(
        op, b32, probes=30, rtol=0.0, generator=torch.Generator().manual_seed(4), adaptive=False
    )
    assert t32.estimate == pytest.approx(t64.estimate, rel=1e-5)
    assert abs(t32.estimate - exact) <= 4 * t32.stderr + 1e-6 * abs(exact)


def test_memory_guess_follows_the_basis_dtype():
    from landscape_cli.hessian import HessianSettings

    s = HessianSettings(top_k=5, max_steps=100)
    n = 11_173_962
    f32 = hessian_bytes(s, n)["Lanczos basis"][0]
    f64 = hessian_bytes(s, n, products_float64=True)["Lanczos basis"][0]
    rows = 101 * 5 // 3 + 1 + 3 * 6  # the rows, and the working rows in the basis's dtype
    assert f64 - f32 == rows * n * 4  # the rows are half the bytes in float32


def test_memory_guess_on_the_cpu_counts_the_rows_stored_not_a_growth_copy():
    from landscape_cli.hessian import HessianSettings

    s = HessianSettings(top_k=5, max_steps=100)
    n = 11_173_962
    cpu = hessian_bytes(s, n, device="cpu")["Lanczos basis"][0]
    elsewhere = hessian_bytes(s, n, device="cuda:0")["Lanczos basis"][0]
    vectors = 3 * 6 * n * 4  # the working rows (float32 as the basis), the same everywhere
    assert cpu - vectors == (101 + 8) * n * 4  # every row the run may store, and a grown block
    assert elsewhere - vectors == (101 * 5 // 3 + 1) * n * 4
    # single-vector runs never grow a block: the rows the run stores, and no more
    for k, block in ((1, 0), (5, 1)):
        single = hessian_bytes(
            HessianSettings(top_k=k, max_steps=100, block_size=block), n, device="cpu"
        )
        assert single["Lanczos basis"][0] == (101 + 3 * (k + 1)) * n * 4


# -- block Lanczos ---------------------------------------------------------------------------------


def _spectrum(top: list[float], n: int = 400, seed: int = 0) -> tuple[torch.Tensor, np.ndarray]:
    """A dense symmetric matrix with eigenvalues ``top`` and n − len(top) more in [0, 0.5)."""
    g = torch.Generator().manual_seed(seed)
    rest = torch.rand(n - len(top), generator=g, dtype=torch.float64) * 0.5
    d = torch.cat([torch.tensor(top, dtype=torch.float64), rest])
    Q, _ = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=torch.float64))
    return Q @ torch.diag(d) @ Q.T, np.sort(d.numpy())[::-1]


def _top(H: torch.Tensor, k: int, seed: int = 0, **kw):
    result, _ = lanczos_run(
        DenseOp(H),
        k,
        generator=torch.Generator().manual_seed(seed),
        max_steps=kw.pop("max_steps", H.shape[0]),
        **kw,
    )
    return result


# -- the block kernel: the block relation, breakdowns, clusters -----------------------------------


def test_block_relation_holds_and_the_basis_is_orthonormal():
    g = torch.Generator().manual_seed(0)
    A = torch.randn(40, 40, generator=g, dtype=torch.float64)
    H = (A + A.T) / 2
    start, _ = torch.linalg.qr(torch.randn(40, 3, generator=g, dtype=torch.float64))
    rec = BlockLanczos(start, capacity=40, reorthogonalize=True)
    for _ in range(5):
        rec.absorb(H @ rec.V)
        rec.advance(scale=float(H.abs().max()))
    rec.absorb(H @ rec.V)
    Q, T = rec.basis(), torch.as_tensor(rec.T())
    assert Q.shape == (18, 40) and rec.sizes == [3] * 6
    torch.testing.assert_close(Q @ Q.T, torch.eye(18, dtype=torch.float64), atol=1e-12, rtol=0)
    rhs = Q.T @ T
    rhs[:, -3:] += rec._R.T  # H Qᵀ = Qᵀ T + Rᵀ E
    torch.testing.assert_close(H @ Q.T, rhs, atol=1e-10, rtol=0)
    # T is block tridiagonal: Q H Qᵀ has nothing beyond the first off-diagonal blocks
    torch.testing.assert_close(Q @ H @ Q.T, T, atol=1e-10, rtol=0)
    assert torch.all(T[6:, :3] == 0)


def test_a_block_finds_every_copy_of_an_eigenvalue_of_multiplicity_up_to_its_width():
    # five distinct eigenvalues, each of multiplicity 4: a block of 4 spans every eigenspace
    H = torch.diag(torch.tensor([5.0, 4.0, 3.0, 2.0, 1.0] * 4, dtype=torch.float64))
    g = torch.Generator().manual_seed(1)
    start, _ = torch.linalg.qr(torch.randn(20, 4, generator=g, dtype=torch.float64))
    rec = BlockLanczos(start, capacity=20)
    while rec.width:
        rec.absorb(H @ rec.V)
        rec.advance(scale=5.0)  # no generator: directions that met the invariant subspace end
    np.testing.assert_allclose(
        np.linalg.eigvalsh(rec.T()), np.repeat([1, 2, 3, 4, 5], 4), atol=1e-10
    )


def test_breakdown_directions_are_replaced_orthogonally_and_the_block_can_grow():
    H = torch.diag(torch.tensor([5.0, 4.0, 3.0, 2.0, 1.0] * 4, dtype=torch.float64))
    start = random_unit(20, torch.Generator().manual_seed(0), "cpu")[:, None]
    rec = BlockLanczos(start, capacity=20, generator=torch.Generator().manual_seed(1))
    for step in range(7):
        rec.absorb(H @ rec.V)
        rec.advance(scale=5.0, extra=1 if step == 6 else 0)
    assert rec.B[4].shape == (1, 1) and rec.B[4][0, 0] == 0  # met the invariant subspace
    assert rec.width == 2 and rec.B[-1].shape == (2, 1) and np.all(rec.B[-1][1] == 0)
    rec.absorb(H @ rec.V)
    Q = rec.basis()
    torch.testing.assert_close(
        Q @ Q.T, torch.eye(Q.shape[0], dtype=torch.float64), atol=1e-10, rtol=0
    )
    torch.testing.assert_close(Q @ H @ Q.T, torch.as_tensor(rec.T()), atol=1e-10, rtol=0)


def test_clusters_are_runs_of_converged_values_within_the_relative_gap():
    theta = np.array([4.0, 4.0 * (1 - 1e-6), 4.0 * (1 - 2e-6), 3.0, 2.9999, 1.0])
    ok = np.array([True, True, True, True, True, False])
    assert clusters(theta, ok, 1e-3) == [(0, 3), (3, 5)]
    assert clusters(theta, ok, 1e-9) == [(0, 1), (1, 2), (2, 3), (3, 4), (4, 5)]
    assert clusters(theta, np.array([True, False, True, True, True, True]), 1e-3)[0] == (0, 1)


# -- multiplicities and clusters, at the default tolerance ------------------------------------


@pytest.mark.parametrize("mult", [2, 3, 5, 8, 12, 20])
def test_repeated_eigenvalues_are_returned_with_their_multiplicity(mult):
    top = [4.0] * mult + [3.0] * 2 + [2.0, 1.5]
    H, exact = _spectrum(top, n=300 if mult < 12 else 500)
    k = mult + 3  # a reported value lies below the repeated one: every copy matters
    r = _top(H, k)
    np.testing.assert_allclose(r.eigenvalues, exact[:k], rtol=1e-6)
    assert r.converged.all() and r.multiplicity_resolved
    assert r.largest_cluster == mult and r.block_size > mult
    assert np.all(np.abs(r.eigenvalues - exact[:k]) <= r.residuals + 1e-12)


@pytest.mark.parametrize("gap", [1e-3, 1e-5, 1e-7, 1e-9])
@pytest.mark.parametrize("size", [2, 3, 5])
def test_clustered_eigenvalues_are_all_found(gap, size):
    top = [4.0 * (1 - gap * i) for i in range(size)] + [3.0, 2.5]
    for seed in range(3):
        H, exact = _spectrum(top, n=300, seed=seed)
        r = _top(H, size + 2, seed=seed)
        np.testing.assert_allclose(r.eigenvalues, exact[: size + 2], rtol=1e-6, atol=0)
        assert r.converged.all() and r.multiplicity_resolved


def test_gaps_are_the_distances_to_the_next_ritz_value():
    H, _ = _spectrum([5.0, 4.0, 3.5, 3.0], n=200)
    r = _top(H, 3, tol=1e-10)
    np.testing.assert_allclose(r.gaps, [1.0, 0.5, 0.5], rtol=1e-8)


def test_single_vector_lanczos_never_claims_multiplicities():
    H, _ = _spectrum([4.0] * 3 + [3.0, 2.0], n=200)
    r = _top(H, 5, block_size=1)
    assert r.block_size == 1 and not r.multiplicity_resolved
    r1 = _top(H, 1, block_size=1)  # λmax alone does not depend on how many copies it has
    assert r1.multiplicity_resolved and r1.eigenvalues[0] == pytest.approx(4.0, rel=1e-8)


def test_a_budget_too_small_to_resolve_a_cluster_says_so():
    H, _ = _spectrum([4.0] * 20 + [3.0] * 5, n=300)
    r = _top(H, 25, max_steps=60)
    assert not r.multiplicity_resolved


# -- networks whose Hessians have Kronecker structure (the two models) -----------------


def _linear_data(n: int = 40, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 6, generator=g, dtype=torch.float64)
    y = torch.randn(n, 5, generator=g, dtype=torch.float64)
    return x, y


def test_linear_mse_hessian_top_k_has_every_copy():
    """Linear(6 → 5, bias=False) with the mean squared error over N·5 outputs: H = I₅ ⊗
    (2/(5N)) XᵀX, every eigenvalue five times (the issue's first model)."""
    x, y = _linear_data()
    model = nn.Linear(6, 5, bias=False).double()
    op = HessianOperator(model, [Batch(x, y)], loss="mse", dtype=torch.float64)
    gram = np.linalg.eigvalsh((2 / (5 * len(x)) * x.T @ x).numpy())[::-1]
    exact = np.repeat(gram, 5)
    for seed in range(3):
        r, _ = lanczos_run(op, 7, generator=torch.Generator().manual_seed(seed))
        np.testing.assert_allclose(r.eigenvalues, exact[:7], rtol=1e-6)
        assert r.multiplicity_resolved and r.largest_cluster == 5


class HeadMLP(nn.Module):
    """A small tanh MLP with a Linear(20 → 3) regression head (the issue's second model)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.body = nn.Sequential(nn.Linear(4, 20), nn.Tanh())
        self.head = nn.Linear(20, 3)

    def forward(self, x):
        return self.head(self.body(x))


def test_regression_head_top_k_matches_the_dense_hessian_with_multiplicities():
    g = torch.Generator().manual_seed(3)
    x = torch.randn(64, 4, generator=g, dtype=torch.float64)
    y = torch.randn(64, 3, generator=g, dtype=torch.float64)
    model = HeadMLP().double()
    H = dense_reference(model, x, y, LOSSES["mse"])
    exact = np.sort(np.linalg.eigvalsh(H.numpy()))[::-1]
    op = HessianOperator(model, [Batch(x, y)], loss="mse", dtype=torch.float64)
    for k in (5, 8):
        for seed in range(3):
            r, _ = lanczos_run(op, k, generator=torch.Generator().manual_seed(seed))
            assert np.all(np.abs(r.eigenvalues - exact[:k]) <= r.residuals + 1e-12)
            np.testing.assert_allclose(r.eigenvalues, exact[:k], rtol=1e-6)
            assert r.multiplicity_resolved


LINEAR_MODULE = """
import torch

def lin(input_shape, num_classes):
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(6, 5, bias=False))

def data(split="train"):
    g = torch.Generator().manual_seed(0 if split == "train" else 1)
    x, y = torch.randn(40, 6, generator=g), torch.randn(40, 5, generator=g)
    return torch.utils.data.TensorDataset(x, y)
"""


@pytest.fixture
def linmod(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "linmod.py").write_text(LINEAR_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "linmod", raising=False)
    return tmp_path


def test_cli_reports_every_copy_and_its_certificate(linmod):
    """`landscape hessian --top-k 7` at the default tolerance on the Linear(6 → 5) model:
    [λ1 ×5, λ2 ×2] with gaps, the block size and `multiplicity_resolved` in the JSON, the table
    and the results file."""
    from landscape_cli.results import read_hessian

    ckpt, out = linmod / "lin.pt", linmod / "lin.h5"
    spec = ["--model", "linmod:lin", "--dataset", "linmod:data"]
    made = runner.invoke(
        app, ["train", *spec, "--loss", "mse", "--epochs", "1", "--out", str(ckpt)]
    )
    assert made.exit_code == 0, made.output
    args = ["hessian", str(ckpt), *spec, "--samples", "0", "--top-k", "7", "--trace-probes", "0"]
    args += ["--density-probes", "0", "--out", str(out)]
    result = runner.invoke(app, [*args, "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    x = __import__("linmod").data("train").tensors[0].double()
    gram = np.linalg.eigvalsh((2 / (5 * 40) * x.T @ x).numpy())[::-1]
    # float32 products: the eigenvalues to the certificate's accuracy
    np.testing.assert_allclose(data["eigenvalues"], np.repeat(gram, 5)[:7], rtol=1e-4)
    assert data["multiplicity_resolved"] and data["largest_cluster"] == 5
    assert data["block_size"] >= 2 and len(data["gaps"]) == 7
    stored = read_hessian(out).report.top
    assert stored.multiplicity_resolved and stored.block_size == data["block_size"]
    np.testing.assert_array_equal(stored.gaps, data["gaps"])
    table = runner.invoke(app, [*args, "--overwrite"])
    assert "multiplicities" in table.stdout and "resolved" in table.stdout
    assert "gap" in table.stdout
    single = runner.invoke(app, [*args, "--overwrite", "--block-size", "1"])
    assert single.exit_code == 0 and "NOT resolved" in single.stdout


# -- against exact Hessians of tiny models ---------------------------------------------------------


def test_top10_eigenvalues_match_dense(case):
    op, H = case
    want = np.sort(np.linalg.eigvalsh(H.numpy()))[::-1][:10]
    res = lanczos_top(
        op,
        10,
        tol=1e-10,
        max_steps=op.n,
        generator=torch.Generator().manual_seed(3),
        eigenvectors=True,
    )
    np.testing.assert_allclose(res.eigenvalues, want, rtol=1e-6, atol=1e-9 * abs(want[0]))
    assert np.all(np.diff(res.eigenvalues) <= 0)  # algebraically descending
    # Residuals are honest: the reported ‖Hv − λv‖ is the true one.
    V = torch.as_tensor(res.eigenvectors, dtype=torch.float64)
    lam = torch.as_tensor(res.eigenvalues)
    true = (V @ H - lam[:, None] * V).norm(dim=1).numpy()
    float32_rounding = 1e-6 * abs(want[0])  # the eigenvectors are stored as float32
    assert np.all(np.abs(true - res.residuals) <= float32_rounding + 1e-9)
    assert np.all(res.residuals <= 1e-10 * abs(want[0]))
    assert res.converged.all() and res.hvp_count == res.steps + 11  # + explicit residuals


def test_lanczos_relation_and_orthonormal_basis(case):
    op, H = case
    _result, basis = lanczos_run(
        op, 3, tol=0.0, max_steps=min(25, op.n), generator=torch.Generator().manual_seed(1)
    )
    Q = basis.Q.cpu()  # on the operator's device; the exact H is on the CPU
    m = Q.shape[0]
    torch.testing.assert_close(Q @ Q.T, torch.eye(m, dtype=torch.float64), atol=1e-12, rtol=0)
    T = torch.as_tensor(basis.T)
    torch.testing.assert_close(Q @ H @ Q.T, T, atol=1e-10 * H.norm().item(), rtol=0)
    if basis.R is not None:  # H Qᵀ = Qᵀ T + Rᵀ E (E: the last block's columns)
        lhs = H @ Q.T
        rhs = Q.T @ T
        b = basis.R.shape[0]
        rhs[:, -b:] += basis.R.cpu().T
        torch.testing.assert_close(lhs, rhs, atol=1e-10 * H.norm().item(), rtol=0)


def test_indefinite_hessian_top_is_algebraic_not_largest_magnitude():
    eig = [-7.0, 3.0, 2.5, 1.0, 0.5, 0.1, -0.2, -1.0]
    model = Quadratic(eig)
    x = torch.zeros(4, 1, dtype=torch.float64)
    op = HessianOperator(
        model, [Batch(x, torch.zeros(4))], loss=quadratic_loss(model), dtype=torch.float64
    )
    torch.testing.assert_close(op.dense(), model.A, rtol=1e-12, atol=1e-12)
    res = lanczos_top(op, 3, tol=1e-10, max_steps=8, generator=torch.Generator().manual_seed(0))
    np.testing.assert_allclose(res.eigenvalues, [3.0, 2.5, 1.0], rtol=1e-9)
    assert res.lambda_min == pytest.approx(-7.0, rel=1e-9)


def test_lanczos_restarts_after_an_invariant_subspace():
    # H = diag with a start vector inside a 2-dim invariant subspace would stall; with n = 6 and
    # k = 6 the run must restart to find every eigenvalue.
    H = torch.diag(torch.tensor([5.0, 4.0, 3.0, 2.0, 1.0, 0.5], dtype=torch.float64))
    H[0, 1] = H[1, 0] = 0.0
    res = lanczos_top(
        DenseOp(H), 6, tol=1e-12, max_steps=6, generator=torch.Generator().manual_seed(0)
    )
    np.testing.assert_allclose(res.eigenvalues, [5, 4, 3, 2, 1, 0.5], rtol=1e-10)


def test_lanczos_same_seed_same_numbers(case):
    op, _ = case
    a = lanczos_top(op, 3, generator=torch.Generator().manual_seed(7))
    b = lanczos_top(op, 3, generator=torch.Generator().manual_seed(7))
    assert np.array_equal(a.eigenvalues, b.eigenvalues)


@pytest.mark.parametrize("n", [1024, 3 * 1024 + 17, 5000])
def test_float32_rows_are_multiplied_with_float64_sums(monkeypatch, n):
    from landscape_cli.hessian import lanczos

    monkeypatch.setattr(lanczos, "GRAM_CHUNK", 2 * lanczos.PARTIAL)  # several chunks and a tail
    g = torch.Generator().manual_seed(n)
    X = torch.randn(3, n, generator=g) * torch.logspace(0, 3, n)  # terms of unequal sizes
    Y = torch.randn(2, n, generator=g)
    exact = X.double() @ Y.double().T
    scale = X.double().norm(dim=1)[:, None] * Y.double().norm(dim=1)[None]
    got = lanczos._gram(X, Y)
    assert got.dtype == torch.float64
    assert float(((got - exact).abs() / scale).max()) < 1e-7
    np.testing.assert_allclose(
        lanczos._norms(X.T).numpy(), X.double().norm(dim=1).numpy(), rtol=1e-7
    )
    np.testing.assert_allclose(float(lanczos._norms(Y[0])), float(Y[0].double().norm()), rtol=1e-7)
