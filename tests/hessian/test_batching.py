"""The block of the probe estimators (issue 26.3): how many probes one product carries.

Changing only the block must change no estimate: the same probes in the same order, the same
stopping decisions, bit for bit on the Hessian operator (its columns never interact). Only the
products spent can differ, and they are counted.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from cases import CASES, DenseOp, Float64Shapes, batches

from landscape_cli.errors import LandscapeError
from landscape_cli.hessian import (
    HessianOperator,
    deflated_trace,
    hutchinson_trace,
    hutchpp_trace,
    lanczos_run,
    slq_density,
)
from landscape_cli.hessian.batching import (
    CPU_BLOCK,
    CUDA_BLOCK,
    ROUND,
    default_block,
    resolve_block,
)
from landscape_cli.hessian.density import slq_nodes

BLOCKS = (1, 3, 8, 16, 200)


class Recording:
    """An operator that records the columns of each product it is asked for."""

    def __init__(self, op) -> None:
        self.op, self.n, self.device = op, op.n, op.device
        self.columns: list[int] = []

    def matmat(self, V):
        self.columns.append(V.shape[1])
        return self.op.matmat(V)

    def matvec(self, v):
        self.columns.append(1)
        return self.op.matvec(v)


@pytest.fixture(scope="module")
def op() -> HessianOperator:
    """The BatchNorm CNN's Hessian in float32 (the commands' products), 3 batches."""
    model, x, y, loss = CASES["cnn-bn-eval-ce"]()
    return HessianOperator(model.float(), batches(x.float(), y, 5), loss=loss)


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def same_trace(a, b) -> None:
    assert np.array_equal(a.samples, b.samples)
    assert (a.estimate, a.stderr, a.ci95, a.probes, a.method, a.note, a.converged) == (
        b.estimate,
        b.stderr,
        b.ci95,
        b.probes,
        b.method,
        b.note,
        b.converged,
    )


def same_nodes(nodes, weights, ref_nodes, ref_weights) -> None:
    """Equal to float64 rounding: the recurrence's vector sums are SIMD reductions whose rounding
    depends on where a probe's row sits in memory (its place in the block), not on the block's
    products, which are bitwise the same."""
    scale = np.abs(ref_nodes).max()
    np.testing.assert_allclose(nodes, ref_nodes, rtol=0, atol=1e-13 * scale)
    np.testing.assert_allclose(weights, ref_weights, rtol=0, atol=1e-13)


def test_default_block_follows_the_device() -> None:
    assert default_block("cpu") == CPU_BLOCK and default_block(torch.device("cpu")) == CPU_BLOCK
    assert default_block(torch.device("cuda", 0)) == CUDA_BLOCK == default_block("cuda")
    assert default_block(None) == CPU_BLOCK
    with pytest.raises(LandscapeError, match="`block` must be >= 1"):
        resolve_block(DenseOp(torch.eye(3)), 0)


def test_the_default_block_shrinks_with_the_model_to_fit_its_bytes() -> None:
    from landscape_cli.hessian import HessianSettings
    from landscape_cli.hessian.batching import BLOCK_BYTES
    from landscape_cli.resources import hessian_bytes

    # four float64 vectors of n per column, at most BLOCK_BYTES: 8 columns up to n = 8.4 M
    for n, want in ((10, 8), (8_388_608, 8), (8_388_609, 7), (16_777_216, 4), (50_000_000, 1)):
        assert default_block("cpu", n) == want == default_block("cuda", n)
        assert want == 8 or want * 4 * 8 * n <= BLOCK_BYTES < (want + 1) * 4 * 8 * n

    class Big:  # only what resolve_block reads
        device, n = torch.device("cpu"), 50_000_000

    assert resolve_block(Big(), None) == 1 and resolve_block(Big(), 8) == 8  # asked for: kept
    # the memory check counts the block the run will use
    s = HessianSettings(top_k=0, trace_probes=100, density_probes=0)
    probes = hessian_bytes(s, 50_000_000, device="cpu")["trace probes"][0]
    assert probes == 4 * 1 * 50_000_000 * 8 + 8 * 50_000_000 + 64 * 100  # one product, a round


@pytest.mark.parametrize("block", BLOCKS)
def test_hutchinson_same_numbers_for_every_block(op, block) -> None:
    # rtol 0.2 stops after a few rounds: a block spanning rounds computes past the stop.
    ref = hutchinson_trace(op, probes=64, rtol=0.2, generator=gen(), block=ROUND)
    rec = Recording(op)
    before = op.hvp_count
    got = hutchinson_trace(rec, probes=64, rtol=0.2, generator=gen(), block=block)
    same_trace(got, ref)
    assert ref.probes < 64  # it did stop early, so the stopping round is exercised
    assert max(rec.columns) == (block if block < ROUND else min(block // ROUND * ROUND, 64))
    assert got.hvp_count == sum(rec.columns) == op.hvp_count - before
    assert got.probes <= got.hvp_count < got.probes + max(block, ROUND)
    if block <= ROUND:
        assert got.hvp_count == got.probes


@pytest.mark.parametrize("block", BLOCKS)
def test_deflated_trace_same_numbers_for_every_block(op, block) -> None:
    _, basis = lanczos_run(op, 2, tol=1e-6, max_steps=6, generator=gen(1))
    ref = deflated_trace(op, basis, probes=40, rtol=0.2, generator=gen(2), block=ROUND)
    got = deflated_trace(op, basis, probes=40, rtol=0.2, generator=gen(2), block=block)
    same_trace(got, ref)
    assert ref.probes < 40  # stopped early
    assert got.hvp_count >= got.probes


@pytest.mark.parametrize("block", BLOCKS)
def test_hutchpp_same_numbers_for_every_block(op, block) -> None:
    ref = hutchpp_trace(op, probes=30, generator=gen(3), block=ROUND)
    rec = Recording(op)
    got = hutchpp_trace(rec, probes=30, generator=gen(3), block=block)
    same_trace(got, ref)
    assert max(rec.columns) == min(block, 10)  # the sketch and its exact part: 10 columns
    assert got.hvp_count == ref.hvp_count == 30  # 10 sketch + 10 exact + 10 probes


@pytest.mark.parametrize("block", BLOCKS)
def test_slq_same_nodes_for_every_block(op, block) -> None:
    nodes, weights, _ = slq_nodes(op, probes=5, steps=12, generator=gen(4), block=200)
    rec = Recording(op)
    got_n, got_w, hvps = slq_nodes(rec, probes=5, steps=12, generator=gen(4), block=block)
    same_nodes(got_n, got_w, nodes, weights)
    assert max(rec.columns) == min(block, 5) and hvps == sum(rec.columns) == 5 * 12


@pytest.mark.parametrize("block", [1, 2, 8])
@pytest.mark.parametrize("tol", [0.0, 0.015])
def test_adaptive_density_same_for_every_block(op, block, tol) -> None:
    # tol 0.015 adds probes in batches of 2, 2, 4, 4 here (the W1 error reaches 0.013 with 12).
    ref = slq_density(op, probes=12, steps=10, tol=tol, generator=gen(5), block=200)
    got = slq_density(op, probes=12, steps=10, tol=tol, generator=gen(5), block=block)
    same_nodes(got.nodes, got.weights, ref.nodes, ref.weights)
    assert (got.probes, got.hvp_count) == (ref.probes, ref.hvp_count)
    assert got.achieved_tol == pytest.approx(ref.achieved_tol, rel=1e-12)
    assert got.sigma == pytest.approx(ref.sigma, rel=1e-12)


def test_default_block_is_used_when_none_is_given(op) -> None:
    rec = Recording(op)
    hutchinson_trace(rec, probes=3 * ROUND, rtol=0.0, generator=gen())
    assert rec.columns == [CPU_BLOCK] * (3 * ROUND // CPU_BLOCK)
    rec = Recording(op)
    slq_nodes(rec, probes=CPU_BLOCK + 1, steps=3, generator=gen())
    assert rec.columns == [CPU_BLOCK] * 3 + [1] * 3


def test_dense_operator_agrees_to_rounding() -> None:
    """A dense matrix's BLAS may round a product of 8 columns otherwise than one of 1: the
    estimates then agree to rounding rather than bit for bit."""
    g = torch.Generator().manual_seed(0)
    A = torch.randn(40, 40, generator=g, dtype=torch.float64)
    H = DenseOp(A @ A.T)
    a = hutchinson_trace(H, probes=32, rtol=0.0, generator=gen(), block=1)
    b = hutchinson_trace(H, probes=32, rtol=0.0, generator=gen(), block=32)
    np.testing.assert_allclose(a.samples, b.samples, rtol=1e-12)


def test_a_one_column_block_holds_one_float64_probe_at_a_time() -> None:
    """Plain Hutchinson with a block of 1 keeps a round's signs as int8 and one float64 column.

    At language-model scale a round of 8 float64 probes and their 8 products were 128 bytes a
    parameter; every operation of the run is watched for a float64 tensor wider than a column.
    """
    n = 3000
    d = torch.linspace(-1.0, 2.0, n, dtype=torch.float64)

    class Diagonal:
        device = torch.device("cpu")

        def __init__(self) -> None:
            self.n = n

        def matmat(self, V: torch.Tensor) -> torch.Tensor:
            return d[:, None] * V

    with Float64Shapes() as watch:
        one = hutchinson_trace(Diagonal(), probes=2 * ROUND, rtol=0.0, generator=gen(), block=1)
    assert max(math.prod(shape) for shape in watch.shapes) <= n
    eight = hutchinson_trace(Diagonal(), probes=2 * ROUND, rtol=0.0, generator=gen(), block=8)
    assert one.samples.tolist() == eight.samples.tolist()  # the same samples, bit for bit
    # z_i² = 1: on a diagonal every Rademacher sample is the trace itself
    assert one.estimate == pytest.approx(float(d.sum()), rel=1e-12)
