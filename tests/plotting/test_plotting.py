"""The plotting library: each figure's structure, NaN handling, orientation, non-blank output,
error messages, and the Fig. 2 simulation's numbers."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

from dataclasses import replace

import matplotlib.image as mpimg
import numpy as np
import pytest
from cases import hessian_result, scan_result
from matplotlib.collections import QuadMesh
from matplotlib.container import ErrorbarContainer
from matplotlib.figure import Figure

from landscape_cli import plotting as pl
from landscape_cli.errors import LandscapeError
from landscape_cli.jobs.fig2_simulation import (
    FLAT_CENTER,
    SHARP_CENTER,
    Fig2Panel,
    Fig2Simulation,
    simulate,
    simulate_landscape,
)


def _colourful_fraction(path) -> float:
    """Share of pixels that are clearly coloured (not white, grey or black)."""
    rgb = mpimg.imread(path)[..., :3].astype(np.float64)
    return float(((rgb.max(axis=-1) - rgb.min(axis=-1)) > 0.2).mean())


def _not_blank(path, min_colour: float = 0.02) -> None:
    rgb = mpimg.imread(path)[..., :3]
    assert rgb.std() > 0.05, f"{path} looks blank"
    assert _colourful_fraction(path) > min_colour, f"{path} has almost no coloured pixels"


#: What the tests' Hessian results were measured on (as the axis labels say).
ON = "(cross-entropy, 512 train samples)"


def _hessian(scale: float, k: int = 4, *, density=True, trace=True, eig=True):
    grid = np.linspace(-1.0, 4.0 * scale, 400)
    dens = np.exp(-0.5 * (grid / (0.1 * scale)) ** 2) + 1e-3 * np.exp(-((grid - 3 * scale) ** 2))
    dens /= np.trapezoid(dens, grid)
    t = 10.0 * scale
    return hessian_result(
        np.linspace(3.0, 1.0, k) * scale if eig else None,
        t if trace else None,
        stderr=0.4 * scale,
        ci95=(t - scale, t + 2 * scale),
        density={"grid": grid, "density": dens} if density else None,
    )


def _scan1(curv: float, n: int = 21, nan_from: int | None = None, kind: str = "random"):
    x = np.linspace(-1.0, 1.0, n)
    loss = 0.1 + curv * x**2
    acc = 1.0 - 0.3 * curv * x**2
    if nan_from is not None:
        loss[nan_from:] = np.nan
        acc[nan_from:] = np.nan
    return scan_result("1d-" + kind, x, None, loss, acc, kind=kind)


def _scan2(loss=None, nx: int = 9, ny: int = 6):
    x = np.linspace(-1.0, 1.0, nx)
    y = np.linspace(-0.5, 0.5, ny)
    if loss is None:
        loss = 0.2 + x[None, :] ** 2 + 2.0 * y[:, None] ** 2
    return scan_result("2d-random", x, y, loss, np.ones_like(loss))


# ------------------------------------------------------------------------------------------------
# Fig. 5


def test_fig5_panels(tmp_path):
    results = [_hessian(1.0, k=4), _hessian(0.5, k=3)]
    fig = pl.draw_spectra(results, ["Adam", "DualAdam"])
    assert isinstance(fig, Figure)
    ax_eig, ax_tr, ax_den = fig.axes
    # (a) one bar per eigenvalue, coloured per checkpoint, in a legend
    assert len(ax_eig.patches) == 4 + 3
    assert [t.get_text() for t in ax_eig.get_legend().get_texts()] == ["Adam", "DualAdam"]
    heights = sorted(round(p.get_height(), 9) for p in ax_eig.patches)
    eigenvalues = [v for r in results for v in r.report.top.eigenvalues.tolist()]
    assert heights == sorted(round(v, 9) for v in eigenvalues)
    assert ax_eig.get_ylabel() == f"eigenvalue\n{ON}"
    # (b) a bar per checkpoint with the stored 95 % CI as error bar
    assert len(ax_tr.patches) == 2
    bars = [c for c in ax_tr.containers if isinstance(c, ErrorbarContainer)]
    assert len(bars) == 2
    segment = bars[0].lines[2][0].get_segments()[0]
    assert segment[:, 1].min() == pytest.approx(9.0) and segment[:, 1].max() == pytest.approx(12.0)
    assert [t.get_text() for t in ax_tr.get_xticklabels()] == ["Adam", "DualAdam"]
    assert ax_tr.get_ylabel() == f"trace\n{ON}"
    # (c) densities on a log axis, clipped at a floor instead of vanishing
    assert ax_den.get_yscale() == "log"
    assert len(ax_den.get_lines()) == 2
    assert [t.get_text() for t in ax_den.get_legend().get_texts()] == ["Adam", "DualAdam"]
    peak = max(np.max(line.get_ydata()) for line in ax_den.get_lines())
    for line in ax_den.get_lines():
        assert np.min(line.get_ydata()) >= pl.DENSITY_FLOOR * peak * 0.999
    # an asinh eigenvalue axis whose linear range is stated in the label
    assert ax_den.get_xscale() == "asinh"
    assert ax_den.get_xlabel().startswith("eigenvalue") and "±" in ax_den.get_xlabel()
    out = pl.save_figure(fig, tmp_path / "fig5.png")
    _not_blank(out)


def test_fig5_into_given_figure():
    fig = Figure()
    assert pl.draw_spectra([_hessian(1.0)], ["one"], fig=fig) is fig
    assert len(fig.axes) == 3


@pytest.mark.parametrize(
    ("missing", "option"),
    [("density", "`density_probes`"), ("trace", "`trace_probes`"), ("eig", "`top_k`")],
)
def test_fig5_missing_parts_name_the_option(missing, option):
    bad = _hessian(1.0, **{missing: False})
    with pytest.raises(LandscapeError, match=option) as info:
        pl.draw_spectra([_hessian(1.0), bad], ["good", "bad"])
    assert "'bad'" in str(info.value) and "landscape hessian" in str(info.value)


def test_fig5_label_count_must_match():
    with pytest.raises(ValueError, match="labels"):
        pl.draw_spectra([_hessian(1.0)], ["a", "b"])


def test_the_old_figure_names_warn_and_draw_the_same():
    """``fig5``/``fig6`` (docs/python-api.md named them) are deprecated aliases that still draw."""
    with pytest.warns(DeprecationWarning, match="draw_spectra"):
        fig = pl.fig5([_hessian(1.0)], ["one"])
    assert len(fig.axes) == 3
    with pytest.warns(DeprecationWarning, match="draw_loss_curves"):
        fig = pl.fig6([_scan1(1.0)], ["a"], accuracy=True)
    assert len(fig.axes) == 2
    assert "fig5" not in pl.__all__ and "fig6" not in pl.__all__


# ------------------------------------------------------------------------------------------------
# Fig. 6


def test_fig6_overlays_curves_and_keeps_nan_gaps(tmp_path):
    scans = [_scan1(3.0), _scan1(0.5, nan_from=15)]
    fig = pl.draw_loss_curves(scans, ["Adam", "DualAdam"], accuracy=True)
    ax_loss, ax_acc = fig.axes
    assert len(ax_loss.get_lines()) == 2 and len(ax_acc.get_lines()) == 2
    assert [t.get_text() for t in ax_loss.get_legend().get_texts()] == ["Adam", "DualAdam"]
    assert ax_loss.get_ylabel() == "loss" and ax_acc.get_ylabel() == "accuracy"
    assert "random direction" in ax_loss.get_xlabel()
    partial = ax_loss.get_lines()[1]
    assert np.isnan(partial.get_ydata()[15:]).all()
    assert partial.get_markevery() is None  # an incomplete curve shows all its points
    complete = ax_loss.get_lines()[0]  # a complete one its marker every few points
    assert complete.get_marker() not in ("None", None, "") and complete.get_markevery() is not None
    assert partial.get_marker() != complete.get_marker()
    lo, hi = ax_loss.get_ylim()
    assert lo < 0.2 and hi > 3.0 and np.isfinite([lo, hi]).all()
    _not_blank(pl.save_figure(fig, tmp_path / "fig6.png"), min_colour=0.005)


def test_fig6_single_panel_and_log():
    fig = pl.draw_loss_curves([_scan1(1.0)], ["a"], log=True)
    assert len(fig.axes) == 1 and fig.axes[0].get_yscale() == "log"


def test_fig6_errors():
    with pytest.raises(LandscapeError, match="no computed points yet"):
        pl.draw_loss_curves([_scan1(1.0, nan_from=0)], ["a"])
    with pytest.raises(LandscapeError, match=r"2-D.*contour"):
        pl.draw_loss_curves([_scan2()], ["a"])
    with pytest.raises(LandscapeError, match="accuracy"):
        pl.draw_loss_curves([replace(_scan1(1.0), accuracy=None)], ["a"], accuracy=True)
    negative = _scan1(1.0)
    negative = replace(negative, loss=negative.loss - 1.0)
    with pytest.raises(LandscapeError, match="log"):
        pl.draw_loss_curves([negative], ["a"], log=True)


# ------------------------------------------------------------------------------------------------
# 2-D scans


def test_contour_draws_filled_and_lines_with_colorbar_and_origin(tmp_path):
    ax = pl.contour(_scan2())
    fig = ax.figure
    assert len(fig.axes) == 2  # the plot and its colorbar
    assert fig.axes[1].get_ylabel() == "loss"
    filled = [c for c in ax.collections if getattr(c, "filled", False)]
    lines = [c for c in ax.collections if hasattr(c, "filled") and not c.filled]
    assert len(filled) == 1 and len(lines) == 1
    star = [ln for ln in ax.get_lines() if ln.get_marker() == "*"]
    assert len(star) == 1 and star[0].get_xdata()[0] == 0 and star[0].get_ydata()[0] == 0
    assert "direction 1" in ax.get_xlabel() and "direction 2" in ax.get_ylabel()
    assert ax.get_xlim() == (-1.0, 1.0) and ax.get_ylim() == (-0.5, 0.5)
    _not_blank(pl.save_figure(fig, tmp_path / "contour.png"), min_colour=0.2)


def test_contour_log_and_nan_and_constant(tmp_path):
    scan = _scan2()
    scan.loss[3:, 5:] = np.nan  # not computed yet
    ax = pl.contour(scan, log=True)
    levels = ax.collections[0].levels
    ratios = levels[1:] / levels[:-1]
    assert np.allclose(ratios, ratios[0])  # geometric levels
    pl.save_figure(ax.figure, tmp_path / "c.png")
    flat = _scan2(loss=np.full((6, 9), 2.0))
    pl.save_figure(pl.contour(flat).figure, tmp_path / "flat.png")
    with pytest.raises(LandscapeError, match="log"):
        pl.contour(_scan2(loss=np.zeros((6, 9))), log=True)
    with pytest.raises(LandscapeError, match="no computed points yet"):
        pl.contour(_scan2(loss=np.full((6, 9), np.nan)))
    with pytest.raises(LandscapeError, match=r"1-D.*fig6"):
        pl.contour(_scan1(1.0))
    with pytest.raises(LandscapeError, match="shape"):
        pl.contour(_scan2(loss=np.ones((9, 6))))  # transposed grid


@pytest.mark.parametrize("draw", [pl.contour, pl.heatmap, pl.surface])
def test_shared_colour_limits(draw):
    fig = Figure()
    ax = fig.add_subplot(projection="3d" if draw is pl.surface else None)
    draw(_scan2(), ax, limits=(0.0, 10.0))
    bar = fig.axes[-1]
    lo, hi = bar.get_ylim()
    assert lo <= 0.0 + 1e-9 and hi >= 10.0 - 1e-9
    if draw is pl.surface:
        assert ax.get_zlim() == (0.0, 10.0)
    with pytest.raises(ValueError, match="limits"):
        draw(_scan2(), Figure().add_subplot(projection=ax.name), limits=(1.0, 0.0))


def test_heatmap_orientation_x_horizontal_y_up(tmp_path):
    nx, ny = 9, 6
    x = np.linspace(-1.0, 1.0, nx)
    y = np.linspace(-0.5, 0.5, ny)
    loss = 1.0 + x[None, :] + 10.0 * (y[:, None] + 0.5)  # rises to the right and, more, upwards
    ax = pl.heatmap(_scan2(loss=loss))
    (mesh,) = [c for c in ax.collections if isinstance(c, QuadMesh)]
    coords = mesh.get_coordinates()  # (ny + 1, nx + 1, 2) cell corners
    assert coords.shape == (ny + 1, nx + 1, 2)
    assert np.all(np.diff(coords[..., 0], axis=1) > 0)  # x grows along a row
    assert np.all(np.diff(coords[..., 1], axis=0) > 0)  # y grows down the rows
    np.testing.assert_allclose(np.asarray(mesh.get_array()).reshape(ny, nx), loss)
    assert not ax.yaxis_inverted() and not ax.xaxis_inverted()
    # and in the image: the top row is brighter (yellow) than the bottom row (purple)
    fig = Figure(figsize=(4, 4))
    ax2 = fig.add_axes((0, 0, 1, 1))
    pl.heatmap(_scan2(loss=loss), ax=ax2)
    for extra in fig.axes[1:]:
        extra.set_visible(False)
    ax2.set_axis_off()
    for line in ax2.get_lines():
        line.set_visible(False)
    path = pl.save_figure(fig, tmp_path / "h.png")
    rgb = mpimg.imread(path)[..., :3]
    top, bottom = rgb[5].mean(), rgb[-6].mean()
    assert top > bottom + 0.2


def test_heatmap_leaves_nan_blank(tmp_path):
    scan = _scan2()
    scan.loss[:, :4] = np.nan
    ax = pl.heatmap(scan, log=True)
    arr = ax.collections[0].get_array()
    assert np.ma.is_masked(arr) and np.ma.count_masked(arr) == 6 * 4
    _not_blank(pl.save_figure(ax.figure, tmp_path / "h.png"))


def test_surface_renders_non_blank(tmp_path):
    scan = _scan2(nx=25, ny=21)
    scan.loss[15:, 18:] = np.nan
    ax = pl.surface(scan)
    assert ax.name == "3d" and ax.get_zlabel() == "loss"
    assert len(ax.collections) == 1
    z0, z1 = ax.get_zlim()
    assert np.isfinite([z0, z1]).all() and z0 < 0.3 and z1 > 1.0
    path = pl.save_figure(ax.figure, tmp_path / "s.png")
    empty = Figure()
    empty.add_subplot(projection="3d")
    baseline = _colourful_fraction(pl.save_figure(empty, tmp_path / "empty.png"))
    assert _colourful_fraction(path) > baseline + 0.03
    log_ax = pl.surface(scan, log=True)
    assert log_ax.get_zlabel() == "log₁₀ loss"
    with pytest.raises(ValueError, match="3-D"):
        pl.surface(scan, ax=Figure().add_subplot())


# ------------------------------------------------------------------------------------------------
# Fig. 2


@pytest.fixture(scope="module")
def custom_panel():
    return simulate_landscape("custom", resolution=60)


def test_fig2_adam_stays_sharp_invadam_finds_flat(custom_panel):
    panel = custom_panel
    sharp, flat = panel.minima["sharp"], panel.minima["flat"]
    assert np.linalg.norm(sharp - np.array(SHARP_CENTER)) < 0.05
    assert np.linalg.norm(flat - np.array(FLAT_CENTER)) > 0.05  # the bowl shifts it a little
    ends = {name: path[-1] for name, path in panel.trajectories.items()}
    assert np.linalg.norm(ends["Adam"] - sharp) < 0.02
    assert np.linalg.norm(ends["InvAdam"] - flat) < 0.05
    assert np.linalg.norm(ends["DualAdam"] - flat) < 0.05
    assert panel.sharpness["Adam"] > 10 * panel.sharpness["InvAdam"]
    assert panel.final_loss["InvAdam"] < panel.final_loss["Adam"]
    # every trajectory starts at the red star
    for path in panel.trajectories.values():
        np.testing.assert_array_equal(path[0], panel.start)
        assert path.shape == (panel.steps + 1, 2) and np.isfinite(path).all()


def test_fig2_is_deterministic(custom_panel):
    again = simulate_landscape("custom", steps=custom_panel.steps, resolution=60)
    for name, path in custom_panel.trajectories.items():
        np.testing.assert_array_equal(path, again.trajectories[name])
    np.testing.assert_array_equal(custom_panel.loss, again.loss)


def test_fig2_eggholder_stays_in_domain():
    panel = simulate_landscape("eggholder", ("adam", "invadam"), steps=300, resolution=40)
    for path in panel.trajectories.values():
        assert np.isfinite(path).all() and np.abs(path).max() <= 512.0
    assert panel.loss.shape == (40, 40)
    # the drawn area covers every trajectory
    pts = np.concatenate(list(panel.trajectories.values()))
    assert panel.x[0] <= pts[:, 0].min() and pts[:, 0].max() <= panel.x[-1]
    assert panel.y[0] <= pts[:, 1].min() and pts[:, 1].max() <= panel.y[-1]


def test_draw_fig2(custom_panel, tmp_path):
    egg = simulate_landscape("eggholder", steps=50, resolution=40)
    fig = pl.draw_optimizer_trajectories(Fig2Simulation((custom_panel, egg)))
    plots = [ax for ax in fig.axes if ax.get_title()]
    assert len(plots) == 2
    for ax, panel in zip(plots, [custom_panel, egg], strict=True):
        texts = [t.get_text() for t in ax.get_legend().get_texts()]
        for name in ("Adam", "InvAdam", "DualAdam"):
            assert any(t.startswith(name + " ") for t in texts), texts
        assert "start" in texts and "end" in texts
        (star,) = [ln for ln in ax.get_lines() if ln.get_marker() == "*"]
        assert star.get_color() == "red"
        assert tuple(star.get_xydata()[0]) == tuple(panel.start)
        (ends,) = [ln for ln in ax.get_lines() if ln.get_marker() == "o"]
        assert ends.get_markerfacecolor() == "black" and len(ends.get_xdata()) == 3
    assert plots[0].get_title().startswith("(a)") and "Eggholder" in plots[1].get_title()
    _not_blank(pl.save_figure(fig, tmp_path / "fig2.png"), min_colour=0.3)


def test_draw_fig2_draws_the_given_trajectories_as_they_are():
    # the plot draws data it is given (no simulation): a hand-made panel comes out unchanged
    x, y = np.linspace(-1.0, 1.0, 5), np.linspace(-2.0, 2.0, 4)
    path = np.array([[0.5, 1.0], [0.25, 0.5], [0.0, 0.0]])
    panel = Fig2Panel(
        landscape="bowl",
        title="a bowl",
        x=x,
        y=y,
        loss=np.add.outer(y**2, x**2),
        start=path[0],
        steps=2,
        trajectories={"Adam": path},
        final_loss={"Adam": 0.0},
        sharpness={"Adam": 2.0},
        hparams={"Adam": {"lr": 0.1}},
        minima={},
    )
    fig = pl.draw_optimizer_trajectories(Fig2Simulation((panel,)))
    (ax,) = [a for a in fig.axes if a.get_title()]
    (line,) = [ln for ln in ax.get_lines() if ln.get_label().startswith("Adam")]
    np.testing.assert_array_equal(line.get_xydata(), path)
    assert line.get_label() == "Adam (loss 0, λmax 2)"
    assert ax.get_xlim() == (-1.0, 1.0) and ax.get_ylim() == (-2.0, 2.0)


def test_unknown_landscape_or_optimizer():
    with pytest.raises(ValueError, match="landscape"):
        simulate_landscape("rosenbrock")
    with pytest.raises(ValueError, match="optimizer"):
        simulate(optimizers=("sgd",))


# ------------------------------------------------------------------------------------------------
# saving


@pytest.mark.parametrize(
    ("suffix", "magic"), [(".png", b"\x89PNG"), (".pdf", b"%PDF"), (".svg", b"<?xml")]
)
def test_save_figure_format_follows_extension(tmp_path, suffix, magic):
    fig = pl.draw_loss_curves([_scan1(1.0)], ["a"])
    out = pl.save_figure(fig, tmp_path / "sub" / f"f{suffix.upper()}")
    assert out.read_bytes().startswith(magic)
    assert sorted(p.name for p in out.parent.iterdir()) == [out.name]  # no temporary left


@pytest.mark.parametrize("name", ["f.jpg", "f", "f.png.txt"])
def test_save_figure_refuses_other_extensions(tmp_path, name):
    with pytest.raises(LandscapeError, match=r"\.png, \.pdf, \.svg"):
        pl.save_figure(Figure(), tmp_path / name)
    assert list(tmp_path.iterdir()) == []
