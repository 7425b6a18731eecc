"""``landscape plot [FILE...] --figure NAME``: draw figures from results files (or Fig. 2)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from landscape_cli.commands import _common as c
from landscape_cli.commands._options import grouped
from landscape_cli.errors import LandscapeError

if TYPE_CHECKING:
    from landscape_cli.results import HessianResult, ScanResult

FIGURES = ("fig2", "fig5", "fig6", "layers", "contour", "surface", "heatmap", "trajectory")
_SCAN_FIGURES = ("fig6", "contour", "surface", "heatmap", "trajectory")
_2D_FIGURES = ("contour", "surface", "heatmap")
_COLOUR_FIGURES = (*_2D_FIGURES, "trajectory")  # the options of a colour scale apply
_HESSIAN_FIGURES = ("fig5", "layers")


def _labels(files: list[Path], given: list[str] | None) -> list[str]:
    """The curve labels: ``--labels``, else the files' ``label`` attributes or names.

    ``--labels`` (repeatable; each value may hold several, comma-separated) or the files'
    own ``label`` attributes, falling back to their names.
    """
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


def _read_scan(file: Path, name: str | None, dim: int) -> ScanResult:
    """The scan to draw from ``file``.

    ``--name``'s scan, or the file's only scan, or, when the file holds several, its only
    ``dim``-D scan (a file with one 1-D and one 2-D scan needs no --name).
    """
    from landscape_cli.results import read_scan, scan_names

    if name is not None:
        return read_scan(file, name)
    names = scan_names(file)
    if len(names) <= 1:
        return read_scan(file)  # the file's only scan, or the error that it has none
    scans = [read_scan(file, n) for n in names]
    fits = [s for s in scans if s.dim == dim]
    if len(fits) == 1:
        return fits[0]
    which = f"{dim}-D scans" if fits else "scans"
    shown = ", ".join(s.name for s in (fits or scans))
    raise LandscapeError(f"{file} holds several {which} ({shown}); pass --name")


def _read_trajectory_scan(file: Path, name: str | None) -> ScanResult:
    """``--name``'s scan, else the file's only scan with a trajectory (``scan --direction pca``)."""
    from landscape_cli.results import read_scan, scan_names

    if name is not None:
        return read_scan(file, name)
    scans = [read_scan(file, n) for n in scan_names(file)]
    fits = [s for s in scans if s.trajectory is not None]
    if len(fits) == 1:
        return fits[0]
    if not fits:
        raise LandscapeError(
            f"{file} has no trajectory scan; run `landscape scan CKPT --direction pca "
            "--trajectory 'CKPT-epoch*.pt'` on its checkpoint first"
        )
    raise LandscapeError(
        f"{file} holds several trajectory scans ({', '.join(s.name for s in fits)}); pass --name"
    )


def _shared_limits(scans: list[ScanResult], log: bool) -> tuple[float, float] | None:
    """One colour range for side-by-side panels.

    The finite (positive, with --log) extremes of all the scans; None leaves each panel to its own
    (and its own errors).
    """
    import numpy as np

    if len(scans) < 2:
        return None
    values = np.concatenate([np.ravel(np.asarray(s.loss, dtype=np.float64)) for s in scans])
    values = values[np.isfinite(values) & ((values > 0) if log else True)]
    if values.size == 0 or values.min() == values.max():
        return None
    return float(values.min()), float(values.max())


def output_paths(figures: list[str], out: Path | None) -> list[Path]:
    """Where each figure goes, each path checked (format, writable folder) before any work.

    ``--out`` for one figure; for several, ``--out``'s name with ``-<figure>`` before its extension
    (out.pdf: out-fig5.pdf, out-fig6.pdf); without ``--out``, ``<figure>.png`` in the current
    folder.
    """
    from landscape_cli.plotting import image_format
    from landscape_cli.results import check_output_file

    if out is None:
        paths = [Path(f"{figure}.png") for figure in figures]
    elif len(figures) == 1:
        paths = [out]
    else:
        paths = [out.with_name(f"{out.stem}-{figure}{out.suffix}") for figure in figures]
    for path in paths:
        image_format(path)  # refuse a bad extension before any work
        check_output_file(path, "figure")
    return paths


def _check(figures: list[str], files: list[Path], labels: list[str] | None) -> None:
    """One error line for the first unknown, repeated or file-less figure."""
    for figure in figures:
        if figure not in FIGURES:
            raise LandscapeError(f"unknown figure {figure!r}: choose one of {', '.join(FIGURES)}")
    repeated = sorted({f for f in figures if figures.count(f) > 1})
    if repeated:
        raise LandscapeError(f"--figure {repeated[0]} is given twice; give each figure once")
    if figures == ["fig2"]:
        if files:
            raise LandscapeError("fig2 runs its own simulation and takes no results files")
        if labels:
            raise LandscapeError("--labels does not apply to fig2 (it takes no files)")
    for figure in figures:
        if figure != "fig2" and not files:
            raise LandscapeError(
                f"{figure} needs at least one results file (written by "
                f"`landscape {'hessian' if figure in _HESSIAN_FIGURES else 'scan'}`)"
            )


def _draw_2d(figure: str, scans: list[ScanResult], labels: list[str], style: Style):
    """One 2-D figure: a panel per scan, on one shared colour scale."""
    import numpy as np

    from landscape_cli import plotting as pl

    log, vmin, vmax, levels, size = style.log, style.vmin, style.vmax, style.levels, style.size

    if log is None:  # one decision for all panels, so they share one scale
        values = np.concatenate([np.ravel(np.asarray(s.loss, dtype=np.float64)) for s in scans])
        log = pl.auto_log(values, (vmin, vmax))
    shared = _shared_limits(scans, log)
    limits = None
    if shared is not None or vmin is not None or vmax is not None:
        lo, hi = shared if shared is not None else (None, None)
        limits = (lo if vmin is None else vmin, hi if vmax is None else vmax)
    # one scale for every panel: one colour bar for all of them
    shared_bar = len(scans) > 1 and limits is not None and None not in limits
    width = 6.2 * len(scans) + (0.8 if figure == "surface" else 0.0)
    fig = pl.new_figure(*(size or (width, 5.0)))
    draw = {"contour": pl.contour, "surface": pl.surface, "heatmap": pl.heatmap}[figure]
    extra = {"levels": levels} if levels is not None or figure != "contour" else {}
    axes = []
    for i, (scan, label) in enumerate(zip(scans, labels, strict=True)):
        projection = "3d" if figure == "surface" else None
        ax = fig.add_subplot(1, len(scans), i + 1, projection=projection)
        ax.set_title(pl.literal(f"{label} ({scan.name})"))
        axes.append(draw(scan, ax, log=log, limits=limits, bar=not shared_bar, **extra))
    if shared_bar:
        _shared_colorbar(figure, axes, scans, log)
    return fig


def _shared_colorbar(figure: str, axes: list, scans: list[ScanResult], log: bool) -> None:
    """One colour bar, with round ticks, for side-by-side panels drawn on one scale."""
    from landscape_cli import plotting as pl
    from landscape_cli.plotting._scan import value_label

    mappable = axes[0].collections[0]  # the filled contours, the mesh or the surface
    if figure == "surface":
        what = "log₁₀ loss" if log else "loss"
        pl.colorbar(mappable, axes, log=False, label=value_label(what, scans), shrink=0.6)
    else:
        pl.colorbar(mappable, axes, log=log, label=value_label("loss", scans, log=log))


@dataclass(frozen=True)
class Style:
    """How to draw: the options that shape the figures, each for the figures it applies to."""

    name: Annotated[
        str | None,
        typer.Option(
            "--name",
            help="Scan group to draw (default: the file's only scan, or its only scan of the "
            "figure's dimension).",
            rich_help_panel=c.FIGURE_PANEL,
        ),
    ] = None
    log: Annotated[
        bool | None,
        typer.Option(
            "--log/--no-log",
            help="Log scale: fig5's bars (a, b), fig6's loss, layers' values, the 2-D figures' "
            "colours (default for 2-D: log when the loss spans more than two decades).",
            rich_help_panel=c.FIGURE_PANEL,
        ),
    ] = None
    accuracy: Annotated[
        bool,
        typer.Option(
            "--accuracy",
            help="fig6: add a panel with the accuracy.",
            rich_help_panel=c.FIGURE_PANEL,
        ),
    ] = False
    density_axis: Annotated[
        str | None,
        typer.Option(
            "--density-axis",
            metavar="asinh|linear",
            help="fig5 (c): asinh eigenvalue axis, linear near 0 and logarithmic beyond, smooth "
            "(default), or linear.",
            rich_help_panel=c.FIGURE_PANEL,
        ),
    ] = None
    levels: Annotated[
        int | None,
        typer.Option(
            "--levels",
            metavar="N",
            help="2-D figures: N contour levels (default 30); heatmap, surface: N colour steps.",
            rich_help_panel=c.FIGURE_PANEL,
        ),
    ] = None
    vmin: Annotated[
        float | None,
        typer.Option(
            "--vmin",
            metavar="V",
            help="2-D figures: lower end of the colour scale.",
            rich_help_panel=c.FIGURE_PANEL,
        ),
    ] = None
    vmax: Annotated[
        float | None,
        typer.Option(
            "--vmax",
            metavar="V",
            help="2-D figures: upper end of the colour scale.",
            rich_help_panel=c.FIGURE_PANEL,
        ),
    ] = None
    size: Annotated[
        tuple[float, float] | None,
        typer.Option(
            "--size",
            metavar="W H",
            help="Figure size in inches (width height).",
            rich_help_panel=c.OUTPUT_PANEL,
        ),
    ] = None
    dpi: Annotated[
        int,
        typer.Option(
            "--dpi",
            metavar="N",
            help="Resolution of PNGs (dots per inch).",
            rich_help_panel=c.OUTPUT_PANEL,
        ),
    ] = 150

    def check(self, figures: list[str]) -> None:
        """One error line for the first option given to figures it does not apply to, or bad."""
        applies = {
            "--name": (self.name is not None, _SCAN_FIGURES),
            "--log": (self.log is not None, ("fig5", "fig6", "layers", *_COLOUR_FIGURES)),
            "--accuracy": (self.accuracy, ("fig6",)),
            "--density-axis": (self.density_axis is not None, ("fig5",)),
            "--levels": (self.levels is not None, _COLOUR_FIGURES),
            "--vmin": (self.vmin is not None, _COLOUR_FIGURES),
            "--vmax": (self.vmax is not None, _COLOUR_FIGURES),
        }
        for option, (used, where) in applies.items():
            if used and not any(f in where for f in figures):
                shown = ", ".join(figures)
                raise LandscapeError(f"{option} applies to {', '.join(where)}, not {shown}")
        from landscape_cli import resources

        vmin, vmax, levels, size = self.vmin, self.vmax, self.levels, self.size
        resources.check_options(
            {"levels": levels, "dpi": self.dpi, "size": size, "vmin": vmin, "vmax": vmax}
        )
        if vmin is not None and vmax is not None and not vmin < vmax:
            raise LandscapeError(f"--vmin ({vmin:g}) must be below --vmax ({vmax:g})")
        if levels is not None and levels < 2:
            raise LandscapeError(f"--levels must be at least 2, got {levels}")
        if self.density_axis not in (None, "asinh", "symlog", "linear"):
            raise LandscapeError(
                f"--density-axis must be asinh or linear, got {self.density_axis!r}"
            )
        if self.dpi < 1:
            raise LandscapeError(f"--dpi must be at least 1, got {self.dpi}")
        if size is not None and not (size[0] > 0 and size[1] > 0):
            raise LandscapeError(
                f"--size needs a positive width and height, got {size[0]} {size[1]}"
            )


@grouped
def plot(
    files: Annotated[
        list[Path] | None,
        typer.Argument(
            metavar="[FILE]...",
            help="Results files (.h5) from `landscape hessian` or `landscape scan`.",
        ),
    ] = None,
    *,
    figure: Annotated[
        list[str],
        typer.Option(
            "--figure",
            metavar="NAME",
            help="fig2, fig5, fig6, layers, contour, surface, heatmap or trajectory. Repeat to "
            "draw several, each to its own file: --out OUT.EXT then gives OUT-NAME.EXT per figure.",
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
    style: Style,
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            help="Image file: .png, .pdf, .svg, .ps or .eps (default: <figure>.png). PDF and "
            "PostScript embed TrueType fonts; SVG keeps text as text.",
            rich_help_panel=c.OUTPUT_PANEL,
        ),
    ] = None,
    json_out: c.JsonOpt = False,
) -> None:
    """Draw figures: fig2 (optimizer trajectories), fig5 (Hessian spectra), fig6 (1-D loss
    curves), layers (per-layer λmax and trace), a 2-D scan as contour, surface or heatmap, or
    trajectory (a training run over its PCA plane, from `scan --direction pca`).
    """  # noqa: D205 (the --help text)
    files, figures = list(files or []), list(figure)
    _check(figures, files, labels)
    style.check(figures)
    out_paths = output_paths(figures, out)

    # Figures are plain matplotlib Figures saved by format (no pyplot, no GUI backend), so this
    # works headless without touching the user's backend choice.
    from landscape_cli import plotting as pl

    shown = _labels(files, labels) if files else []

    drawn = _draw_all(figures, files, shown, style)  # all drawn before any is saved
    for fig in drawn:  # and every canvas checked before any is saved
        pl.check_canvas(fig, dpi=style.dpi)
    for fig, path in zip(drawn, out_paths, strict=True):
        pl.save_figure(fig, path, dpi=style.dpi)

    _report(figures, files, shown, out_paths, json_out)


def _read_hessians(files: list[Path]) -> tuple[list[HessianResult], list[bool]]:
    """Each file's ``/hessian``, else the audit's own Hessian measurements ``/audit/hessian``.

    Returns the results and, per file, whether they came from ``/audit/hessian`` (said in one
    ``note:`` line and after the file's legend label).
    """
    from landscape_cli.results import read_hessian

    results, from_audit = [], []
    for file in files:
        try:
            results.append(read_hessian(file))
            from_audit.append(False)
            continue
        except LandscapeError as missing:
            try:
                results.append(read_hessian(file, "audit/hessian"))
            except LandscapeError:
                raise missing from None
        from_audit.append(True)
        c.note(f"{file} has no /hessian: drawing the audit's Hessian measurements (/audit/hessian)")
    return results, from_audit


def _report(figures, files, shown, out_paths, json_out: bool) -> None:
    """Print where each figure went: its path, or with ``--json`` one object."""
    if json_out:
        common = {"files": [str(f) for f in files], "labels": shown}
        if len(figures) == 1:
            c.print_json({"figure": figures[0], "out": str(out_paths[0]), **common})
        else:
            made = [{"figure": f, "out": str(p)} for f, p in zip(figures, out_paths, strict=True)]
            c.print_json({"figures": made, **common})
    else:
        for path in out_paths:
            typer.echo(str(path))


def _draw_all(figures: list[str], files: list[Path], shown: list[str], style: Style) -> list:
    """Draw each asked figure from the files (each file read once), in order."""
    from landscape_cli import plotting as pl

    name, log, size = style.name, style.log, style.size

    def new_fig():
        return pl.new_figure(*size) if size is not None else None

    drawn = []
    hessians: list[HessianResult] | None = None
    for fig_name in figures:
        if fig_name == "fig2":
            from landscape_cli.jobs.fig2_simulation import simulate

            fig = pl.draw_optimizer_trajectories(simulate(), fig=new_fig())
        elif fig_name in _HESSIAN_FIGURES:
            if hessians is None:
                hessians, from_audit = _read_hessians(files)
                hessian_labels = [
                    f"{label} (/audit/hessian)" if audit else label
                    for label, audit in zip(shown, from_audit, strict=True)
                ]
            if fig_name == "fig5":
                fig = pl.draw_spectra(
                    hessians,
                    hessian_labels,
                    fig=new_fig(),
                    log=bool(log),
                    density_axis=style.density_axis or "asinh",
                )
            else:
                fig = pl.layers(hessians, hessian_labels, fig=new_fig(), log=bool(log))
        elif fig_name == "fig6":
            scans = [_read_scan(file, name, 1) for file in files]
            fig = pl.draw_loss_curves(
                scans, shown, fig=new_fig(), accuracy=style.accuracy, log=bool(log)
            )
        elif fig_name == "trajectory":
            scans = [_read_trajectory_scan(file, name) for file in files]
            fig = pl.trajectories(
                scans,
                shown,
                fig=new_fig(),
                log=log,
                limits=None
                if style.vmin is None and style.vmax is None
                else (style.vmin, style.vmax),
                levels=style.levels or 30,
            )
        else:
            scans = [_read_scan(file, name, 2) for file in files]
            fig = _draw_2d(fig_name, scans, shown, style)
        drawn.append(fig)
    return drawn
