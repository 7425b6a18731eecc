"""``landscape plot [FILE...] --figure NAME``: draw a figure from results files (or Fig. 2)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from landscape_cli.commands import _common as c
from landscape_cli.errors import LandscapeError

FIGURES = ("fig2", "fig5", "fig6", "contour", "surface", "heatmap")
_SCAN_FIGURES = ("fig6", "contour", "surface", "heatmap")


def _labels(files: list[Path], given: list[str] | None) -> list[str]:
    """``--labels`` (repeatable; each value may hold several, comma-separated) or the files'
    own ``label`` attributes, falling back to their names."""
    from landscape_cli.results import read_root

    if given:
        labels = [part.strip() for value in given for part in value.split(",")]
        if len(labels) != len(files):
            raise LandscapeError(
                f"--labels gave {len(labels)} label(s) for {len(files)} file(s); "
                "give one per file (repeat --labels or separate them with commas)"
            )
        for file in files:
            read_root(file)  # refuse a file that is not a results file before drawing
        return labels
    labels = []
    for file in files:
        label = read_root(file).get("label")
        labels.append(str(label) if label else file.stem)
    return labels


def _read_scans(files: list[Path], name: str | None) -> list[dict[str, Any]]:
    from landscape_cli import results

    read_scan = getattr(results, "read_scan", None)
    if read_scan is None:
        raise LandscapeError("this landscape cannot read scans yet (no results.read_scan)")
    return [read_scan(file, name) for file in files]


def _shared_limits(scans: list[dict[str, Any]], log: bool) -> tuple[float, float] | None:
    """One colour range for side-by-side panels: the finite (positive, with --log) extremes of
    all the scans; None leaves each panel to its own (and its own errors)."""
    import numpy as np

    if len(scans) < 2:
        return None
    values = np.concatenate([np.ravel(np.asarray(s["loss"], dtype=np.float64)) for s in scans])
    values = values[np.isfinite(values) & ((values > 0) if log else True)]
    if values.size == 0 or values.min() == values.max():
        return None
    return float(values.min()), float(values.max())


def _check(figure: str, files: list[Path], labels, name, log: bool, accuracy: bool) -> None:
    if figure not in FIGURES:
        raise LandscapeError(f"unknown figure {figure!r}: choose one of {', '.join(FIGURES)}")
    if figure == "fig2":
        if files:
            raise LandscapeError("fig2 runs its own simulation and takes no results files")
        if labels:
            raise LandscapeError("--labels does not apply to fig2 (it takes no files)")
    elif not files:
        raise LandscapeError(
            f"{figure} needs at least one results file (written by "
            f"`landscape {'hessian' if figure == 'fig5' else 'scan'}`)"
        )
    if name is not None and figure not in _SCAN_FIGURES:
        raise LandscapeError(f"--name applies to {', '.join(_SCAN_FIGURES)}, not {figure}")
    if log and figure not in _SCAN_FIGURES:
        raise LandscapeError(
            f"--log applies to {', '.join(_SCAN_FIGURES)}, not {figure}"
            + (" (its density panel is already logarithmic)" if figure == "fig5" else "")
        )
    if accuracy and figure != "fig6":
        raise LandscapeError(f"--accuracy applies to fig6, not {figure}")


def plot(
    files: Annotated[
        list[Path] | None,
        typer.Argument(
            metavar="[FILE]...",
            help="Results files (.h5) from `landscape hessian` or `landscape scan`.",
        ),
    ] = None,
    figure: Annotated[
        str,
        typer.Option(
            "--figure",
            metavar="NAME",
            help="fig2, fig5, fig6, contour, surface or heatmap.",
            rich_help_panel=c.FIGURE_PANEL,
        ),
    ] = ...,
    labels: Annotated[
        list[str] | None,
        typer.Option(
            "--labels",
            help="One label per file: repeat the option or separate with commas "
            "(default: each file's label).",
            rich_help_panel=c.FIGURE_PANEL,
        ),
    ] = None,
    name: Annotated[
        str | None,
        typer.Option(
            "--name",
            help="Scan group to draw (default: the file's only scan).",
            rich_help_panel=c.FIGURE_PANEL,
        ),
    ] = None,
    log: Annotated[
        bool,
        typer.Option(
            "--log", help="Log scale for the loss (scan figures).", rich_help_panel=c.FIGURE_PANEL
        ),
    ] = False,
    accuracy: Annotated[
        bool,
        typer.Option(
            "--accuracy",
            help="fig6: add a panel with the accuracy.",
            rich_help_panel=c.FIGURE_PANEL,
        ),
    ] = False,
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            help="Image file: .png, .pdf or .svg (default: <figure>.png).",
            rich_help_panel=c.OUTPUT_PANEL,
        ),
    ] = None,
    json_out: c.JsonOpt = False,
) -> None:
    """Draw a figure: fig2 (optimizer trajectories), fig5 (Hessian spectra), fig6 (1-D loss
    curves), or a 2-D scan as contour, surface or heatmap."""
    files = list(files or [])
    _check(figure, files, labels, name, log, accuracy)
    out_path = out if out is not None else Path(f"{figure}.png")

    # Figures are plain matplotlib Figures saved by format (no pyplot, no GUI backend), so this
    # works headless without touching the user's backend choice.
    from landscape_cli import plotting as pl

    pl.image_format(out_path)  # refuse a bad extension before any work
    from landscape_cli.results import check_output_file

    check_output_file(out_path, "figure")
    shown = [] if figure == "fig2" else _labels(files, labels)

    if figure == "fig2":
        fig = pl.draw_fig2(pl.simulate())
    elif figure == "fig5":
        from landscape_cli.results import read_hessian

        fig = pl.fig5([read_hessian(file) for file in files], shown)
    elif figure == "fig6":
        fig = pl.fig6(_read_scans(files, name), shown, accuracy=accuracy, log=log)
    else:
        scans = _read_scans(files, name)
        limits = _shared_limits(scans, log)
        fig = pl.new_figure(6.2 * len(scans) + (0.8 if figure == "surface" else 0.0), 5.0)
        draw = {"contour": pl.contour, "surface": pl.surface, "heatmap": pl.heatmap}[figure]
        for i, (scan, label) in enumerate(zip(scans, shown, strict=True)):
            projection = "3d" if figure == "surface" else None
            ax = fig.add_subplot(1, len(scans), i + 1, projection=projection)
            ax.set_title(f"{label} ({scan.get('name', 'scan')})")
            draw(scan, ax, log=log, limits=limits)
    pl.save_figure(fig, out_path)

    if json_out:
        c.print_json(
            {
                "figure": figure,
                "out": str(out_path),
                "files": [str(f) for f in files],
                "labels": shown,
            }
        )
    else:
        typer.echo(str(out_path))
