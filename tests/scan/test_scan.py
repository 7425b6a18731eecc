"""Loss-landscape scans: directions, exact grids, orientation, resume after SIGKILL, CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from cases import FAST, one_error_line, runner
from torch import nn

from landscape_cli.batches import Batch
from landscape_cli.commands import app
from landscape_cli.errors import LandscapeError
from landscape_cli.hessian import HessianOperator, lanczos_top
from landscape_cli.jobs.scan_journal import execute
from landscape_cli.losses import LOSSES, loss_and_accuracy
from landscape_cli.results import read_scan
from landscape_cli.scan import (
    axis,
    eigenvector_plan,
    interpolation_plan,
    random_plan,
    second_difference,
)
from landscape_cli.scan.directions import normalise, orthogonalise, random_direction
from landscape_cli.training import TrainConfig, train

ROOT = {"checkpoint": "test", "label": "t", "model": "m", "dataset": "d"}


def _cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(144, 3)
    )


# -- directions --------------------------------------------------------------------------------


def test_filter_normalisation_and_ignored_parameters():
    model = _cnn()
    d = random_direction(model, generator=torch.Generator().manual_seed(0))
    params = dict(model.named_parameters())
    for name, p in params.items():
        if p.dim() <= 1:
            assert torch.count_nonzero(d[name]) == 0, name  # biases and BN weights zeroed
            continue
        dn = d[name].reshape(p.shape[0], -1).norm(dim=1)
        pn = p.detach().reshape(p.shape[0], -1).norm(dim=1)
        torch.testing.assert_close(dn, pn, rtol=1e-6, atol=0)
    # BatchNorm running statistics are buffers: never part of a direction.
    assert "1.running_mean" not in d and "1.running_var" not in d


def test_layer_and_none_norms_and_zero_biases():
    model = nn.Linear(5, 3)
    with torch.no_grad():
        model.bias.zero_()
    raw = {"weight": torch.randn(3, 5), "bias": torch.randn(3)}
    weights = dict(model.named_parameters())
    layer = normalise(raw, weights, norm="layer", ignore="none")
    assert layer["weight"].norm() == pytest.approx(model.weight.norm().item(), rel=1e-6)
    assert torch.equal(layer["bias"], torch.zeros(3))  # the (zero) bias itself: no 0/0
    none = normalise(raw, weights, norm="none", ignore="biasbn")
    assert torch.equal(none["weight"], raw["weight"]) and torch.count_nonzero(none["bias"]) == 0
    with pytest.raises(LandscapeError, match="`norm`"):
        normalise(raw, weights, norm="unit", ignore="none")


def test_directions_follow_the_seed_and_orthogonalise():
    model = _cnn()
    a = random_direction(model, generator=torch.Generator().manual_seed(3))
    b = random_direction(model, generator=torch.Generator().manual_seed(3))
    assert all(torch.equal(a[k], b[k]) for k in a)
    c = random_direction(model, generator=torch.Generator().manual_seed(4))
    o = orthogonalise(a, c)
    flat = lambda d: torch.cat([v.reshape(-1).double() for v in d.values()])  # noqa: E731
    assert abs(float(flat(a) @ flat(o))) < 1e-4 * flat(a).norm() * flat(o).norm()
    assert float(flat(o).norm()) == pytest.approx(float(flat(c).norm()), rel=1e-5)


def test_axis_contains_zero_exactly():
    x = axis(-1, 1, 51)
    assert x[25] == 0.0 and len(x) == 51
    with pytest.raises(LandscapeError):
        axis(1, -1, 5)


# -- exact grids ----------------------------------------------------------------------------------


def _linear_mse_problem():
    torch.manual_seed(1)
    model = nn.Linear(4, 3, bias=False).double()
    x = torch.randn(30, 4, dtype=torch.float64)
    y = torch.randn(30, 3, dtype=torch.float64)
    return model, [Batch(x[:16], y[:16]), Batch(x[16:], y[16:])], x, y


def _mse(model, W, x, y):
    return float(((x @ W.T - y) ** 2).mean())


def test_origin_equals_the_checkpoint_loss_exactly(tmp_path):
    model = _cnn()
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(40, 1, 8, 8, generator=g), torch.randint(0, 3, (40,), generator=g)
    batches = [Batch(x[:25], y[:25]), Batch(x[25:], y[25:])]
    want = loss_and_accuracy(model, batches, LOSSES["ce"])
    plan = random_plan(model, name="s", x=axis(-1, 1, 11), seed=0)
    res = execute(model, batches, plan, out=tmp_path / "r.h5", root=ROOT)
    assert res["loss"][5] == want[0] and res["accuracy"][5] == want[1]
    # The model is left with its own weights.
    assert loss_and_accuracy(model, batches, LOSSES["ce"]) == want


def test_quadratic_loss_gives_the_exact_parabola_and_2d_orientation(tmp_path):
    model, batches, x, y = _linear_mse_problem()
    W0 = model.weight.detach().clone()
    xs, ys = axis(-2, 2, 7), axis(-1, 1, 3)  # nx = 7 ≠ ny = 3
    plan = random_plan(model, name="q", x=xs, y=ys, seed=1, norm="none", ignore="none")
    res = execute(model, batches, plan, out=tmp_path / "r.h5", root=ROOT, loss="mse")
    dx, dy = plan.directions[0]["weight"], plan.directions[1]["weight"]
    assert res["loss"].shape == (3, 7)
    for j, b in enumerate(ys):
        for i, a in enumerate(xs):
            want = _mse(model, W0 + a * dx + b * dy, x, y)
            assert res["loss"][j, i] == pytest.approx(want, rel=1e-12)
    # Along x, second differences are constant: exactly a parabola.
    row = res["loss"][1]
    second = np.diff(row, 2)
    np.testing.assert_allclose(second, second[0], rtol=1e-9)


def test_second_difference_along_the_top_eigenvector_is_lambda_max(tmp_path):
    ckpt = tmp_path / "m.pt"
    train(TrainConfig(model="mlp", model_options={"hidden": [16]}, epochs=3), out=ckpt)
    from landscape_cli.workload import Source, load_workload

    work = load_workload(ckpt, Source(samples=200, batch_size=100))
    model = work.model.double()
    batches = [Batch(b.inputs.double(), b.targets) for b in work.batches]
    op = HessianOperator(model, batches, dtype=torch.float64)
    top = lanczos_top(
        op,
        1,
        tol=1e-10,
        max_steps=200,
        generator=torch.Generator().manual_seed(0),
        eigenvectors=True,
    )
    plan = eigenvector_plan(
        model,
        top.eigenvectors.astype(np.float64),
        top.eigenvalues,
        op.names,
        name="e",
        x=axis(-1e-5, 1e-5, 5),  # small: ReLU kinks must not be crossed
    )
    res = execute(model, batches, plan, out=tmp_path / "r.h5", root=ROOT)
    assert second_difference(res) == pytest.approx(top.eigenvalues[0], rel=1e-4)


def test_interpolation_ends_at_both_checkpoints(tmp_path):
    a, b = tmp_path / "a.pt", tmp_path / "b.pt"
    train(TrainConfig(epochs=1, seed=0), out=a)
    train(TrainConfig(epochs=1, seed=1), out=b)
    from landscape_cli.workload import Source, load_workload

    wa, wb = (load_workload(ck, Source(samples=128)) for ck in (a, b))
    la = loss_and_accuracy(wa.model, wa.batches, LOSSES["ce"])[0]
    lb = loss_and_accuracy(wb.model, wb.batches, LOSSES["ce"])[0]
    plan = interpolation_plan(wa.model, [wb.model], name="i", x=axis(0, 1, 5))
    res = execute(wa.model, wa.batches, plan, out=tmp_path / "r.h5", root=ROOT)
    assert res["loss"][0] == la
    assert res["loss"][-1] == pytest.approx(lb, rel=1e-5)  # BN statistics interpolated too
    assert "1.running_mean" in plan.directions[0] or any("running" in k for k in plan.directions[0])


# -- resume ------------------------------------------------------------------------------------


def test_resume_computes_only_missing_points_and_options_must_match(tmp_path):
    model, batches, _, _ = _linear_mse_problem()
    out = tmp_path / "r.h5"
    plan = random_plan(model, name="s", x=axis(-1, 1, 9), seed=0)
    calls = []

    class Stop(Exception):
        pass

    def stop_after_four(i, j, lv, av):
        calls.append(i)
        if len(calls) == 4:
            raise Stop

    with pytest.raises(Stop):
        execute(model, batches, plan, out=out, root=ROOT, loss="mse", on_point=stop_after_four)
    partial = read_scan(out, "s")["loss"]
    assert np.sum(~np.isnan(partial)) == 4  # kept, though the run failed
    starts = []
    full = execute(
        model,
        batches,
        plan,
        out=out,
        root=ROOT,
        loss="mse",
        on_start=lambda done, total: starts.append((done, total)),
    )
    assert starts == [(4, 9)] and not np.isnan(full["loss"]).any()
    ref = execute(model, batches, plan, out=tmp_path / "ref.h5", root=ROOT, loss="mse")
    np.testing.assert_array_equal(full["loss"], ref["loss"])
    other = random_plan(model, name="s", x=axis(-1, 1, 11), seed=0)
    with pytest.raises(LandscapeError, match=r"new `name`.*`overwrite=True`"):
        execute(model, batches, other, out=out, root=ROOT, loss="mse")
    with pytest.raises(LandscapeError, match="seed"):
        execute(
            model,
            batches,
            random_plan(model, name="s", x=axis(-1, 1, 9), seed=5),
            out=out,
            root=ROOT,
            loss="mse",
        )
    replaced = execute(model, batches, other, out=out, root=ROOT, loss="mse", overwrite=True)
    assert replaced["loss"].shape == (11,)


# -- the command -------------------------------------------------------------------------------


#: The checkpoint of the ``ckpt`` fixture (tests/conftest.py).
CKPT = TrainConfig(epochs=1)


def test_cli_scan_json_and_default_names(ckpt, tmp_path):
    out = tmp_path / "r.h5"
    r = runner.invoke(
        app, ["scan", str(ckpt), "--points", "5", "--samples", "64", "--out", str(out), "--json"]
    )
    assert r.exit_code == 0, r.output
    data = json.loads(r.stdout)
    assert data["name"] == "1d-random" and len(data["loss"]) == 5
    r = runner.invoke(
        app,
        [
            "scan",
            str(ckpt),
            "--dim",
            "2",
            "--points",
            "3",
            "--ypoints",
            "2",
            "--samples",
            "64",
            "--out",
            str(out),
            "--json",
        ],
    )
    assert r.exit_code == 0, r.output
    data = json.loads(r.stdout)
    assert data["name"] == "2d-random" and np.array(data["loss"]).shape == (2, 3)
    r = runner.invoke(
        app,
        [
            "scan",
            str(ckpt),
            "--to",
            str(ckpt),
            "--points",
            "3",
            "--samples",
            "64",
            "--out",
            str(out),
            "--json",
        ],
    )
    assert r.exit_code == 0, r.output
    data = json.loads(r.stdout)
    assert data["name"] == "1d-interpolation" and data["x"] == [-0.5, 0.5, 1.5]
    # θ + a(θ − θ) = θ: a flat line through the checkpoint's own loss.
    assert len(set(data["loss"])) == 1


def test_cli_changed_options_is_one_line_error(ckpt, tmp_path):
    out = tmp_path / "r.h5"
    base = ["scan", str(ckpt), "--samples", "32", "--out", str(out)]
    assert runner.invoke(app, [*base, "--points", "3"]).exit_code == 0
    r = runner.invoke(app, [*base, "--points", "5"])
    one_error_line(r)
    assert "--overwrite" in r.stderr
    assert runner.invoke(app, [*base, "--points", "5", "--overwrite"]).exit_code == 0


def test_cli_interrupt_keeps_points(ckpt, tmp_path, monkeypatch):
    from landscape_cli.scan import grid

    original = grid.PointEvaluator.__call__
    seen = []

    def interrupt_on_third(self, coords):
        seen.append(coords)
        if len(seen) == 3:
            raise KeyboardInterrupt
        return original(self, coords)

    monkeypatch.setattr(grid.PointEvaluator, "__call__", interrupt_on_third)
    out = tmp_path / "r.h5"
    r = runner.invoke(
        app, ["scan", str(ckpt), "--points", "7", "--samples", "32", "--out", str(out)]
    )
    assert r.exit_code == 130 and r.stderr.strip().endswith("error: interrupted")
    assert np.sum(~np.isnan(read_scan(out, "1d-random")["loss"])) == 2


def test_label_given_once_is_kept_by_later_commands(ckpt, tmp_path):
    from landscape_cli.results import read_root

    out = tmp_path / "r.h5"
    base = ["--samples", "32", "--out", str(out)]
    r = runner.invoke(
        app,
        [
            "hessian",
            str(ckpt),
            *base,
            "--label",
            "Adam",
            "--density-probes",
            "0",
            "--trace-probes",
            "0",
            "--top-k",
            "1",
        ],
    )
    assert r.exit_code == 0, r.output
    assert runner.invoke(app, ["scan", str(ckpt), *base, "--points", "3"]).exit_code == 0
    assert read_root(out)["label"] == "Adam"
    assert (
        runner.invoke(app, ["scan", str(ckpt), *base, "--points", "3", "--label", "B"]).exit_code
        == 0
    )
    assert read_root(out)["label"] == "B"


def test_one_point_scan_is_the_checkpoint_and_nan_points_are_counted(ckpt, tmp_path):
    out = tmp_path / "r.h5"
    args = ["scan", str(ckpt), "--out", str(out), "--points", "1", *FAST, "--json"]
    data = json.loads(runner.invoke(app, args).stdout)
    assert data["x"] == [0.0] and data["nan_points"] == 0
    three = json.loads(
        runner.invoke(app, [*args[:5], "3", *FAST, "--json", "--name", "three"]).stdout
    )
    assert data["loss"][0] == three["loss"][1]  # the middle of -1, 0, 1 is the checkpoint
    table = runner.invoke(app, [*args[:5], "3", *FAST, "--name", "three"])
    assert "NaN points" in table.stdout and "0 of 3" in table.stdout
