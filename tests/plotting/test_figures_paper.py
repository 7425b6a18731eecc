"""Figures fit for a paper (issue 13, section 2): TrueType fonts in PDF/PS, text kept as text in
SVG, readable densities of very different scales (asinh axis, stated Gaussian width), a
line style per run, a log colour scale by default, the plot options, the per-layer figure, the
only scan of the figure's dimension, and a repeated ``--figure``."""

from __future__ import annotations

import json
import re
from dataclasses import replace

import matplotlib

matplotlib.use("Agg")

import matplotlib.image as mpimg
import numpy as np
import pytest
from cases import hessian_result, one_error_line, runner, scan_result
from matplotlib.colors import LogNorm, to_rgb
from matplotlib.figure import Figure

from landscape_cli import plotting as pl
from landscape_cli.commands import app
from landscape_cli.errors import LandscapeError
from landscape_cli.plotting.style import color
from landscape_cli.results import read_hessian, read_scan
from landscape_cli.training import TrainConfig, train


def _ok(result):
    assert result.exit_code == 0, result.output
    return result


# ------------------------------------------------------------------------------------------------
# synthetic results


def _hessian(radius: float, seed: int, *, attrs=None, probes: int = 4, steps: int = 20):
    """A Hessian result whose SLQ measure has a bulk near 0 and outliers up to ``radius``."""
    rng = np.random.default_rng(seed)
    bulk = steps - 5
    nodes = np.concatenate(
        [rng.normal(0.0, 0.003 * radius, (probes, bulk)), rng.uniform(0.2, 1.0, (probes, 5))],
        axis=1,
    )
    nodes[:, -1] = radius
    nodes[:, bulk:-1] *= radius
    weights = np.concatenate([np.full((probes, bulk), 0.95 / bulk), np.full((probes, 5), 0.01)], 1)
    grid = np.linspace(nodes.min(), nodes.max(), 50)
    return hessian_result(
        [radius, 0.7 * radius, 0.5 * radius],
        5.0 * radius,
        stderr=0.05 * radius,
        density={
            "grid": grid,
            "density": np.full_like(grid, 1.0 / (grid[-1] - grid[0])),
            "nodes": nodes,
            "weights": weights,
        },
        attrs=attrs,
    )


def _scan1(curv: float, attrs=None, n: int = 41):
    x = np.linspace(-1.0, 1.0, n)
    return scan_result("1d-random", x, None, 0.1 + curv * x**2, 1.0 - 0.1 * x**2, attrs=attrs)


def _scan2(span_decades: float, attrs=None):
    x = np.linspace(-1.0, 1.0, 21)
    y = np.linspace(-1.0, 1.0, 17)
    r2 = x[None, :] ** 2 + y[:, None] ** 2
    loss = 10.0 ** (span_decades * r2 / 2.0 - 2.0)  # from 0.01 up, span_decades decades
    return scan_result("2d-random", x, y, loss, np.ones_like(loss), attrs=attrs)


def _sigma_from_legend(ax) -> float:
    title = ax.get_legend().get_title().get_text()
    match = re.search(r"σ = ([0-9.eE+-]+)", title)
    assert match and title.startswith("Gaussian broadening"), title
    return float(match.group(1))


# ------------------------------------------------------------------------------------------------
# fonts


def _fig() -> Figure:
    return pl.draw_loss_curves([_scan1(1.0), _scan1(2.0)], ["Adam λ", "DualAdam"])


def test_pdf_embeds_truetype_fonts_without_changing_rcparams(tmp_path):
    before = {k: matplotlib.rcParams[k] for k in pl.SAVE_RC}
    data = pl.save_figure(_fig(), tmp_path / "f.pdf").read_bytes()
    assert b"/FontFile2" in data  # an embedded TrueType font program (Type 42)
    assert b"/Type3" not in data and b"/FontType 3" not in data
    assert {k: matplotlib.rcParams[k] for k in pl.SAVE_RC} == before  # nothing leaks
    # the check can fail: matplotlib's own default writes Type 3 fonts
    with matplotlib.rc_context({"pdf.fonttype": 3}):
        _fig().savefig(tmp_path / "default.pdf")
    assert b"/Type3" in (tmp_path / "default.pdf").read_bytes()


@pytest.mark.parametrize("suffix", [".ps", ".eps"])
def test_postscript_embeds_type42_fonts(tmp_path, suffix):
    data = pl.save_figure(_fig(), tmp_path / f"f{suffix}").read_bytes()
    assert data.startswith(b"%!PS")
    assert b"/FontType 42" in data and b"/FontType 3" not in data


def test_svg_keeps_text_as_text(tmp_path):
    data = pl.save_figure(_fig(), tmp_path / "f.svg").read_text()
    assert "<text" in data and "DualAdam" in data and "Adam λ" in data


# ------------------------------------------------------------------------------------------------
# Fig. 5 (c): densities of very different scales


def test_density_asinh_axis_keeps_a_flat_run_readable():
    results = [_hessian(100.0, 0), _hessian(5.0, 1), _hessian(5.2, 2)]
    assert pl.density_linthresh(results) == pytest.approx(0.1)  # 10^floor(log10(5 / 10))
    fig = pl.draw_spectra(results, ["sharp", "flat", "flat too"])
    ax = fig.axes[2]
    assert ax.get_xscale() == "asinh" and "±0.1" in ax.get_xlabel()

    def shown_width(ax, result):
        """Share of the axis width between a run's smallest and largest Ritz value."""
        nodes = result.report.density.nodes
        pts = ax.transData.transform(np.c_[[nodes.min(), nodes.max()], [1.0, 1.0]])
        return (pts[1, 0] - pts[0, 0]) / np.diff(ax.transAxes.transform([[0, 0], [1, 0]])[:, 0])[0]

    lines = ax.get_lines()
    assert len(lines) == 3
    for line, result in zip(lines, results, strict=True):  # each curve covers its spectrum
        x = line.get_xdata()
        assert (
            x.min()
            < result.report.density.nodes.min()
            < result.report.density.nodes.max()
            < x.max()
        )
    # the flat runs span a good part of the axis, not a sliver next to 0 as on a linear axis
    assert shown_width(ax, results[1]) > 0.3 and shown_width(ax, results[2]) > 0.3
    ax = pl.draw_spectra(results, ["sharp", "flat", "flat too"], density_axis="linear").axes[2]
    assert ax.get_xscale() == "linear" and ax.get_xlabel() == "eigenvalue"
    assert shown_width(ax, results[1]) < 0.06


@pytest.mark.parametrize("axis", ["linear", "asinh"])
def test_density_is_broadened_by_the_stated_gaussian_and_integrates_to_one(axis):
    """One Ritz value drawn alone is a Gaussian of the width the legend states, on the drawn
    axis; every drawn density still integrates to 1 over the eigenvalue."""
    single = _hessian(5.0, 0)
    one = {"nodes": np.array([[50.0]]), "weights": np.array([[1.0]])}
    single = replace(single, report=replace(single.report, density=replace(single.report.density,
                                                                              **one)))  # fmt: skip
    other = _hessian(100.0, 1)
    fig = pl.draw_spectra([single, other], ["one node", "other"], density_axis=axis)
    ax = fig.axes[2]
    sigma = _sigma_from_legend(ax)
    line = ax.get_lines()[0]
    lam = np.asarray(line.get_xdata())
    p = np.asarray(line.get_ydata())
    if axis == "linear":
        u = lam
    else:
        linthresh = pl.density_linthresh([single, other])
        # matplotlib's asinh axis is a·asinh(λ/a); in decades of its logarithmic part
        u = ax.xaxis.get_transform().transform(lam) / (linthresh * np.log(10.0))
    mass_u = p * np.gradient(lam) / np.gradient(u)  # the density per unit of the drawn axis
    mean = np.trapezoid(u * mass_u, u)
    std = np.sqrt(np.trapezoid((u - mean) ** 2 * mass_u, u))
    assert std == pytest.approx(sigma, rel=0.02)
    for drawn in ax.get_lines():
        assert np.trapezoid(drawn.get_ydata(), drawn.get_xdata()) == pytest.approx(1.0, abs=0.01)


def test_fig5_log_bars_and_refusal():
    fig = pl.draw_spectra([_hessian(100.0, 0), _hessian(5.0, 1)], ["a", "b"], log=True)
    assert fig.axes[0].get_yscale() == "log" and fig.axes[1].get_yscale() == "log"
    assert fig.axes[0].get_ylim()[0] < 0.5 * 2.5  # the smallest bar (5 x 0.5) rises visibly
    assert fig.axes[1].get_ylim()[0] < 0.5 * 25.0
    bad = _hessian(5.0, 1)
    top = replace(bad.report.top, eigenvalues=np.array([5.0, -0.1]))
    bad = replace(bad, report=replace(bad.report, top=top))
    with pytest.raises(LandscapeError, match="drop `log`"):
        pl.draw_spectra([bad], ["bad"], log=True)
    with pytest.raises(LandscapeError, match="density axis"):
        pl.draw_spectra([bad], ["bad"], density_axis="loglog")


# ------------------------------------------------------------------------------------------------
# a line style per run


def _styles(lines) -> list[tuple]:
    return [(ln.get_color(), str(ln.get_linestyle()), ln.get_marker()) for ln in lines]


def test_every_run_has_its_own_colour_line_style_and_marker():
    n = 6
    names = [f"r{i}" for i in range(n)]
    fig = pl.draw_spectra([_hessian(5.0 + i, i) for i in range(n)], names)
    den = fig.axes[2].get_lines()
    curves = pl.draw_loss_curves([_scan1(1.0 + 0.01 * i) for i in range(n)], names)
    loss = curves.axes[0].get_lines()
    for lines in (den, loss):
        styles = _styles(lines)
        assert len(set(styles)) == n
        assert len({s[0] for s in styles}) == n and len({s[2] for s in styles}) == n
        assert len({ln.get_linestyle() for ln in lines[:4]}) == 4  # solid, dashed, dotted, dash-dot
        assert lines[0].get_linestyle() == "-"
    # Fig. 6 marks every few points, each curve from its own offset
    marks = [ln.get_markevery() for ln in loss]
    assert all(isinstance(m, tuple) and 1 < m[1] < 41 for m in marks)
    assert len({m[0] for m in marks[:4]}) > 1


def test_almost_equal_curves_both_stay_visible(tmp_path):
    """Two identical loss curves: the first one's colour still shows through the second's
    dashes (with one line style both, the second would hide the first)."""

    def count(path, rgb):
        img = mpimg.imread(path)[..., :3]
        return int((np.abs(img - np.array(rgb)).max(axis=-1) < 0.12).sum())

    fig = pl.draw_loss_curves([_scan1(1.0), _scan1(1.0)], ["a", "b"])
    path = pl.save_figure(fig, tmp_path / "two.png", dpi=80)
    first, second = count(path, to_rgb(color(0))), count(path, to_rgb(color(1)))
    one = pl.save_figure(pl.draw_loss_curves([_scan1(1.0)], ["a"]), tmp_path / "one.png", dpi=80)
    alone = count(one, to_rgb(color(0)))
    assert second > 50 and first > 0.2 * alone


# ------------------------------------------------------------------------------------------------
# 2-D: log colour scale by default over two decades, levels, limits


def test_contour_log_scale_by_default_over_two_decades():
    wide = pl.contour(_scan2(4.0))
    filled = next(c for c in wide.collections if getattr(c, "filled", False))
    assert isinstance(filled.norm, LogNorm)
    assert "log scale" in wide.figure.axes[1].get_ylabel()
    narrow = pl.contour(_scan2(1.5))
    filled = next(c for c in narrow.collections if getattr(c, "filled", False))
    assert not isinstance(filled.norm, LogNorm) and narrow.figure.axes[1].get_ylabel() == "loss"
    forced = pl.contour(_scan2(4.0), log=False)
    assert not isinstance(forced.collections[0].norm, LogNorm)
    assert isinstance(pl.heatmap(_scan2(4.0)).collections[0].norm, LogNorm)
    assert pl.surface(_scan2(4.0)).get_zlabel() == "log₁₀ loss"
    assert pl.auto_log(np.array([1.0, 100.0])) is False  # exactly two decades: linear
    assert pl.auto_log(np.array([1.0, 101.0])) is True
    assert pl.auto_log(np.array([-1.0, 1e4])) is False  # a log scale needs positive losses


def test_contour_levels_and_one_sided_limits():
    ax = pl.contour(_scan2(4.0), levels=12)
    assert len(ax.collections[0].levels) == 13
    ratios = ax.collections[0].levels[1:] / ax.collections[0].levels[:-1]
    assert np.allclose(ratios, ratios[0])
    ax = pl.contour(_scan2(1.0), limits=(None, 0.05), levels=5)  # the data's own minimum
    levels = ax.collections[0].levels
    assert len(levels) == 6 and levels[0] == pytest.approx(0.01)
    assert levels[-1] == pytest.approx(0.05) and ax.collections[0].extend == "max"
    with pytest.raises(LandscapeError, match="`levels`"):
        pl.contour(_scan2(1.0), levels=1)
    assert pl.heatmap(_scan2(1.0), levels=5).collections[0].cmap.N == 5  # 5 colour steps
    assert pl.surface(_scan2(1.0), levels=7).collections[0].cmap.N == 7


# ------------------------------------------------------------------------------------------------
# axis labels from the files' attributes


def test_axis_labels_say_what_was_measured():
    attrs = {"norm": "filter", "split": "test", "samples": 256, "loss": "ce"}
    fig = pl.draw_loss_curves([_scan1(1.0, attrs), _scan1(2.0, attrs)], ["a", "b"])
    ax = fig.axes[0]
    assert "filter-normalised random direction" in ax.get_xlabel()
    assert "256 test samples" in ax.get_ylabel() and "cross-entropy" in ax.get_ylabel()
    ax2 = pl.contour(_scan2(1.0, attrs))
    assert "filter-normalised random direction 1" in ax2.get_xlabel()
    assert "256 test samples" in ax2.figure.axes[1].get_ylabel()
    other = {**attrs, "split": "train", "samples": 512}
    fig = pl.draw_loss_curves([_scan1(1.0, attrs), _scan1(2.0, other)], ["a", "b"])
    texts = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert texts == ["a (256 test samples)", "b (512 train samples)"]
    assert fig.axes[0].get_ylabel() == "loss (cross-entropy)"
    h = pl.draw_spectra([_hessian(5.0, 0, attrs=other)], ["a"])
    assert "512 train samples" in h.axes[0].get_ylabel()
    assert "512 train samples" in h.axes[2].get_ylabel()
    # the same checkpoint by two Hessian engines: the engine after each label, the rest shared
    engines = [{**other, "engine": "lanczos"}, {**other, "engine": "pyhessian"}]
    h = pl.draw_spectra([_hessian(5.0, 0, attrs=a) for a in engines], ["net", "net"])
    texts = [t.get_text() for t in h.axes[2].get_legend().get_texts()]
    assert texts == ["net (Lanczos)", "net (PyHessian)"]
    assert "cross-entropy, 512 train samples" in h.axes[0].get_ylabel()
    one = pl.draw_spectra([_hessian(5.0, 0, attrs=engines[0])], ["a"])
    assert "Lanczos" not in one.axes[0].get_ylabel()


# ------------------------------------------------------------------------------------------------
# real files: a tiny MLP through `hessian --per-layer` and a 1-D and a 2-D scan into one file


@pytest.fixture(scope="module")
def realfile(tmp_path_factory):
    folder = tmp_path_factory.mktemp("paper")
    ckpt = folder / "net.pt"
    config = TrainConfig(model="mlp", model_options={"hidden": [6]}, epochs=1, seed=0)
    train(config, out=ckpt)
    h5 = folder / "net.h5"
    fast = ["--samples", "48", "--batch-size", "48", "--out", str(h5)]
    args = ["hessian", str(ckpt), *fast, "--top-k", "2", "--trace-probes", "4"]
    _ok(runner.invoke(app, [*args, "--density-probes", "2", "--lanczos-steps", "8", "--per-layer"]))
    _ok(runner.invoke(app, ["scan", str(ckpt), *fast, "--points", "7"]))
    _ok(runner.invoke(app, ["scan", str(ckpt), *fast, "--dim", "2", "--points", "4"]))
    return h5


def test_layers_figure_draws_the_stored_per_layer_values(realfile, tmp_path):
    stored = read_hessian(realfile)
    names = list(stored["per_layer"])
    assert len(names) >= 2
    fig = pl.layers([stored, stored], ["run a", "run b"])
    ax_lam, ax_tr = fig.axes[:2]
    assert [t.get_text() for t in ax_lam.get_yticklabels()] == names
    widths = [p.get_width() for p in ax_lam.patches]
    expected = [stored["per_layer"][n]["lambda_max"] for n in names]
    assert widths == pytest.approx(expected * 2)  # one bar per layer, per file
    assert [p.get_width() for p in ax_tr.patches] == pytest.approx(
        [stored["per_layer"][n]["trace"] for n in names] * 2
    )
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["run a", "run b"]
    assert "48 train samples" in ax_lam.get_xlabel()
    out = tmp_path / "layers.png"
    result = _ok(
        runner.invoke(app, ["plot", str(realfile), "--figure", "layers", "--out", str(out)])
    )
    assert result.stdout == f"{out}\n" and out.stat().st_size > 1000
    no_layers = replace(stored, report=replace(stored.report, per_layer=()))
    with pytest.raises(LandscapeError, match="`per_layer=True`"):
        pl.layers([no_layers], ["x"])


def test_fig6_and_contour_pick_the_scan_of_their_dimension(realfile, tmp_path):
    out = tmp_path / "f.png"
    args = ["plot", str(realfile), "--figure", "fig6", "--out", str(out), "--json"]
    assert json.loads(_ok(runner.invoke(app, args)).stdout)["out"] == str(out)
    scan = read_scan(realfile, "1d-random")
    fig = pl.draw_loss_curves([scan], ["net"])
    assert "filter-normalised random direction" in fig.axes[0].get_xlabel()
    assert "48 train samples" in fig.axes[0].get_ylabel()
    args = ["plot", str(realfile), "--figure", "contour", "--out", str(tmp_path / "c.png")]
    _ok(runner.invoke(app, args))


def test_repeated_figure_draws_each_to_its_own_file(realfile, tmp_path, monkeypatch):
    out = tmp_path / "paper.pdf"
    args = ["plot", str(realfile), "--figure", "fig5", "--figure", "fig6", "--figure", "contour"]
    data = json.loads(_ok(runner.invoke(app, [*args, "--out", str(out), "--json"])).stdout)
    made = [tmp_path / f"paper-{f}.pdf" for f in ("fig5", "fig6", "contour")]
    for path in made:
        assert path.read_bytes().startswith(b"%PDF")
    assert not out.exists()
    assert data["figures"] == [
        {"figure": f, "out": str(p)} for f, p in zip(("fig5", "fig6", "contour"), made, strict=True)
    ]
    monkeypatch.chdir(tmp_path)  # without --out: <figure>.png each, one path a line
    args = ["plot", str(realfile), "--figure", "fig6", "--figure", "contour"]
    assert _ok(runner.invoke(app, args)).stdout.splitlines() == ["fig6.png", "contour.png"]
    assert (tmp_path / "fig6.png").exists() and (tmp_path / "contour.png").exists()
    err = one_error_line(runner.invoke(app, [*args, "--figure", "fig6"]))
    assert "fig6" in err and "twice" in err


def test_plot_options_through_the_command(realfile, tmp_path):
    out = tmp_path / "c.png"
    base = ["plot", str(realfile), "--out", str(out)]
    args = [*base, "--figure", "contour", "--levels", "8", "--vmin", "0.1", "--vmax", "5"]
    _ok(runner.invoke(app, [*args, "--size", "4", "3", "--dpi", "50", "--no-log"]))
    height, width = mpimg.imread(out).shape[:2]
    assert (width, height) == (200, 150)  # 4 x 3 inches at 50 dpi
    _ok(runner.invoke(app, [*base, "--figure", "fig5", "--log", "--density-axis", "linear"]))
    for extra, message in [
        (["--figure", "fig5", "--levels", "8"], "--levels applies to"),
        (["--figure", "fig6", "--vmin", "1"], "--vmin applies to"),
        (["--figure", "fig6", "--density-axis", "linear"], "--density-axis applies to"),
        (["--figure", "contour", "--vmin", "2", "--vmax", "1"], "--vmin"),
        (["--figure", "contour", "--levels", "1"], "--levels"),
        (["--figure", "fig5", "--density-axis", "loglog"], "--density-axis"),
        (["--figure", "fig5", "--size", "0", "3"], "--size"),
        (["--figure", "fig5", "--dpi", "0"], "--dpi"),
    ]:
        err = one_error_line(
            runner.invoke(app, ["plot", str(realfile), *extra, "--out", str(tmp_path / "x.png")])
        )
        assert message in err, err
    assert not (tmp_path / "x.png").exists()
