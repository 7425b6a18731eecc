"""Hessian estimators against exact float64 Hessians built by torch.func.hessian on tiny models."""

from __future__ import annotations

import copy
import math
import re

import numpy as np
import pytest
import torch
from cases import (
    CASES,
    DenseOp,
    batches,
    data,
    dense_reference,
)
from torch import nn

from landscape_cli.errors import LandscapeError
from landscape_cli.hessian import (
    Batch,
    HessianOperator,
    HessianSettings,
    analyze,
    hutchinson_trace,
    hutchpp_trace,
    lanczos_top,
    per_layer_curvature,
    slq_density,
)
from landscape_cli.hessian.density import slq_nodes
from landscape_cli.hessian.lanczos import lanczos_run
from landscape_cli.hessian.sampling import rademacher
from landscape_cli.hessian.trace import _projected_probes, deflated_trace
from landscape_cli.losses import LOSSES

# -- the operator ----------------------------------------------------------------------------


def test_operator_equals_dense_hessian(case):
    op, H = case
    assert op.n == H.shape[0]
    torch.testing.assert_close(op.dense().cpu(), H, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("cache", [True, False])
def test_cached_and_fresh_graphs_agree_bitwise(cache):
    model, x, y, _ = CASES["cnn-bn-eval-ce"]()
    v = torch.randn(sum(p.numel() for p in model.parameters()), dtype=torch.float64)
    op = HessianOperator(model, batches(x, y, 5), dtype=torch.float64, cache_graphs=cache)
    ref = HessianOperator(model, batches(x, y, 5), dtype=torch.float64, cache_graphs=not cache)
    assert op.cache_graphs is cache
    assert torch.equal(op.matvec(v), ref.matvec(v))
    two = op.matmat(torch.stack([v, 2 * v], 1))
    assert torch.equal(two[:, 0], ref.matvec(v))
    torch.testing.assert_close(two[:, 1], 2 * two[:, 0], rtol=1e-14, atol=0)


def test_float32_operator_close_to_float64():
    model, x, y, _ = CASES["mlp-ce"]()
    H = dense_reference(model, x, y, LOSSES["ce"])
    op = HessianOperator(model, batches(x.float(), y, 6), dtype=torch.float32)
    torch.testing.assert_close(op.dense(), H, rtol=1e-4, atol=1e-5)


def test_bn_train_mode_uses_batch_statistics_and_restores_buffers():
    model, x, y, _ = CASES["cnn-bn-eval-ce"]()
    before = {k: v.clone() for k, v in model.named_buffers()}
    op_train = HessianOperator(model, [Batch(x, y)], bn_mode="train", dtype=torch.float64)
    Ht = op_train.dense()
    for k, v in model.named_buffers():
        assert torch.equal(v, before[k]), k
    He = HessianOperator(model, [Batch(x, y)], dtype=torch.float64).dense()
    assert (Ht - He).abs().max() > 1e-3  # batch statistics really were used
    torch.testing.assert_close(Ht, Ht.T, rtol=1e-9, atol=1e-11)
    # Reference, independent of double backward: central differences of the gradient with BN in
    # train mode (torch.func's forward-over-reverse is not usable with BN in train mode).
    ref_model = copy.deepcopy(model).train()
    params = list(ref_model.parameters())
    flat0 = torch.cat([p.detach().reshape(-1) for p in params])

    def grad_at(flat):
        with torch.no_grad():
            torch.nn.utils.vector_to_parameters(flat, params)
        loss = LOSSES["ce"](ref_model(x), y)
        return torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, params)])

    h = 1e-5
    cols = []
    for i in range(len(flat0)):
        e = torch.zeros_like(flat0)
        e[i] = h
        cols.append((grad_at(flat0 + e) - grad_at(flat0 - e)) / (2 * h))
    H_fd = torch.stack(cols, 1)
    torch.testing.assert_close(Ht, H_fd, rtol=1e-6, atol=1e-7)


def test_model_mode_is_restored():
    model, x, y, _ = CASES["mlp-ce"]()
    model.train()
    HessianOperator(model, [Batch(x, y)], dtype=torch.float64).matvec(
        torch.ones(sum(p.numel() for p in model.parameters()), dtype=torch.float64)
    )
    assert model.training


def test_parameters_without_gradient_are_skipped():
    torch.manual_seed(0)

    class TwoHeads(nn.Module):
        def __init__(self):
            super().__init__()
            self.body, self.unused = nn.Linear(4, 3), nn.Linear(4, 3)

        def forward(self, x):
            return self.body(x)

    model = TwoHeads().double()
    x, y = data((4,))
    op = HessianOperator(model, [Batch(x, y)], dtype=torch.float64)
    assert op.skipped == ("unused.weight", "unused.bias")
    assert op.names == ("body.weight", "body.bias") and op.n == 15
    torch.testing.assert_close(
        op.dense(), dense_reference(model.body, x, y, LOSSES["ce"]), rtol=1e-10, atol=1e-12
    )


def test_nondeterministic_model_is_refused():
    class Noisy(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(4, 3)

        def forward(self, x):
            return self.lin(x) * (1 + 0.1 * torch.rand(1, dtype=x.dtype))

    x, y = data((4,))
    with pytest.raises(LandscapeError, match="not deterministic"):
        HessianOperator(Noisy().double(), [Batch(x, y)], dtype=torch.float64)


# -- stochastic Lanczos quadrature ---------------------------------------------------------------


def test_slq_quadrature_is_exact_for_low_degree_moments(case):
    op, H = case
    m, P = 6, 3
    nodes, weights, hvps = slq_nodes(
        op, probes=P, steps=m, generator=torch.Generator().manual_seed(5), reorthogonalize=True
    )
    assert nodes.shape == (P, m) and hvps == P * m
    gen = torch.Generator().manual_seed(5)  # probes are drawn one after the other
    V = torch.cat([rademacher(op.n, 1, gen) for _ in range(P)], 1) / math.sqrt(op.n)
    Hk = torch.eye(op.n, dtype=torch.float64)
    scale = H.norm(2).item()
    for k in range(2 * m):  # exact up to degree 2m − 1
        exact = (V * (Hk @ V)).sum(0).numpy()
        quad = (weights * nodes**k).sum(1)
        np.testing.assert_allclose(quad, exact, rtol=1e-10, atol=1e-12 * scale**k)
        Hk = H @ Hk


def test_density_integrates_to_one_and_its_mean_is_trace_over_n(case):
    op, H = case
    P = 40
    d = slq_density(op, probes=P, steps=min(30, op.n), generator=torch.Generator().manual_seed(2))
    from scipy.integrate import trapezoid

    assert trapezoid(d.density, d.grid) == pytest.approx(1.0, abs=1e-12)
    assert np.all(d.density >= 0)
    np.testing.assert_allclose(d.weights.sum(1), 1.0, rtol=1e-10)
    mean = trapezoid(d.grid * d.density, d.grid)
    # The density's mean is the average of vᵀHv over the probes (Gaussian smoothing keeps means),
    # a Hutchinson estimate of tr(H)/n; compare with the exact value within 4 standard errors.
    per_probe = (d.weights * d.nodes).sum(1)
    assert mean == pytest.approx(per_probe.mean(), rel=1e-4, abs=1e-9)  # grid: ±4σ, trapezoid
    Hn = H.numpy()
    var = 2 * (np.sum(Hn**2) - np.sum(np.diag(Hn) ** 2)) / op.n**2
    assert abs(mean - np.trace(Hn) / op.n) <= 4 * math.sqrt(var / P) + 1e-12


def test_density_sigma_is_relative_to_the_spectrum():
    H = torch.diag(torch.linspace(-1, 5, 30, dtype=torch.float64))
    a = slq_density(DenseOp(H), probes=4, steps=10, generator=torch.Generator().manual_seed(0))
    b = slq_density(
        DenseOp(100 * H), probes=4, steps=10, generator=torch.Generator().manual_seed(0)
    )
    assert b.sigma == pytest.approx(100 * a.sigma, rel=1e-9)
    np.testing.assert_allclose(b.grid, 100 * a.grid, rtol=1e-9)
    np.testing.assert_allclose(b.density * 100, a.density, rtol=1e-7, atol=1e-12)


def test_density_without_reorthogonalisation_is_close():
    H = torch.diag(torch.linspace(0, 1, 200, dtype=torch.float64) ** 3)
    a = slq_density(
        DenseOp(H),
        probes=5,
        steps=40,
        generator=torch.Generator().manual_seed(0),
        reorthogonalize=True,
    )
    b = slq_density(
        DenseOp(H),
        probes=5,
        steps=40,
        generator=torch.Generator().manual_seed(0),
        reorthogonalize=False,
    )
    # The same low moments (mean and variance of the smoothed density) either way.
    from scipy.integrate import trapezoid

    for k in (1, 2):
        ma = trapezoid(a.grid**k * a.density, a.grid)
        mb = trapezoid(b.grid**k * b.density, b.grid)
        assert mb == pytest.approx(ma, rel=1e-3)


# -- trace -----------------------------------------------------------------------------------


def test_hutchinson_converges_to_the_exact_trace(case):
    op, H = case
    exact = torch.trace(H).item()
    res = hutchinson_trace(
        op, probes=4000, rtol=2e-3, generator=torch.Generator().manual_seed(0), block=200
    )
    assert abs(res.estimate - exact) <= 4 * res.stderr
    assert res.stderr <= 2e-3 * abs(res.estimate) + 1e-12 or res.probes == 4000
    # Products carry 25 rounds of 8 probes: the rounds after the one it stopped at are spent.
    assert res.samples.shape == (res.probes,) and res.probes <= res.hvp_count < res.probes + 200


def test_hutchinson_confidence_interval_covers_about_95_percent():
    g = torch.Generator().manual_seed(0)
    A = torch.randn(30, 30, generator=g, dtype=torch.float64)
    H = A @ A.T / 30 + torch.diag(torch.linspace(0, 3, 30, dtype=torch.float64))
    exact = torch.trace(H).item()
    covered = 0
    runs = 300
    for seed in range(runs):
        r = hutchinson_trace(
            DenseOp(H), probes=30, rtol=0.0, generator=torch.Generator().manual_seed(seed)
        )
        covered += r.ci95[0] <= exact <= r.ci95[1]
    assert 0.90 * runs <= covered <= 0.99 * runs


def test_deflated_trace_plain_samples_equal_hutchinson_samples(case):
    op, H = case
    _, basis = lanczos_run(
        op, 3, tol=1e-8, max_steps=10, generator=torch.Generator().manual_seed(0)
    )
    plain_ref = hutchinson_trace(
        op, probes=24, rtol=0.0, generator=torch.Generator().manual_seed(11)
    ).samples
    deflated, plain, spent = _projected_probes(
        op,
        basis.Q,
        probes=24,
        rtol=0.0,
        min_probes=24,
        block=8,
        gen=torch.Generator().manual_seed(11),
        exact=float(basis.alpha.sum()),
        extra=_plain_hook(basis),
    )
    np.testing.assert_allclose(plain, plain_ref, rtol=1e-9, atol=1e-9)
    # And the deflated samples are unbiased: their mean is within 5 standard errors of tr(H).
    assert spent == 24 and len(deflated) == 24
    stderr = deflated.std(ddof=1) / math.sqrt(24)
    assert abs(deflated.mean() - torch.trace(H).item()) <= 5 * stderr + 1e-9


def _plain_hook(basis):
    T = torch.as_tensor(basis.T)

    def hook(Z, C, HZp):
        s = (Z * HZp).sum(0) + (C * (T @ C)).sum(0)
        if basis.R is not None:  # H Qᵀ = Qᵀ T + Rᵀ E: the last block's residual
            s = s + (C[-basis.R.shape[0] :] * (basis.R @ Z)).sum(0)
        return s

    return hook


def test_deflation_on_a_decaying_spectrum_beats_hutchinson():
    g = torch.Generator().manual_seed(3)
    q, _ = torch.linalg.qr(torch.randn(200, 200, generator=g, dtype=torch.float64))
    eig = 100.0 * 0.6 ** torch.arange(200, dtype=torch.float64) + 1e-3
    H = q @ torch.diag(eig) @ q.T
    exact = eig.sum().item()
    _, basis = lanczos_run(
        DenseOp(H), 5, tol=1e-6, max_steps=30, generator=torch.Generator().manual_seed(0)
    )
    d = deflated_trace(
        DenseOp(H), basis, probes=20, rtol=0.0, generator=torch.Generator().manual_seed(1)
    )
    h = hutchinson_trace(
        DenseOp(H), probes=20, rtol=0.0, generator=torch.Generator().manual_seed(1)
    )
    assert d.method == "deflated-hutchinson"
    assert abs(d.estimate - exact) < 1e-3 * exact
    assert d.stderr < 0.01 * h.stderr


def test_adaptive_trace_falls_back_to_hutchinson_on_a_diagonal_matrix():
    H = torch.diag(torch.linspace(1, 2, 50, dtype=torch.float64))  # Rademacher: zero variance
    _, basis = lanczos_run(
        DenseOp(H), 2, tol=1e-3, max_steps=4, generator=torch.Generator().manual_seed(0)
    )
    t = deflated_trace(DenseOp(H), basis, probes=20, generator=torch.Generator().manual_seed(0))
    assert t.method == "hutchinson" and t.estimate == pytest.approx(75.0, rel=1e-12)


def test_full_basis_deflation_is_exact():
    g = torch.Generator().manual_seed(4)
    A = torch.randn(12, 12, generator=g, dtype=torch.float64)
    H = A + A.T
    _, basis = lanczos_run(
        DenseOp(H), 12, tol=0.0, max_steps=12, generator=torch.Generator().manual_seed(0)
    )
    t = deflated_trace(
        DenseOp(H), basis, probes=10, generator=torch.Generator().manual_seed(0), adaptive=False
    )
    assert t.estimate == pytest.approx(torch.trace(H).item(), abs=1e-9)
    assert t.stderr < 1e-9


def test_hutchpp_is_accurate_on_low_rank_plus_noise():
    g = torch.Generator().manual_seed(5)
    U = torch.randn(300, 5, generator=g, dtype=torch.float64)
    H = U @ U.T * 10 + 0.01 * torch.eye(300, dtype=torch.float64)
    exact = torch.trace(H).item()
    pp = hutchpp_trace(DenseOp(H), probes=60, generator=torch.Generator().manual_seed(0))
    h = hutchinson_trace(
        DenseOp(H), probes=60, rtol=0.0, generator=torch.Generator().manual_seed(0)
    )
    assert pp.method == "hutch++" and pp.hvp_count == 60
    assert abs(pp.estimate - exact) < 1e-6 * exact
    assert abs(pp.estimate - exact) < abs(h.estimate - exact)


# -- per-layer ---------------------------------------------------------------------------------


def test_per_layer_blocks_match_dense_diagonal_blocks(case):
    op, H = case
    layers, _hvps = per_layer_curvature(
        op, steps=op.n, probes=3000, generator=torch.Generator().manual_seed(0)
    )
    assert [layer.name for layer in layers] == list(op.names)
    for layer, (_, start, stop) in zip(layers, op.blocks(), strict=True):
        block = H[start:stop, start:stop]
        lam = torch.linalg.eigvalsh(block)[-1].item()
        assert layer.lambda_max == pytest.approx(lam, rel=1e-8, abs=1e-10)
        assert abs(layer.trace - torch.trace(block).item()) <= 5 * layer.trace_stderr + 1e-9


# -- the whole analysis --------------------------------------------------------------------------


def test_analyze_is_reproducible_and_streams_are_independent(case):
    op, _H = case
    s = HessianSettings(top_k=3, trace_probes=30, density_probes=3, lanczos_steps=8, seed=4)
    a, b = analyze(op, s), analyze(op, s)
    assert np.array_equal(a.top.eigenvalues, b.top.eigenvalues)
    assert np.array_equal(a.trace.samples, b.trace.samples)
    assert np.array_equal(a.density.nodes, b.density.nodes)
    # Switching the trace off does not change the density's numbers.
    c = analyze(
        op, HessianSettings(top_k=3, trace_probes=0, density_probes=3, lanczos_steps=8, seed=4)
    )
    assert c.trace is None and np.array_equal(c.density.nodes, a.density.nodes)


def test_analyze_reports_each_result_as_it_finishes_and_keeps_them_when_interrupted(case):
    """``on_result`` gets every estimate once, in the order computed, and a ``Collector`` holds
    the same ``Analysis`` that ``analyze`` returns; cut short (Ctrl-C as the per-layer phase
    starts), the collector still holds the others, bit for bit those of a whole run."""
    from landscape_cli.hessian import Analysis, Collector

    op, _H = case
    s = HessianSettings(top_k=2, trace_probes=10, density_probes=2, lanczos_steps=6, seed=2,
                        per_layer=True, per_layer_steps=3, per_layer_probes=2)  # fmt: skip
    seen, collected = [], Collector()

    def record(name, value):
        seen.append(name)
        collected.record(name, value)

    whole = analyze(op, s, on_result=record)
    assert isinstance(whole, Analysis) and seen == ["top", "trace", "density", "per_layer"]
    assert collected.freeze() == whole and whole.computed and len(whole.per_layer) > 0

    def interrupt(name, budget):
        if name == "per-layer":
            raise KeyboardInterrupt

    cut = Collector()
    with pytest.raises(KeyboardInterrupt):
        analyze(op, s, on_result=cut.record, on_phase=interrupt)
    kept = cut.freeze()
    assert kept.per_layer == () and kept.computed
    assert np.array_equal(kept.top.eigenvalues, whole.top.eigenvalues)
    assert kept.trace.estimate == whole.trace.estimate
    assert np.array_equal(kept.density.nodes, whole.density.nodes)
    assert not Collector().freeze().computed
    with pytest.raises(ValueError, match="not a field"):
        cut.record("eigenvalues", None)


def test_pyhessian_agrees_on_lambda_max():
    pyhessian = pytest.importorskip("pyhessian")
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 3))
    x, y = torch.randn(64, 6), torch.randint(0, 3, (64,))
    ours = lanczos_top(
        HessianOperator(model, [Batch(x, y)]),
        1,
        tol=1e-8,
        generator=torch.Generator().manual_seed(0),
    )
    torch.manual_seed(0)
    comp = pyhessian.hessian(model, nn.CrossEntropyLoss(), data=(x, y), cuda=False)
    theirs = comp.eigenvalues(maxIter=500, tol=1e-6, top_n=1)[0][0]
    assert ours.eigenvalues[0] > 0
    assert theirs == pytest.approx(ours.eigenvalues[0], rel=1e-3)


# -- adaptive density -----------------------------------------------------------------------------


def test_adaptive_density_stops_within_its_tolerance_of_the_exact_spectrum():
    """The stopping rule on an exact dense Hessian: with exact quadrature (steps = n) the only
    error is the probes', and the density it stops at is within ``tol`` (W1 / range) of the
    exact eigenvalue distribution, as the rule promises for the expected error."""
    from landscape_cli.hessian.density import wasserstein1

    model, x, y, loss = CASES["mlp-ce"]()
    H = dense_reference(model, x, y, LOSSES[loss]).detach()
    ev = torch.linalg.eigvalsh(H).numpy()
    n, spread = len(ev), float(ev.max() - ev.min())
    exact_w = np.full((1, n), 1.0 / n)
    tol = 0.02
    errors, used = [], []
    for seed in range(20):
        d = slq_density(
            DenseOp(H), probes=200, steps=n, generator=torch.Generator().manual_seed(seed), tol=tol
        )
        assert d.achieved_tol <= tol and d.probes < 200 and d.tol == tol
        errors.append(wasserstein1(d.nodes, d.weights, ev[None], exact_w) / spread)
        used.append(d.probes)
    errors = np.array(errors)
    assert errors.mean() <= tol and np.median(errors) <= tol
    assert max(used) > 2  # the rule adapted: one or two probes are far from enough here
    # One probe alone is not within the tolerance (the test has teeth).
    single = slq_density(DenseOp(H), probes=1, steps=n, generator=torch.Generator().manual_seed(0))
    assert wasserstein1(single.nodes, single.weights, ev[None], exact_w) / spread > tol
    # A tighter tolerance needs more probes and gets closer.
    tight = [
        slq_density(
            DenseOp(H), probes=400, steps=n, generator=torch.Generator().manual_seed(s), tol=tol / 2
        )
        for s in range(20)
    ]
    assert np.mean([t.probes for t in tight]) > 2 * np.mean(used)
    tight_err = [wasserstein1(t.nodes, t.weights, ev[None], exact_w) / spread for t in tight]
    assert np.mean(tight_err) <= tol / 2


def test_adaptive_density_with_tol_zero_uses_every_probe_and_probes_are_a_prefix():
    H = torch.diag(torch.linspace(-1, 5, 40, dtype=torch.float64))
    full = slq_density(DenseOp(H), probes=6, steps=10, generator=torch.Generator().manual_seed(3))
    assert full.probes == 6 and math.isfinite(full.achieved_tol)
    loose = slq_density(
        DenseOp(H), probes=6, steps=10, generator=torch.Generator().manual_seed(3), tol=0.5
    )
    assert loose.probes == 2  # at least two, and two are enough for a loose tolerance
    np.testing.assert_array_equal(loose.nodes, full.nodes[:2])


@pytest.mark.parametrize("width", [1, 2])
def test_density_first_probes_continue_the_top_k_run_exactly(case, width):
    """The top-k (block) Lanczos run extended to m block steps is block SLQ from its start
    block: the same block tridiagonal matrix as a fresh run of m block steps from that block,
    m0 block steps cheaper; each start column's quadrature is a probe."""
    from landscape_cli.hessian.density import extend_krylov

    op, H = case
    m = min(12, op.n // width)
    kw = dict(generator=torch.Generator().manual_seed(7), explicit_residuals=False)
    _, short = lanczos_run(op, 2, tol=1e-3, max_steps=4, block_size=width, **kw)
    kw["generator"] = torch.Generator().manual_seed(7)
    _, long = lanczos_run(op, 2, tol=0.0, max_steps=m * width, block_size=width, **kw)
    assert long.Q.shape[0] == m * width
    probe = extend_krylov(op, short, m)
    assert probe.hvps == m * width - short.Q.shape[0]
    np.testing.assert_allclose(probe.basis.T, long.T, rtol=1e-9, atol=1e-12)
    theta, S = np.linalg.eigh(long.T)
    np.testing.assert_allclose(probe.nodes, np.repeat(theta[None], width, 0), atol=1e-10)
    np.testing.assert_allclose(probe.weights, S[:width] ** 2, atol=1e-10)
    np.testing.assert_allclose(probe.weights.sum(1), 1.0, rtol=1e-12)
    # Its basis is orthonormal and satisfies the Lanczos relation (it deflates the trace).
    Q = probe.basis.Q
    np.testing.assert_allclose((Q @ Q.T).numpy(), np.eye(m * width), atol=1e-10)
    T = torch.as_tensor(probe.basis.T)
    resid = H @ Q.T - Q.T @ T
    if probe.basis.R is not None:
        resid[:, -width:] -= probe.basis.R.T
    assert resid.abs().max().item() < 1e-9 * H.abs().max().item()


def test_analyze_reuses_the_top_k_run_for_density_and_trace(case):
    op, H = case
    s = HessianSettings(
        top_k=2, max_steps=6, trace_probes=20, density_probes=4, lanczos_steps=25, seed=1
    )
    before = op.hvp_count
    r = analyze(op, s)
    d, t = r.density, r.trace
    assert d.krylov_start and d.probes >= 2 and d.max_probes == 4
    assert op.hvp_count - before == r.top.hvp_count + t.hvp_count + d.hvp_count
    assert d.hvp_count < d.probes * d.lanczos_steps  # the first probe's start was free
    dim = int(re.search(r"(\d+)-dim Lanczos space", t.note).group(1))
    assert dim > r.top.steps  # deflated on the extended basis, not the top-k run's
    assert abs(t.estimate - torch.trace(H).item()) <= 5 * t.stderr + 1e-9
