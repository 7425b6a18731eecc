"""Which parameters a measurement covers (issue 21 §2, issue 23 §3): one rule for the curvature
operators, the scan directions and the audit. Frozen parameters are listed, `include_frozen`
measures them, `params` patterns restrict to a subset; every number is checked against the dense
matrix's block of exactly those parameters."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from cases import batches, data, dense_fisher, dense_ggn, dense_reference
from torch import nn

from landscape_cli.errors import LandscapeError
from landscape_cli.hessian import lanczos_top, per_layer_curvature
from landscape_cli.hessian.curvature import curvature_operator
from landscape_cli.losses import LOSSES
from landscape_cli.params import (
    FROZEN,
    NO_GRADIENT,
    NOT_SELECTED,
    ParamSelection,
    frozen_note,
    select_parameters,
)


def frozen_mlp() -> nn.Module:
    """A tanh MLP whose first layer is frozen by its factory (as a fine-tune's backbone)."""
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 5), nn.Tanh(), nn.Linear(5, 3))
    for p in m[0].parameters():
        p.requires_grad_(False)
    return m.double()


NAMES = ("0.weight", "0.bias", "2.weight", "2.bias", "4.weight", "4.bias")
SIZES = (24, 6, 30, 5, 15, 3)


def _block(M: torch.Tensor, names) -> torch.Tensor:
    """The rows and columns of M (over every parameter, in model order) of ``names``."""
    starts = np.cumsum([0, *SIZES])
    idx = torch.cat([torch.arange(starts[i], starts[i + 1]) for i, k in enumerate(NAMES)
                     if k in names])  # fmt: skip
    return M[idx][:, idx]


@pytest.fixture(scope="module")
def problem():
    model = frozen_mlp()
    x, y = data((4,), n=24)
    H = dense_reference(model, x, y, LOSSES["ce"])  # over every parameter, frozen ones included
    return model, batches(x, y, 8), H


def _top(op, k=3):
    return lanczos_top(op, k, tol=1e-10, max_steps=op.n, generator=torch.Generator().manual_seed(0))


def test_rule_frozen_and_patterns():
    model = frozen_mlp()
    s = select_parameters(model)
    assert s.names == NAMES[2:] and s.skipped == NAMES[:2] and s.reasons == (FROZEN, FROZEN)
    s = select_parameters(model, ParamSelection(include_frozen=True))
    assert s.names == NAMES and s.skipped == ()
    s = select_parameters(model, ParamSelection(("*.bias",)))
    assert s.names == ("2.bias", "4.bias")
    assert dict(zip(s.skipped, s.reasons, strict=True)) == {
        "0.weight": NOT_SELECTED,
        "0.bias": FROZEN,
        "2.weight": NOT_SELECTED,
        "4.weight": NOT_SELECTED,
    }  # fmt: skip  (0.bias matches, but is frozen)
    s = select_parameters(model, ParamSelection(("0.*", "4.weight"), include_frozen=True))
    assert s.names == ("0.weight", "0.bias", "4.weight")
    note = frozen_note(("0.weight", "0.bias"), (FROZEN, FROZEN), (24, 6))
    assert note == (
        "2 frozen parameters (requires_grad=False; 30 values) are not measured: 0.weight, "
        "0.bias; `include_frozen=True` measures them too"
    )
    assert frozen_note(("x",), (NO_GRADIENT,), (3,)) is None


def test_a_pattern_that_matches_nothing_names_existing_parameters():
    with pytest.raises(LandscapeError) as err:
        select_parameters(frozen_mlp(), ParamSelection(("2.*", "encoder.*")))
    msg = str(err.value)
    assert "`params` pattern 'encoder.*' matches no parameter" in msg
    assert "0.weight, 0.bias, 2.weight, 2.bias, … (6 in all)" in msg and "\n" not in msg
    with pytest.raises(LandscapeError, match=r"frozen .*pass `include_frozen=True`"):
        select_parameters(frozen_mlp(), ParamSelection(("0.*",)))


@pytest.mark.parametrize("curvature", ["hessian", "ggn", "fisher"])
def test_frozen_parameters_are_listed_and_measured_on_request(problem, curvature):
    model, bs, H = problem
    dense = {"ggn": dense_ggn, "fisher": dense_fisher}
    full = H if curvature == "hessian" else dense[curvature](model, bs, LOSSES["ce"])
    flags = [p.requires_grad for p in model.parameters()]
    op = curvature_operator(curvature, model, bs, dtype=torch.float64)
    assert op.n == 53 and op.names == NAMES[2:]
    assert op.skipped == ("0.weight", "0.bias") and op.skipped_reasons == (FROZEN, FROZEN)
    torch.testing.assert_close(op.dense(), _block(full, NAMES[2:]), rtol=1e-10, atol=1e-13)
    every = curvature_operator(
        curvature, model, bs, dtype=torch.float64, params=ParamSelection(include_frozen=True)
    )
    assert every.n == 83 and every.skipped == ()
    torch.testing.assert_close(every.dense(), full, rtol=1e-10, atol=1e-13)
    exact = np.linalg.eigvalsh(full.numpy())[::-1][:3]
    np.testing.assert_allclose(_top(every).eigenvalues, exact, rtol=1e-6)
    assert [p.requires_grad for p in model.parameters()] == flags  # the model is untouched


def test_top_k_of_a_subset_is_the_dense_diagonal_block(problem):
    model, bs, H = problem
    sel = ParamSelection(("2.*", "4.bias"))
    op = curvature_operator("hessian", model, bs, dtype=torch.float64, params=sel)
    assert op.names == ("2.weight", "2.bias", "4.bias") and op.n == 38
    assert dict(zip(op.skipped, op.skipped_reasons, strict=True)) == {
        "0.weight": NOT_SELECTED, "0.bias": NOT_SELECTED, "4.weight": NOT_SELECTED,
    }  # fmt: skip
    block = _block(H, op.names)
    exact = np.linalg.eigvalsh(block.numpy())[::-1][:3]
    np.testing.assert_allclose(_top(op).eigenvalues, exact, rtol=1e-6)
    assert abs(exact[0] - np.linalg.eigvalsh(H.numpy()).max()) > 1e-3  # a real restriction
    # --per-layer: blocks within the subset
    layers, _ = per_layer_curvature(op, steps=38, probes=4, generator=torch.Generator())
    assert [layer.name for layer in layers] == list(op.names)
    for layer in layers:
        sub = _block(H, (layer.name,))
        assert layer.lambda_max == pytest.approx(np.linalg.eigvalsh(sub.numpy()).max(), rel=1e-8)


def test_a_frozen_parameter_matched_by_a_pattern_needs_include_frozen(problem):
    model, bs, H = problem
    op = curvature_operator("hessian", model, bs, dtype=torch.float64,
                            params=ParamSelection(("0.*", "4.*"), include_frozen=True))  # fmt: skip
    torch.testing.assert_close(
        op.dense(), _block(H, ("0.weight", "0.bias", "4.weight", "4.bias")), rtol=1e-10, atol=0
    )
    op = curvature_operator("hessian", model, bs, dtype=torch.float64,
                            params=ParamSelection(("0.*", "4.*")))  # fmt: skip
    assert op.names == ("4.weight", "4.bias") and op.skipped_reasons[:2] == (FROZEN, FROZEN)


def test_parameters_without_gradient_keep_their_reason():
    class TwoHeads(nn.Module):
        def __init__(self):
            super().__init__()
            self.body, self.unused, self.frozen = nn.Linear(4, 3), nn.Linear(4, 3), nn.Linear(4, 3)
            self.frozen.requires_grad_(False)

        def forward(self, x):
            return self.body(x) + self.frozen(x)

    torch.manual_seed(0)
    model = TwoHeads().double()
    x, y = data((4,))
    op = curvature_operator("ggn", model, batches(x, y, 10), dtype=torch.float64)
    assert op.skipped == ("unused.weight", "unused.bias", "frozen.weight", "frozen.bias")
    assert op.skipped_reasons == (NO_GRADIENT, NO_GRADIENT, FROZEN, FROZEN)
