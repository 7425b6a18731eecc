"""The loss and the targets (issue 11.1): `train --loss`, the checkpoint's loss as the default,
checks of the loss against the targets and outputs, and a loss that is constant refused."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from cases import one_error_line, runner

from landscape_cli.batches import Batch
from landscape_cli.commands import app
from landscape_cli.errors import LandscapeError
from landscape_cli.losses import check_loss, check_not_constant

REGRESSION = """
import torch

def reg(split="train"):
    g = torch.Generator().manual_seed(0 if split == "train" else 1)
    x = torch.randn(40, 4, generator=g)
    y = (x @ torch.tensor([[1.0], [-2.0], [0.5], [0.0]]) + 0.3 * torch.sin(3 * x[:, :1]))
    return torch.utils.data.TensorDataset(x, y)
"""


def _ok(result):
    assert result.exit_code == 0, result.output
    return result


@pytest.fixture
def regmod(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    (tmp_path / "regdata.py").write_text(REGRESSION)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "regdata", raising=False)
    return "regdata:reg"


def test_regression_trains_with_mse_and_later_commands_use_it(regmod, tmp_path):
    """A one-output regression model: cross-entropy is refused, `--loss mse` trains and is
    stored, and `hessian` without `--loss` matches the dense Hessian of the MSE to 1e-6."""
    from torch.func import functional_call, hessian

    from landscape_cli.checkpoints import load_model, read_file

    ckpt = tmp_path / "reg.pt"
    train = ["train", "--model", "mlp", "--model-option", "hidden=[6]", "--dataset", regmod]
    train += ["--epochs", "2", "--batch-size", "8", "--out", str(ckpt)]
    err = one_error_line(runner.invoke(app, train))
    assert "--loss mse" in err and not ckpt.exists()
    summary = json.loads(_ok(runner.invoke(app, [*train, "--loss", "mse", "--json"])).stdout)
    assert summary["loss"] == "mse" and summary["train_acc"] is None
    assert 0 < summary["train_loss"] < 10
    assert read_file(ckpt)["loss"] == "mse"

    args = ["hessian", str(ckpt), "--dataset", regmod, "--samples", "0", "--dtype", "float64"]
    args += ["--top-k", "3", "--tol", "1e-10", "--max-steps", "200", "--trace-probes", "0"]
    args += ["--density-probes", "0", "--json", "--out", str(tmp_path / "r.h5")]
    data = json.loads(_ok(runner.invoke(app, args)).stdout)
    model = load_model(ckpt).model.double().eval()
    sys.modules.pop("regdata", None)
    ds = __import__("regdata").reg("train")
    x, y = ds.tensors[0].double(), ds.tensors[1].double()
    names = [k for k, _ in model.named_parameters()]
    shapes = [p.shape for p in model.parameters()]
    flat = torch.cat([p.detach().reshape(-1) for p in model.parameters()])

    def f(v):
        parts = torch.split(v, [s.numel() for s in shapes])
        params = {k: p.reshape(s) for k, p, s in zip(names, parts, shapes, strict=True)}
        return torch.nn.functional.mse_loss(functional_call(model, params, (x,)), y)

    exact = np.sort(np.linalg.eigvalsh(hessian(f)(flat).numpy()))[::-1][:3]
    np.testing.assert_allclose(data["eigenvalues"], exact, rtol=1e-6)
    # cross-entropy on it is an error that names the fix, before any computing
    err = one_error_line(runner.invoke(app, [*args, "--loss", "ce"]))
    assert "--loss mse" in err


def test_check_loss_against_targets_and_outputs():
    logits, one = torch.zeros(4, 3), torch.zeros(4, 1)
    labels, values = torch.tensor([0, 2, 1, 0]), torch.randn(4, 1)
    check_loss("ce", logits, labels)
    check_loss("mse", one, values)
    check_loss("mse", logits, labels)  # one-hot classes
    with pytest.raises(LandscapeError, match=r"floating-point.*`loss='mse'`"):
        check_loss("ce", logits, values)
    with pytest.raises(LandscapeError, match=r"1 output.*`loss='mse'`"):
        check_loss("ce", one, torch.zeros(4, dtype=torch.long))
    with pytest.raises(LandscapeError, match=r"0\.\.2"):
        check_loss("ce", logits, torch.tensor([0, 3, 1, 0]))
    with pytest.raises(LandscapeError, match="3 values per sample but the model has 1"):
        check_loss("mse", one, torch.randn(4, 3))


def test_a_constant_loss_is_refused_but_a_perfect_fit_is_not():
    from landscape_cli.hessian import HessianOperator

    torch.manual_seed(0)
    net = torch.nn.Linear(3, 1).double()
    x = torch.randn(16, 3, dtype=torch.float64)
    with torch.no_grad():
        y = net(x)  # a perfect fit: zero gradient on every sample, curvature 2/n·XᵀX ≠ 0
    op = HessianOperator(net, [Batch(x, y)], loss="mse", dtype=torch.float64)
    assert op.grad_norm == 0.0 and op.gradient is None  # kept only on request
    check_not_constant(op)
    flat = HessianOperator(
        net, [Batch(x, y)], loss=lambda out, t: (out * 0).sum(), dtype=torch.float64
    )
    with pytest.raises(LandscapeError, match="zero gradient and zero curvature"):
        check_not_constant(flat)
