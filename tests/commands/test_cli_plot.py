"""``landscape plot`` end to end: figures from real results files, output formats, JSON, and the
one-line errors."""

from __future__ import annotations

import json
import shutil

import matplotlib

matplotlib.use("Agg")

import matplotlib.image as mpimg
import numpy as np
import pytest
import typer
from cases import one_error_line, runner

from landscape_cli.commands import app as main_app
from landscape_cli.commands._app import LandscapeGroup
from landscape_cli.commands.plot import plot
from landscape_cli.results import read_hessian, read_root, update_file
from landscape_cli.training import TrainConfig


def _cli() -> typer.Typer:
    """The real app once it registers `plot`; until then, a local app with the same contract."""
    if "plot" in [c.name for c in main_app.registered_commands]:
        return main_app
    from landscape_cli.commands.hessian import hessian

    local = typer.Typer(cls=LandscapeGroup, add_completion=False, pretty_exceptions_enable=False)
    local.command(name="plot")(plot)
    local.command(name="hessian")(hessian)
    return local


app = _cli()


@pytest.fixture(scope="module")
def h5files(tmp_path_factory, trained_checkpoint):
    """Two real results files: tiny MLPs trained with different seeds, then `landscape hessian`."""
    folder = tmp_path_factory.mktemp("plot")
    files = []
    for seed, name in ((0, "adam"), (1, "dualadam")):
        config = TrainConfig(
            model="mlp", model_options={"hidden": [8]}, epochs=1, seed=seed, optimizer=name
        )
        ckpt = trained_checkpoint(config, into=folder, name=f"{name}.pt")
        h5 = folder / f"{name}.h5"
        args = ["hessian", str(ckpt), "--samples", "64", "--density-probes", "2"]
        args += ["--lanczos-steps", "8", "--trace-probes", "20", "--out", str(h5)]
        result = runner.invoke(main_app, args)
        assert result.exit_code == 0, result.output
        files.append(h5)
    return files


def _ok(result):
    assert result.exit_code == 0, result.output
    return result


def _not_blank(path, min_colour: float = 0.01) -> None:
    """Not one colour, and some share of clearly coloured (not grey) pixels."""
    rgb = mpimg.imread(path)[..., :3]
    assert rgb.std() > 0.05
    assert ((rgb.max(axis=-1) - rgb.min(axis=-1)) > 0.2).mean() > min_colour


def test_fig5_from_real_files(h5files, tmp_path):
    out = tmp_path / "f5.png"
    result = _ok(
        runner.invoke(app, ["plot", *map(str, h5files), "--figure", "fig5", "--out", str(out)])
    )
    assert result.stdout == f"{out}\n"
    _not_blank(out)


def test_fig5_library_on_real_files(h5files):
    from landscape_cli import plotting as pl

    stored = [read_hessian(f) for f in h5files]
    labels = [read_root(f)["label"] for f in h5files]
    assert labels == ["adam", "dualadam"]  # the checkpoints' stems, as `hessian` stores them
    fig = pl.draw_spectra(stored, labels)
    ax_eig, ax_tr, ax_den = fig.axes
    assert len(ax_eig.patches) == sum(len(s["eigenvalues"]) for s in stored)
    assert [p.get_height() for p in ax_tr.patches] == [s["trace"] for s in stored]
    assert ax_den.get_yscale() == "log" and len(ax_den.get_lines()) == 2
    assert [t.get_text() for t in ax_den.get_legend().get_texts()] == labels


def test_fig5_json_labels_and_pdf(h5files, tmp_path):
    out = tmp_path / "f5.pdf"
    args = ["plot", *map(str, h5files), "--figure", "fig5", "--out", str(out), "--json"]
    data = json.loads(_ok(runner.invoke(app, [*args, "--labels", "Adam,DualAdam"])).stdout)
    assert data == {
        "figure": "fig5",
        "out": str(out),
        "files": [str(f) for f in h5files],
        "labels": ["Adam", "DualAdam"],
    }
    assert out.read_bytes().startswith(b"%PDF")
    data = json.loads(_ok(runner.invoke(app, [*args, "--labels", "A", "--labels", "B"])).stdout)
    assert data["labels"] == ["A", "B"]
    data = json.loads(_ok(runner.invoke(app, args)).stdout)
    assert data["labels"] == ["adam", "dualadam"]  # from the files' label attribute


def test_default_out_is_figure_png_in_cwd(h5files, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = _ok(runner.invoke(app, ["plot", str(h5files[0]), "--figure", "fig5"]))
    assert result.stdout == "fig5.png\n"
    _not_blank(tmp_path / "fig5.png")


def test_fig2_needs_no_file(tmp_path):
    out = tmp_path / "fig2.svg"
    result = _ok(runner.invoke(app, ["plot", "--figure", "fig2", "--out", str(out)]))
    assert result.stdout == f"{out}\n"
    assert out.read_bytes().startswith(b"<?xml") and b"<svg" in out.read_bytes()[:1000]


# ------------------------------------------------------------------------------------------------
# errors: one line on stderr, exit 2, nothing on stdout, no image written


def test_fig5_on_file_without_hessian(tmp_path):
    h5 = tmp_path / "scan-only.h5"
    update_file(h5, {"checkpoint": "x"}, lambda f: f.create_group("scan/x"))
    out = tmp_path / "f.png"
    err = one_error_line(
        runner.invoke(app, ["plot", str(h5), "--figure", "fig5", "--out", str(out)])
    )
    assert "no Hessian results" in err and "landscape hessian" in err
    assert not out.exists()


def test_fig5_on_file_without_density(h5files, tmp_path):
    h5 = tmp_path / "nodensity.h5"

    def drop_density(f):
        del f["hessian/density"]

    shutil.copy(h5files[0], h5)
    update_file(h5, {}, drop_density)
    err = one_error_line(
        runner.invoke(app, ["plot", str(h5), "--figure", "fig5", "--out", str(tmp_path / "f.png")])
    )
    assert "--density-probes" in err


def test_non_hdf5_file(tmp_path):
    bogus = tmp_path / "notes.h5"
    bogus.write_text("not hdf5\n")
    err = one_error_line(
        runner.invoke(
            app, ["plot", str(bogus), "--figure", "fig5", "--out", str(tmp_path / "f.png")]
        )
    )
    assert "not an HDF5 file" in err


def test_missing_file(tmp_path):
    err = one_error_line(
        runner.invoke(app, ["plot", str(tmp_path / "nope.h5"), "--figure", "fig5"])
    )
    assert "does not exist" in err


def test_unknown_figure_lists_valid_ones(h5files):
    err = one_error_line(runner.invoke(app, ["plot", str(h5files[0]), "--figure", "fig7"]))
    assert "fig7" in err
    for name in ("fig2", "fig5", "fig6", "contour", "surface", "heatmap"):
        assert name in err


def test_missing_figure_option(h5files):
    err = one_error_line(runner.invoke(app, ["plot", str(h5files[0])]))
    assert "--figure" in err


def test_label_count_mismatch(h5files, tmp_path):
    out = tmp_path / "f.png"
    args = ["plot", *map(str, h5files), "--figure", "fig5", "--out", str(out)]
    err = one_error_line(runner.invoke(app, [*args, "--labels", "only-one"]))
    assert "1 label(s) for 2 file(s)" in err
    assert not out.exists()


@pytest.mark.parametrize("name", ["f.jpg", "f.txt", "f"])
def test_bad_output_extension(h5files, tmp_path, name):
    out = tmp_path / name
    err = one_error_line(
        runner.invoke(app, ["plot", str(h5files[0]), "--figure", "fig5", "--out", str(out)])
    )
    assert ".png, .pdf, .svg" in err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--figure", "fig5"], "needs at least one results file"),
        (["--figure", "fig6"], "landscape scan"),
        (["--figure", "fig2", "X.h5"], "takes no results files"),
        (["--figure", "fig2", "--labels", "a"], "--labels"),
        (["--figure", "fig2", "--log"], "--log"),
        (["--figure", "fig2", "--accuracy"], "--accuracy"),
        (["--figure", "fig2", "--name", "1d-random"], "--name"),
    ],
)
def test_option_combinations_refused(args, message, tmp_path):
    err = one_error_line(runner.invoke(app, ["plot", *args, "--out", str(tmp_path / "f.png")]))
    assert message in err
    assert not (tmp_path / "f.png").exists()


# ------------------------------------------------------------------------------------------------
# scan figures through the command


def _write_scan(path, name: str, dim: int) -> None:
    x = np.linspace(-1.0, 1.0, 11)
    y = np.linspace(-1.0, 1.0, 7)

    def mutate(f):
        g = f.create_group(f"scan/{name}")
        g.attrs["dim"] = dim
        g.attrs["kind"] = "random"
        g.create_dataset("x", data=x)
        if dim == 1:
            loss = 0.1 + x**2
        else:
            g.create_dataset("y", data=y)
            loss = 0.1 + x[None, :] ** 2 + y[:, None] ** 2
            loss[-1, -1] = np.nan
        g.create_dataset("loss", data=loss)
        g.create_dataset("accuracy", data=1.0 - loss / 3)

    update_file(path, {"checkpoint": "x", "label": path.stem}, mutate)


@pytest.mark.parametrize("figure", ["fig6", "contour", "surface", "heatmap"])
def test_scan_figures_through_the_command(tmp_path, figure):
    dim = 1 if figure == "fig6" else 2
    files = []
    for stem in ("a", "b"):
        path = tmp_path / f"{stem}.h5"
        _write_scan(path, f"{dim}d-random", dim)
        files.append(path)
    out = tmp_path / f"{figure}.png"
    extra = ["--accuracy"] if figure == "fig6" else ["--log"]
    args = ["plot", *map(str, files), "--figure", figure, "--out", str(out), "--json", *extra]
    data = json.loads(_ok(runner.invoke(app, args)).stdout)
    assert data["labels"] == ["a", "b"] and data["out"] == str(out)
    _not_blank(out, min_colour=0.003 if figure == "fig6" else 0.05)


def test_scan_figure_of_wrong_dimension(tmp_path):
    path = tmp_path / "a.h5"
    _write_scan(path, "1d-random", 1)
    err = one_error_line(
        runner.invoke(
            app, ["plot", str(path), "--figure", "contour", "--out", str(tmp_path / "c.png")]
        )
    )
    assert "fig6" in err


def test_name_picks_one_of_several_scans(tmp_path):
    path = tmp_path / "a.h5"
    _write_scan(path, "1d-random", 1)
    _write_scan(path, "2d-random", 2)
    _write_scan(path, "2d-other", 2)
    out = tmp_path / "c.png"
    err = one_error_line(
        runner.invoke(app, ["plot", str(path), "--figure", "contour", "--out", str(out)])
    )
    # several 2-D scans: the message names them (not the 1-D one) and asks for --name
    assert "--name" in err and "2d-other" in err and "2d-random" in err and "1d-random" not in err
    args = ["plot", str(path), "--figure", "heatmap", "--name", "2d-random", "--out", str(out)]
    assert _ok(runner.invoke(app, args)).stdout == f"{out}\n"
    _not_blank(out, min_colour=0.05)


def test_side_by_side_panels_share_one_colour_scale():
    from landscape_cli.commands.plot import _shared_limits
    from landscape_cli.results import ScanResult

    def scan(loss: np.ndarray) -> ScanResult:
        xy = np.array([0.0, 1.0])
        return ScanResult("2d-random", xy, xy, loss, np.ones_like(loss), {"dim": 2})

    a = scan(np.array([[1.0, 2.0], [np.nan, 3.0]]))
    b = scan(np.array([[-1.0, 0.5], [7.0, np.nan]]))
    assert _shared_limits([a, b], log=False) == (-1.0, 7.0)
    assert _shared_limits([a, b], log=True) == (0.5, 7.0)
    assert _shared_limits([a], log=False) is None  # one panel keeps its own range
