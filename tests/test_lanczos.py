"""Block Lanczos (issue 21.1): repeated and clustered eigenvalues are returned with their
multiplicities, and the certificate says when they might not be."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from cases import DenseOp, dense_reference, runner
from torch import nn

from landscape_cli.batches import Batch
from landscape_cli.commands import app
from landscape_cli.hessian import HessianOperator
from landscape_cli.hessian.lanczos import BlockLanczos, clusters, lanczos_run
from landscape_cli.hessian.sampling import random_unit
from landscape_cli.losses import LOSSES


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


# -- the kernel --------------------------------------------------------------------------------


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
