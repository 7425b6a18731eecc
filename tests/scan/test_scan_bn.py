"""Interpolations through BatchNorm (issue 11.3): `--bn recompute|interpolate`, NaN points
counted, interpolation figures labelled."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch
from cases import runner

from landscape_cli.checkpoints import save_checkpoint
from landscape_cli.commands import app
from landscape_cli.losses import LOSSES, loss_and_accuracy
from landscape_cli.training import TrainConfig, train


def _ok(result):
    assert result.exit_code == 0, result.output
    return result


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """A digits BatchNorm CNN and a second one whose running variances are 6× larger, so that
    extrapolating to α = −0.5 takes every variance below zero (1.5·v − 0.5·6v = −1.5v)."""
    folder = tmp_path_factory.mktemp("bn")
    a = folder / "a.pt"
    train(TrainConfig(model="cnn", model_options={"width": 4}, epochs=1), out=a)
    raw = torch.load(a, weights_only=True)
    g = torch.Generator().manual_seed(0)
    sd = {}
    for k, v in raw["state_dict"].items():
        if k.endswith("running_var"):
            v = v * 6
        elif v.is_floating_point() and not k.endswith("running_mean"):
            v = v + 0.05 * torch.randn(v.shape, generator=g)
        sd[k] = v
    b = folder / "b.pt"
    save_checkpoint(b, {**raw, "state_dict": sd})
    return a, b


def _point(a, b, alpha):
    from landscape_cli.checkpoints import load_model

    ma, mb = load_model(a).model, load_model(b).model
    sa, sb = ma.state_dict(), mb.state_dict()
    mixed = {
        k: (1 - alpha) * sa[k] + alpha * sb[k] if sa[k].is_floating_point() else sa[k] for k in sa
    }
    model = copy.deepcopy(ma)
    model.load_state_dict(mixed)
    return model


def _batches(a):
    from landscape_cli.workload import Source, load_workload

    return load_workload(a, Source(samples=64, batch_size=512)).batches


def test_interpolate_clamps_variances_and_recompute_matches_update_bn(pair, tmp_path):
    a, b = pair
    base = ["scan", str(a), "--to", str(b), "--points", "5", "--samples", "64", "--json"]
    args = [*base, "--bn", "interpolate", "--out", str(tmp_path / "i.h5")]
    inter = json.loads(_ok(runner.invoke(app, args)).stdout)
    assert inter["bn"] == "interpolate" and inter["nan_points"] == 0
    batches = _batches(a)
    model = _point(a, b, -0.5)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            assert (m.running_var < 0).all()  # what the old scan evaluated: NaN
            m.running_var.clamp_(min=0)
    ref = loss_and_accuracy(model, batches, LOSSES["ce"])[0]
    assert inter["loss"][0] == pytest.approx(ref, rel=1e-5)

    rec = json.loads(_ok(runner.invoke(app, [*base, "--out", str(tmp_path / "r.h5")])).stdout)
    assert rec["bn"] == "recompute" and rec["nan_points"] == 0  # the default with BatchNorm
    for i, alpha in enumerate(rec["x"]):
        model = _point(a, b, alpha)
        torch.optim.swa_utils.update_bn([bt.inputs for bt in batches], model)  # reference
        ref = loss_and_accuracy(model, batches, LOSSES["ce"])[0]
        assert rec["loss"][i] == pytest.approx(ref, rel=1e-5), alpha
    # resuming with the other --bn is refused (same-options rule)
    again = runner.invoke(app, [*base, "--bn", "interpolate", "--out", str(tmp_path / "r.h5")])
    assert again.exit_code == 2 and "bn" in again.stderr and "--overwrite" in again.stderr


def test_bn_needs_an_interpolation(pair):
    r = runner.invoke(app, ["scan", str(pair[0]), "--bn", "recompute"])
    assert r.exit_code == 2 and "--bn applies to interpolations" in r.stderr


def test_nan_points_are_counted_and_interpolations_labelled():
    from cases import scan_result

    from landscape_cli.plotting import draw_loss_curves

    x = np.linspace(-0.5, 1.5, 5)
    loss = np.array([np.nan, np.nan, 0.3, 0.2, 0.4])
    scan = scan_result("1d-interpolation", x, None, loss, np.full(5, 0.5), kind="interpolation",
                       attrs={"to": "runs/b.pt", "bn": "interpolate"})  # fmt: skip
    fig = draw_loss_curves([scan], ["a"])
    ax = fig.axes[0]
    assert "(1−α)·θa + α·θb" in ax.get_title() and "(1−α)·θa + α·θb" in ax.get_xlabel()
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["a → b"]
    line = ax.get_lines()[0].get_ydata()
    assert np.isnan(line[:2]).all() and np.isfinite(line[2:]).all()  # gaps where NaN


def test_scan_summary_counts_nan_points(capsys, tmp_path):
    from landscape_cli.commands.scan import _show
    from landscape_cli.results import ScanResult

    result = ScanResult(
        name="i",
        x=np.array([-0.5, 0.0, 0.5]),
        y=None,
        loss=np.array([np.nan, 0.1, 0.2]),
        accuracy=np.array([np.nan, 0.9, 0.8]),
        attrs={"dim": 1, "kind": "interpolation", "bn": "interpolate"},
    )
    _show(result, tmp_path / "r.h5", True)
    assert json.loads(capsys.readouterr().out)["nan_points"] == 1
    _show(result, tmp_path / "r.h5", False)
    assert "NaN points" in capsys.readouterr().out
