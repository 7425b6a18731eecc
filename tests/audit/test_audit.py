"""Flatness audits: temperature matching, rescaling (in)variance, ranking, report, CLI."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch
from cases import runner
from torch import nn

from landscape_cli.audit import (
    adaptive_sharpness,
    density_shape,
    parameter_norm,
    sharpness_1d,
    temperature_for_loss,
)
from landscape_cli.batches import Batch
from landscape_cli.checkpoints import save_checkpoint
from landscape_cli.commands import app
from landscape_cli.errors import LandscapeError
from landscape_cli.hessian import HessianOperator, lanczos_top
from landscape_cli.losses import LOSSES, loss_and_accuracy
from landscape_cli.results import read_audit, read_hessian
from landscape_cli.training import TrainConfig, train


def _mlp_and_data():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 16), nn.ReLU(), nn.Linear(16, 3))
    g = torch.Generator().manual_seed(1)
    x = torch.randn(64, 5, generator=g)
    y = (x[:, 0] > 0).long() + (x[:, 1] > 0.5).long()
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    for _ in range(200):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    return model, [Batch(x[:32], y[:32]), Batch(x[32:], y[32:])]


def _rescaled(model: nn.Sequential, a: float) -> nn.Sequential:
    """The same function with layer 1 scaled by a and layer 2's weights by 1/a (ReLU is
    positively homogeneous): Dinh et al.'s reparametrisation."""
    twin = copy.deepcopy(model)
    with torch.no_grad():
        twin[0].weight.mul_(a)
        twin[0].bias.mul_(a)
        twin[2].weight.div_(a)
    return twin


def test_temperature_reaches_the_target_without_changing_predictions():
    model, batches = _mlp_and_data()
    base = loss_and_accuracy(model, batches, LOSSES["ce"])
    t = temperature_for_loss(model, batches, target=base[0] * 3)
    assert t > 1
    x = torch.cat([b.inputs for b in batches])
    with torch.no_grad():
        assert torch.equal(model(x).argmax(1), (model(x) / t).argmax(1))
    from landscape_cli.audit import Tempered

    got = loss_and_accuracy(Tempered(model, t), batches, LOSSES["ce"])
    assert got[0] == pytest.approx(base[0] * 3, rel=1e-6) and got[1] == base[1]  # float32
    assert temperature_for_loss(model, batches, target=base[0]) == 1.0
    with pytest.raises(LandscapeError):
        temperature_for_loss(model, batches, target=base[0] / 2)
    with pytest.raises(LandscapeError):
        temperature_for_loss(model, batches, target=50.0)  # above log(3) is out of reach


def test_adaptive_sharpness_is_rescaling_invariant_where_lambda_max_is_not():
    model, batches = _mlp_and_data()
    twin = _rescaled(model, 0.1)
    x = torch.cat([b.inputs for b in batches])
    torch.testing.assert_close(model(x), twin(x), rtol=1e-5, atol=1e-5)
    lam = [
        lanczos_top(
            HessianOperator(m, batches), 1, generator=torch.Generator().manual_seed(0)
        ).eigenvalues[0]
        for m in (model, twin)
    ]
    assert lam[1] > 10 * lam[0]
    s = [adaptive_sharpness(m, batches, rho=0.1, steps=8) for m in (model, twin)]
    assert s[0] > 0
    assert s[1] == pytest.approx(s[0], rel=1e-3)
    # And the weights are put back exactly.
    twin2 = _rescaled(model, 0.1)
    assert all(
        torch.equal(p, q) for p, q in zip(twin.parameters(), twin2.parameters(), strict=True)
    )


def test_adaptive_sharpness_grows_with_rho_and_beats_random_directions():
    model, batches = _mlp_and_data()
    small = adaptive_sharpness(model, batches, rho=0.02, steps=8)
    big = adaptive_sharpness(model, batches, rho=0.2, steps=8)
    assert 0 < small < big


def test_sharpness_1d_is_positive_at_a_minimum_and_grows_with_epsilon():
    model, batches = _mlp_and_data()
    a = sharpness_1d(model, batches, epsilon=0.02, directions=3)
    b = sharpness_1d(model, batches, epsilon=0.2, directions=3)
    assert 0 < a < b
    assert loss_and_accuracy(model, batches, LOSSES["ce"]) == loss_and_accuracy(
        model, batches, LOSSES["ce"]
    )


def test_density_shape_and_parameter_norm():
    nodes = np.array([[-1.0, 1.0, 3.0], [-2.0, 0.0, 2.0]])
    weights = np.array([[0.25, 0.5, 0.25], [0.5, 0.25, 0.25]])
    shape = density_shape(nodes, weights)
    assert shape.negative_mass == pytest.approx((0.25 + 0.5) / 2)
    var1 = 0.25 * (-1 - 1) ** 2 + 0.5 * 0 + 0.25 * (3 - 1) ** 2
    var2 = 0.5 * (-2 + 0.5) ** 2 + 0.25 * 0.5**2 + 0.25 * 2.5**2
    assert shape.spread == pytest.approx(np.sqrt((var1 + var2) / 2))
    lin = nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[3.0, 4.0]]))
    assert parameter_norm(lin) == pytest.approx(5.0)


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """A trained MLP checkpoint and a function-identical, sharpened copy of it."""
    folder = tmp_path_factory.mktemp("audit")
    flat = folder / "flat.pt"
    train(TrainConfig(model="mlp", model_options={"hidden": [16]}, epochs=3), out=flat)
    ckpt = torch.load(flat, weights_only=True)
    sd = ckpt["state_dict"]
    first, second = sorted({k.rsplit(".", 1)[0] for k in sd if k.endswith("weight")})[:2]
    sharp = dict(ckpt)
    sharp["state_dict"] = {
        k: (v * 0.2 if k.startswith(first + ".") else v / 0.2 if k == second + ".weight" else v)
        for k, v in sd.items()
    }
    save_checkpoint(folder / "sharp.pt", sharp)
    return flat, folder / "sharp.pt"


def test_cli_audit_ranks_the_sharpened_checkpoint_sharper(pair, tmp_path):
    flat, sharp = pair
    report = tmp_path / "report.md"
    args = ["audit", str(sharp), str(flat), "--samples", "128", "--trace-probes", "20"]
    args += ["--density-probes", "2", "--lanczos-steps", "10", "--json", "--report", str(report)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["ranking"] == [str(flat), str(sharp)]
    rows = {r["checkpoint"]: r for r in data["checkpoints"]}
    for key in (
        "lambda_max",
        "top_eigenvalues",
        "trace",
        "trace_stderr",
        "train_loss",
        "param_norm",
    ):
        assert key in rows[str(flat)]
    assert rows[str(sharp)]["lambda_max"] > 5 * rows[str(flat)]["lambda_max"]
    assert rows[str(sharp)]["train_loss"] == pytest.approx(rows[str(flat)]["train_loss"], rel=1e-5)
    assert rows[str(sharp)]["adaptive_sharpness"] == pytest.approx(
        rows[str(flat)]["adaptive_sharpness"], rel=1e-2
    )
    # Each checkpoint's numbers also went to its own results file.
    stored = read_audit(flat.with_suffix(".h5"))
    assert stored["lambda_max"] == pytest.approx(rows[str(flat)]["lambda_max"])
    assert len(read_hessian(sharp.with_suffix(".h5"), "audit/hessian")["eigenvalues"]) == 5
    text = report.read_text()
    assert "| 1 | `flat.pt`" in text and "| 2 | `sharp.pt`" in text
    assert data["figures"]["fig5"] == str(tmp_path / "report-fig5.png")
    assert "![fig5" in text and (tmp_path / "report-fig5.png").stat().st_size > 10_000


def test_cli_audit_match_loss_reports_what_survives(pair):
    flat, sharp = pair
    args = ["audit", str(flat), str(sharp), "--samples", "128", "--trace-probes", "10"]
    args += ["--density-probes", "0", "--match-loss", "--json", "--rank-by", "adaptive_sharpness"]
    args += ["--overwrite"]  # the files hold another audit of these checkpoints
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    for row in data["checkpoints"]:
        assert row["matched"]["temperature"] == pytest.approx(1.0, rel=1e-3)  # equal losses
    assert set(data["survives_match_loss"]) >= {"lambda_max", "adaptive_sharpness"}
    assert data["survives_match_loss"]["lambda_max"]["same_order"] is True
