"""The Lanczos basis in float32 for large models (issue 12.5): precision measured, bounds kept."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from cases import DenseOp

from landscape_cli.hessian import lanczos
from landscape_cli.hessian.lanczos import basis_dtype_for, lanczos_run, orthogonality, ritz_vectors
from landscape_cli.hessian.trace import deflated_trace
from landscape_cli.resources import hessian_bytes


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
