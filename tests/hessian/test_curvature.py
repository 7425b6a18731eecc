"""The curvature family (issue 23 §2): the GGN and the empirical Fisher against dense float64
matrices built independently (torch.func Jacobians and output Hessians; per-sample gradients of
each sample run alone), against the Hessian where theory says they agree, and against
curvlinops' GGNLinearOperator and EFLinearOperator on the same model and batches."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from cases import CASES, batches, data, dense_fisher, dense_ggn, dense_reference
from torch import nn

from landscape_cli.batches import Batch
from landscape_cli.errors import LandscapeError
from landscape_cli.hessian import HessianSettings, analyze
from landscape_cli.hessian.curvature import (
    EmpiricalFisherOperator,
    GGNOperator,
    curvature_operator,
    output_hessian,
    per_sample_losses,
)
from landscape_cli.hessian.operator import HessianOperator
from landscape_cli.losses import LOSSES

REFERENCES = {"ggn": dense_ggn, "fisher": dense_fisher}
OPERATORS = {"ggn": GGNOperator, "fisher": EmpiricalFisherOperator}


@pytest.fixture(scope="module", params=[(c, k) for c in CASES for k in ("ggn", "fisher")])
def matrix(request):
    """(operator, exact dense matrix) for every tiny case and both curvatures."""
    name, kind = request.param
    model, x, y, loss = CASES[name]()
    model.eval()
    bs = batches(x, y, 6)
    op = OPERATORS[kind](model, bs, loss=loss, dtype=torch.float64)
    return op, REFERENCES[kind](model, bs, LOSSES[loss])


# -- the operators against the dense matrices ----------------------------------------------------


def test_operator_equals_dense_matrix(matrix):
    op, M = matrix
    assert op.n == M.shape[0]
    torch.testing.assert_close(op.dense(), M, rtol=1e-10, atol=1e-13)


def test_positive_semidefinite(matrix):
    op, M = matrix
    eig = np.linalg.eigvalsh(M.numpy())
    assert eig.min() >= -1e-12 * eig.max()
    gen = torch.Generator().manual_seed(0)
    V = torch.randn(op.n, 20, generator=gen, dtype=torch.float64)
    assert ((V * op.matmat(V)).sum(0) >= -1e-12).all()  # vᵀAv ≥ 0 from the operator itself


def test_top_k_and_trace_within_their_certificates(matrix):
    op, M = matrix
    exact = np.linalg.eigvalsh(M.numpy())[::-1]
    res = analyze(op, HessianSettings(top_k=4, tol=1e-9, max_steps=op.n, trace_probes=30,
                                      trace_rtol=0, density_probes=0, seed=3))  # fmt: skip
    top = res.top
    np.testing.assert_allclose(top.eigenvalues, exact[:4], rtol=1e-6, atol=1e-10 * exact[0])
    assert np.all(np.abs(top.eigenvalues - exact[:4]) <= top.residuals + 1e-12)
    tr = res.trace
    assert tr.ci95[0] <= float(np.trace(M.numpy())) <= tr.ci95[1]


@pytest.mark.parametrize("cache", [True, False])
def test_kept_and_fresh_graphs_agree_bitwise(cache):
    model, x, y, _ = CASES["cnn-bn-eval-ce"]()
    v = torch.randn(sum(p.numel() for p in model.parameters()), dtype=torch.float64)
    for cls in (GGNOperator, EmpiricalFisherOperator):
        a = cls(model, batches(x, y, 5), dtype=torch.float64, cache_graphs=cache)
        b = cls(model, batches(x, y, 5), dtype=torch.float64, cache_graphs=not cache)
        assert torch.equal(a.matvec(v), b.matvec(v))
        two = a.matmat(torch.stack([v, 2 * v], 1))
        assert torch.equal(two[:, 0], b.matvec(v))


def test_ggn_equals_the_hessian_for_a_linear_model_with_mse():
    torch.manual_seed(0)
    model = nn.Linear(5, 3).double()
    x, _ = data((5,), n=17)
    y = torch.randn(17, 3, dtype=torch.float64)
    bs = batches(x, y, 6)
    G = GGNOperator(model, bs, loss="mse", dtype=torch.float64).dense()
    H = HessianOperator(model, bs, loss="mse", dtype=torch.float64).dense()
    torch.testing.assert_close(G, H, rtol=1e-12, atol=1e-14)
    # ... and differs from it on a nonlinear network (the residual term is not zero there)
    model, x, y, loss = CASES["mlp-ce"]()
    bs = batches(x, y, 6)
    G = GGNOperator(model, bs, loss=loss, dtype=torch.float64).dense()
    assert (G - dense_reference(model, x, y, LOSSES[loss])).abs().max() > 1e-3


def test_the_fisher_of_a_batch_sums_outer_products_of_per_sample_gradients():
    """F's defining property on the operator: vᵀFv = (1/N) Σ (g_nᵀv)², and the mean of the
    per-sample gradients is the gradient the operator reports."""
    model, x, y, loss = CASES["mlp-ce"]()
    op = EmpiricalFisherOperator(
        model, batches(x, y, 7), loss=loss, dtype=torch.float64, keep_gradient=True
    )
    params = list(model.parameters())
    gs = torch.stack(
        [torch.cat([t.reshape(-1) for t in torch.autograd.grad(
            LOSSES[loss](model(x[i : i + 1]), y[i : i + 1]), params)]) for i in range(len(y))]
    )  # fmt: skip
    torch.testing.assert_close(gs.mean(0), op.gradient, rtol=1e-12, atol=1e-14)
    assert op.grad_norm == pytest.approx(float(gs.mean(0).norm()), rel=1e-12)
    v = torch.randn(op.n, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(v @ op.matvec(v), ((gs @ v) ** 2).mean(), rtol=1e-12, atol=0)


@pytest.mark.parametrize("loss", ["ce", "mse"])
def test_closed_form_output_hessian_equals_autograd_on_the_loss(loss):
    """The closed forms (softmax; 2/m) against double backward through the same loss function,
    which is what any other loss (e.g. one with a padding mask) gets."""
    gen = torch.Generator().manual_seed(0)
    z = torch.randn(7, 4, dtype=torch.float64, generator=gen)
    y = torch.randint(0, 4, (7,), generator=gen)
    r = torch.randn(7, 4, dtype=torch.float64, generator=gen)
    fn = LOSSES[loss]
    closed = output_hessian(loss, fn, z, y)(r)
    generic = output_hessian(None, lambda a, b: fn(a, b), z, y)(r)
    torch.testing.assert_close(closed, generic, rtol=1e-12, atol=1e-15)
    # and on whole operators: a callable loss takes the generic paths (the output Hessian by
    # double backward, each sample's loss on its own rows)
    model, x, y, _ = CASES["mlp-ce"]()
    bs = batches(x, y, 6)
    for cls in (GGNOperator, EmpiricalFisherOperator):
        named = cls(model, bs, loss=loss, dtype=torch.float64).dense()
        anon = cls(model, bs, loss=lambda a, b: fn(a, b), dtype=torch.float64).dense()
        torch.testing.assert_close(named, anon, rtol=1e-11, atol=1e-14)


@pytest.mark.parametrize("loss", ["ce", "mse"])
def test_per_sample_losses_are_each_samples_own_and_average_to_the_loss(loss):
    gen = torch.Generator().manual_seed(0)
    z = torch.randn(6, 3, dtype=torch.float64, generator=gen)
    y = torch.randint(0, 3, (6,), generator=gen)
    fn = LOSSES[loss]
    fast = per_sample_losses(loss, fn, z, y)
    one_by_one = per_sample_losses(None, fn, z, y)
    torch.testing.assert_close(fast, one_by_one, rtol=1e-14, atol=0)
    torch.testing.assert_close(fast.mean(), fn(z, y), rtol=1e-14, atol=0)


def test_fisher_refuses_batchnorm_on_batch_statistics_and_ggn_takes_it():
    model, x, y, _ = CASES["cnn-bn-eval-ce"]()
    with pytest.raises(LandscapeError, match=r"per-sample gradients.*bn_mode='eval'"):
        EmpiricalFisherOperator(model, [Batch(x, y)], bn_mode="train", dtype=torch.float64)
    G = GGNOperator(model, [Batch(x, y)], bn_mode="train", dtype=torch.float64).dense()
    Ge = GGNOperator(model, [Batch(x, y)], dtype=torch.float64).dense()
    assert (G - Ge).abs().max() > 1e-4  # batch statistics were used
    torch.testing.assert_close(G, G.T, rtol=1e-10, atol=1e-12)
    assert np.linalg.eigvalsh(G.numpy()).min() >= -1e-12 * np.linalg.eigvalsh(G.numpy()).max()


def test_curvature_operator_names_the_family():
    model, x, y, loss = CASES["mlp-ce"]()
    for kind in ("hessian", "ggn", "fisher"):
        op = curvature_operator(kind, model, [Batch(x, y)], loss=loss, dtype=torch.float64)
        assert op.curvature == kind
    with pytest.raises(LandscapeError, match="`curvature` must be one of hessian, ggn, fisher"):
        curvature_operator("gauss-newton", model, [Batch(x, y)])


# -- a Hugging Face classifier: dict inputs with padding -----------------------------------------


def _tiny_bert():
    from transformers import BertConfig, BertForSequenceClassification

    from landscape_cli.models.hf import HFClassifier

    config = BertConfig(vocab_size=12, hidden_size=4, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=6, max_position_embeddings=16, num_labels=3,
                        pad_token_id=0, attn_implementation="eager")  # fmt: skip
    torch.manual_seed(0)
    net = BertForSequenceClassification(config).double().eval()
    gen = torch.Generator().manual_seed(1)
    bs = []
    for n, length in ((4, 7), (3, 5)):
        ids = torch.randint(1, 12, (n, length), generator=gen)
        mask = torch.ones(n, length, dtype=torch.long)
        for i in range(n):  # ragged sequences, padded at the end
            real = length - i
            ids[i, real:], mask[i, real:] = 0, 0
        inputs = {"input_ids": ids, "attention_mask": mask, "token_type_ids": torch.zeros_like(ids)}
        bs.append(Batch(inputs, torch.randint(0, 3, (n,), generator=gen)))
    return HFClassifier(net, "text"), bs


@pytest.mark.parametrize("kind", ["ggn", "fisher"])
def test_hugging_face_classifier_with_padded_dict_inputs(kind):
    model, bs = _tiny_bert()
    op = OPERATORS[kind](model, bs, loss="ce", dtype=torch.float64)
    want = REFERENCES[kind](model, bs, LOSSES["ce"])
    # The word embeddings of tokens that never occur get no gradient: the operator leaves them
    # out of n only if no row of them is used; compare on every parameter the operator kept.
    names = [k for k, _ in model.named_parameters()]
    sizes = [p.numel() for _, p in model.named_parameters()]
    starts = np.cumsum([0, *sizes])
    keep = torch.cat([torch.arange(starts[i], starts[i + 1])
                      for i, k in enumerate(names) if k in op.names])  # fmt: skip
    want = want[keep][:, keep]
    gen = torch.Generator().manual_seed(0)
    V = torch.randn(op.n, 24, generator=gen, dtype=torch.float64)
    got = op.matmat(V)
    torch.testing.assert_close(got, want @ V, rtol=1e-9, atol=1e-12)
    assert want.abs().max() > 1e-3


# -- curvlinops, on the same model and batches ---------------------------------------------------


def _curvlinops():
    return pytest.importorskip(
        "curvlinops", reason="curvlinops (curvlinops-for-pytorch, the dev extra) is not installed"
    )


@pytest.mark.parametrize("name", list(CASES))
@pytest.mark.parametrize("kind", ["ggn", "fisher"])
def test_against_curvlinops(name, kind):
    """Same matrix as curvlinops 3 with reduction="mean" (module docstring of
    landscape_cli.hessian.curvature): G = its GGN; F = its EF for cross-entropy and its EF / C
    for MSE with C outputs per sample (its EF sums each sample's squared errors)."""
    cl = _curvlinops()
    model, x, y, loss = CASES[name]()
    model.eval()
    bs = batches(x, y, 6)
    op = OPERATORS[kind](model, bs, loss=loss, dtype=torch.float64)
    params = [p for p in model.parameters()]
    if loss == "ce":
        loss_func, data_ = nn.CrossEntropyLoss(), [(b.inputs, b.targets) for b in bs]
    else:  # integer labels one-hot, as landscape's mse does
        loss_func = nn.MSELoss()
        data_ = [(b.inputs, nn.functional.one_hot(b.targets, 3).double()) for b in bs]
    cls = cl.GGNLinearOperator if kind == "ggn" else cl.EFLinearOperator
    theirs = cls(model, loss_func, params, data_, check_deterministic=False)
    V = torch.randn(op.n, 6, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    want = theirs @ V
    if kind == "fisher" and loss == "mse":
        want = want / 3
    torch.testing.assert_close(op.matmat(V), want, rtol=1e-10, atol=1e-13)
