"""Trajectory scans (issue 24, part 1): `landscape scan CKPT --direction pca --trajectory ...`,
the PCA of the snapshots' differences from the checkpoint, their stored projections, losses and
residuals, and the trajectory figure. (Resume after SIGKILL: e2e/test_scan_processes.py.)"""

from __future__ import annotations

import dataclasses
import json
from itertools import combinations
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pytest
import torch
from cases import one_error_line, runner

from landscape_cli import plotting as pl
from landscape_cli.checkpoints import read_file
from landscape_cli.commands import app
from landscape_cli.errors import LandscapeError
from landscape_cli.jobs.trajectory import MARGIN
from landscape_cli.results import read_scan
from landscape_cli.scan.directions import trajectory_pca
from landscape_cli.training import TrainConfig, train

FAST = ["--samples", "96"]


def _ok(result):
    assert result.exit_code == 0, result.output
    return result


# ------------------------------------------------------------------------------------------------
# the PCA itself


@pytest.mark.parametrize("chunk", [1 << 20, 64])  # one block of columns, or several
def test_pca_equals_numpy_svd_of_the_kept_differences(monkeypatch, chunk):
    from landscape_cli.scan import directions

    monkeypatch.setattr(directions, "_CHUNK", chunk)
    rng = np.random.default_rng(0)
    T, n = 9, 300
    D = np.cumsum(rng.normal(size=(T, n)) * np.linspace(3, 0.2, n), axis=0)  # a random walk
    keep = rng.random(n) > 0.2
    pca = trajectory_pca(D, keep)
    M = D[:, keep]
    _, s, vt = np.linalg.svd(M, full_matrices=False)
    np.testing.assert_allclose(pca.singular_values, s, rtol=1e-10)
    np.testing.assert_allclose(pca.explained_variance, s[:2] ** 2 / np.sum(s**2), rtol=1e-10)
    for j in range(2):
        d = pca.directions[j]
        assert np.all(d[~keep] == 0) and np.linalg.norm(d) == pytest.approx(1.0, abs=1e-12)
        assert abs(d[keep] @ vt[j]) == pytest.approx(1.0, abs=1e-10)  # the same up to sign
    assert abs(pca.directions[0] @ pca.directions[1]) < 1e-12
    coords = D @ pca.directions.T
    np.testing.assert_allclose(np.c_[pca.x, pca.y], coords, rtol=1e-12, atol=1e-12)
    assert pca.x[0] <= 0 and pca.y[0] <= 0  # the path starts left and below
    residual = np.linalg.norm(D - np.outer(pca.x, pca.directions[0])
                              - np.outer(pca.y, pca.directions[1]), axis=1)  # fmt: skip
    np.testing.assert_allclose(pca.residual, residual, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(pca.distance, np.linalg.norm(D, axis=1))


def test_pca_of_a_trajectory_in_a_plane_is_exact():
    rng = np.random.default_rng(1)
    n = 500
    u, v = rng.normal(size=n), rng.normal(size=n) + 0.3 * rng.normal(size=n)  # not orthogonal
    a, b = rng.normal(size=12), rng.normal(size=12)
    D = np.outer(a, u) + np.outer(b, v)
    pca = trajectory_pca(D, np.ones(n, dtype=bool))
    assert pca.explained_variance.sum() == pytest.approx(1.0, abs=1e-12)
    P = np.c_[pca.x, pca.y]
    for i, j in combinations(range(len(D)), 2):
        assert np.linalg.norm(P[i] - P[j]) == pytest.approx(np.linalg.norm(D[i] - D[j]), rel=1e-10)
    assert pca.residual.max() < 1e-10 * pca.distance.max()


def test_rows_are_put_in_training_order_in_place():
    from landscape_cli.jobs.trajectory import _permute_rows

    rng = np.random.default_rng(2)
    for _ in range(100):
        T = int(rng.integers(1, 9))
        D, order = rng.normal(size=(T, 3)), [int(i) for i in rng.permutation(T)]
        expected = D[order].copy()
        _permute_rows(D, order)
        assert np.array_equal(D, expected)


def test_pca_refuses_a_single_direction():
    D = np.outer([1.0, 2.0, 3.0], np.arange(5.0))
    with pytest.raises(LandscapeError, match="single direction"):
        trajectory_pca(D, np.ones(5, dtype=bool))
    with pytest.raises(LandscapeError, match="two snapshots"):
        trajectory_pca(D[:1], np.ones(5, dtype=bool))


# ------------------------------------------------------------------------------------------------
# a real run: snapshots of a small MLP on the digits (the ``run`` fixture, tests/conftest.py)


def _scan(run: Path, out: Path, *extra: str, glob: str = "snap-*-mlp.pt", folder=None):
    snapshots = str((folder or run) / glob)
    args = ["scan", str(run / "mlp.pt"), "--direction", "pca", "--trajectory", snapshots,
            "--points", "5", *FAST, "--out", str(out), *extra]  # fmt: skip
    return runner.invoke(app, args)


def test_trajectory_scan_stores_the_projections_losses_and_residuals(run, tmp_path):
    out = tmp_path / "t.h5"
    got = json.loads(_ok(_scan(run, out, "--json")).stdout)
    scan = read_scan(out, "2d-pca", directions=True)
    assert scan.kind == "pca" and scan.dim == 2 and scan.attrs["norm"] == "none"
    t = scan.trajectory
    assert t["label"] == ["epoch 1", "epoch 2", "epoch 3", "epoch 4"]
    assert [Path(f).name for f in t["file"]] == [f"snap-{10 * e}-mlp.pt" for e in range(1, 5)]
    ev = scan.attrs["explained_variance"]
    assert len(ev) == 2 and 0 < ev[1] <= ev[0] and ev.sum() <= 1 + 1e-12
    assert got["explained_variance"] == pytest.approx(list(ev))
    assert got["trajectory"]["label"] == t["label"]
    # the directions: unit vectors in parameter space, orthogonal, no bias moves (biasbn)
    dx, dy = (np.concatenate([v.ravel() for v in scan.directions[a].values()]) for a in "xy")
    assert np.linalg.norm(dx) == pytest.approx(1, abs=1e-6) and abs(dx @ dy) < 1e-6
    assert all(not np.any(v) for k, v in scan.directions["x"].items() if k.endswith("bias"))
    # the projections and residuals, recomputed from the files
    base = read_file(run / "mlp.pt")["state_dict"]
    for i, f in enumerate(t["file"]):
        sd = read_file(f)["state_dict"]
        diff = np.concatenate([(sd[k].double() - base[k].double()).numpy().ravel()
                               for k in scan.directions["x"]])  # fmt: skip
        assert t["x"][i] == pytest.approx(diff @ dx, rel=1e-5, abs=1e-7)
        assert t["y"][i] == pytest.approx(diff @ dy, rel=1e-5, abs=1e-7)
        rest = diff - t["x"][i] * dx - t["y"][i] * dy
        assert t["residual"][i] == pytest.approx(np.linalg.norm(rest), rel=1e-4, abs=1e-6)
        assert t["distance"][i] == pytest.approx(np.linalg.norm(diff), rel=1e-6)
    # the default grid spans the projections and the checkpoint with a margin
    for axis, coords in ((scan.x, t["x"]), (scan.y, t["y"])):
        lo, hi = min(coords.min(), 0), max(coords.max(), 0)
        assert axis[0] == pytest.approx(lo - MARGIN * (hi - lo))
        assert axis[-1] == pytest.approx(hi + MARGIN * (hi - lo))
    # the table says it too
    table = _ok(_scan(run, out)).stdout
    assert "explained variance" in table and f"{ev[0]:.1%}" in table


def test_snapshot_losses_equal_each_snapshots_own_one_point_scan(run, tmp_path):
    out = tmp_path / "t.h5"
    _ok(_scan(run, out))
    t = read_scan(out, "2d-pca").trajectory
    for i, f in enumerate(t["file"]):
        one = runner.invoke(app, ["scan", f, "--points", "1", *FAST, "--out",
                                  str(tmp_path / f"one{i}.h5"), "--json"])  # fmt: skip
        own = json.loads(_ok(one).stdout)
        assert t["loss"][i] == own["loss"][0]
        assert t["accuracy"][i] == own["accuracy"][0]


def test_a_trajectory_in_a_plane_gives_explained_variance_one_and_true_distances(run, tmp_path):
    """Snapshots written as θ₀ + aᵢU + bᵢV (U, V over the weight matrices, biases kept): the
    plane explains all of the variance, and the projections keep every pairwise distance."""
    ckpt = read_file(run / "mlp.pt")
    base = ckpt["state_dict"]
    g = torch.Generator().manual_seed(3)
    U = {k: torch.randn(v.shape, generator=g) * 0.1 for k, v in base.items() if v.dim() > 1}
    V = {k: torch.randn(U[k].shape, generator=g) * 0.05 + 0.5 * U[k] for k in U}
    coeffs = [(-1.0, 0.4), (-0.7, -0.5), (-0.2, 0.6), (0.3, -0.2)]
    states = []
    for e, (a, b) in enumerate(coeffs, start=1):
        sd = {k: (v + a * U[k] + b * V[k]) if k in U else v.clone() for k, v in base.items()}
        states.append(sd)
        snap = {**ckpt, "state_dict": sd, "train": {**ckpt["train"], "epoch": e, "step": 10 * e}}
        torch.save(snap, tmp_path / f"plane-{e}.pt")
    out = tmp_path / "plane.h5"
    _ok(_scan(run, out, glob="plane-*.pt", folder=tmp_path))
    scan = read_scan(out, "2d-pca")
    assert scan.attrs["explained_variance"].sum() == pytest.approx(1.0, abs=1e-6)
    t = scan.trajectory
    P = np.c_[t["x"], t["y"]]
    for i, j in combinations(range(len(states)), 2):
        true = torch.cat([(states[i][k].double() - states[j][k].double()).ravel() for k in base])
        assert np.linalg.norm(P[i] - P[j]) == pytest.approx(float(true.norm()), rel=1e-5)
    assert t["residual"].max() < 1e-5 * t["distance"].max()


def test_snapshots_of_another_architecture_or_pickled_code_are_refused(run, tmp_path):
    other = tmp_path / "other.pt"
    train(TrainConfig(model="mlp", model_options={"hidden": [5]}, epochs=1, seed=0), out=other)
    args = ["scan", str(run / "mlp.pt"), "--direction", "pca", "--trajectory",
            str(run / "snap-10-mlp.pt"), "--trajectory", str(other), *FAST, "--out",
            str(tmp_path / "x.h5")]  # fmt: skip
    line = one_error_line(runner.invoke(app, args))
    assert str(other) in line and "not a snapshot" in line
    assert not (tmp_path / "x.h5").exists()
    # a whole pickled module: nothing runs from it without --trust-checkpoint
    from landscape_cli.models import build_model

    torch.save(build_model("mlp", input_shape=(1, 8, 8), num_classes=10, hidden=[8]),
               tmp_path / "module.pt")  # fmt: skip
    args[7] = str(tmp_path / "module.pt")
    line = one_error_line(runner.invoke(app, args))
    assert "module.pt" in line and "pickled" in line


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--direction", "pca"], "--trajectory"),
        (["--trajectory", "x.pt"], "--direction pca"),
        (["--direction", "pca", "--trajectory", "x.pt", "--dim", "1"], "--dim"),
        (["--direction", "pca", "--trajectory", "nothing-*.pt"], "matches no file"),
        (["--direction", "pca", "--trajectory", "missing.pt", "--trajectory", "a.pt"],
         "not found"),
        (["--direction", "pca", "--trajectory", "x.pt", "--to", "x.pt", "--dim", "2"],
         "--to and --direction pca exclude each other"),
    ],
)  # fmt: skip
def test_bad_trajectory_options_are_one_line(run, tmp_path, extra, message):
    args = ["scan", str(run / "mlp.pt"), *extra, "--out", str(tmp_path / "x.h5")]
    assert message in one_error_line(runner.invoke(app, args))


def test_other_snapshots_under_the_same_name_are_refused(run, tmp_path):
    out = tmp_path / "t.h5"
    _ok(_scan(run, out))
    refused = one_error_line(_scan(run, out, glob="snap-[123]*-mlp.pt"))
    assert "trajectory_sha256" in refused and "--overwrite" in refused


# ------------------------------------------------------------------------------------------------
# the figure


def test_trajectory_figure_draws_the_path_over_each_plane(run, tmp_path):
    out = tmp_path / "t.h5"
    _ok(_scan(run, out))
    scan = read_scan(out, "2d-pca")
    png = tmp_path / "traj.png"
    r = _ok(runner.invoke(app, ["plot", str(out), str(out), "--figure", "trajectory",
                                "--labels", "a,b", "--out", str(png)]))  # fmt: skip
    assert r.stdout == f"{png}\n" and png.stat().st_size > 5000
    fig = pl.trajectories([scan, scan], ["a", "b"])
    panels = [ax for ax in fig.axes if ax.get_label() != "<colorbar>"]
    assert len(panels) == 2 and len(fig.axes) == 3  # one shared colour bar
    ev = scan.attrs["explained_variance"]
    ax = panels[0]
    assert f"{ev[0]:.1%}" in ax.get_xlabel() and f"{ev[1]:.1%}" in ax.get_ylabel()
    t = scan.trajectory
    paths = [ln for ln in ax.get_lines() if len(ln.get_xdata()) == len(t["x"])]
    assert paths and np.allclose(paths[-1].get_xdata(), t["x"])
    legend = [x.get_text() for x in ax.get_legend().get_texts()]
    assert {"checkpoint", "start", "end"} <= set(legend)
    # a snapshot far off its plane is flagged
    far = {**t, "residual": np.where(np.arange(len(t["x"])) == 1, 10.0, 0.0)}
    flagged = pl.trajectories([dataclasses.replace(scan, trajectory=far)], ["far"])
    assert any("off the plane" in x.get_text()
               for x in flagged.axes[0].get_legend().get_texts())  # fmt: skip
    # a scan without a trajectory
    _ok(runner.invoke(app, ["scan", str(run / "mlp.pt"), "--dim", "2", "--points", "3", *FAST,
                            "--out", str(tmp_path / "r.h5")]))  # fmt: skip
    line = one_error_line(runner.invoke(app, ["plot", str(tmp_path / "r.h5"), "--figure",
                                              "trajectory", "--out", str(png)]))  # fmt: skip
    assert "no trajectory scan" in line


def test_off_plane_needs_30_degrees_and_a_residual_visible_at_the_paths_scale():
    x, y = np.array([-4.0, -1.0, -0.01]), np.zeros(3)
    distance = np.array([4.2, 1.0, 0.02])
    residual = np.array([1.3, 0.6, 0.015])  # 18°: no; 37° and 15 % of the path: yes; tiny: no
    assert pl.off_plane(x, y, residual, distance).tolist() == [False, True, False]
