"""2-D loss landscapes: filled contours, a 3-D surface, and a heatmap of one 2-D scan.

The loss of a 2-D scan is shaped (ny, nx): row j holds the losses at y[j], column i those at x[i].
Every function draws x horizontally and y vertically with y increasing upwards, leaves points not
computed yet (NaN) blank, and marks the origin (the checkpoint itself) when the grid contains it.

The colour scale is logarithmic by default when the loss spans more than two decades
(:data:`AUTO_LOG_DECADES`; ``log=None``), since a linear scale then paints everything near the
minimum one dark colour; ``log=True``/``False`` force it. The colour bar's label says which.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import matplotlib
import numpy as np
from matplotlib.axes import Axes
from matplotlib.colors import LogNorm, Normalize
from matplotlib.ticker import MaxNLocator

from landscape_cli.errors import LandscapeError
from landscape_cli.plotting import _scan
from landscape_cli.plotting.style import literal, new_figure

__all__ = [
    "AUTO_LOG_DECADES",
    "auto_log",
    "colorbar",
    "contour",
    "heatmap",
    "round_ticks",
    "surface",
]

CMAP = "viridis"

#: ``log=None`` picks a log colour scale when max/min of the loss exceeds 10 ** this.
AUTO_LOG_DECADES = 2.0

#: Colour limits (lo, hi); either may be None for the data's own minimum or maximum.
Limits = tuple[float | None, float | None] | None

if TYPE_CHECKING:
    from landscape_cli.results import ScanResult


def auto_log(values: np.ndarray, limits: Limits = None) -> bool:
    """Whether the default colour scale is logarithmic.

    Every finite loss (or the given limits) positive and spanning more than :data:`AUTO_LOG_DECADES`
    decades.
    """
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return False
    lo, hi = float(v.min()), float(v.max())
    if limits is not None:
        lo = lo if limits[0] is None else float(limits[0])
        hi = hi if limits[1] is None else float(limits[1])
    return bool(lo > 0 and float(v.min()) > 0 and hi / lo > 10.0**AUTO_LOG_DECADES)


def _prepare(
    scan: ScanResult, log: bool | None, limits: Limits = None
) -> tuple[np.ndarray, np.ndarray, np.ma.MaskedArray, bool]:
    d = _scan.checked(scan, 2)
    if log is None:
        log = auto_log(d["loss"], limits)
    if log:
        _scan.positive_or_error(d["loss"], _scan.scan_name(scan))
    return d["x"], d["y"], np.ma.masked_invalid(d["loss"]), bool(log)


def _limits(z: np.ma.MaskedArray, log: bool, limits: Limits = None) -> tuple[float, float]:
    """The colour range.

    ``limits`` when given (a None end: the finite values' own), else the finite values' min and max.
    """
    lo, hi = float(z.min()), float(z.max())
    if limits is not None:
        lo = lo if limits[0] is None else float(limits[0])
        hi = hi if limits[1] is None else float(limits[1])
    if not (np.isfinite(lo) and np.isfinite(hi)) or (log and lo <= 0) or hi < lo:
        raise ValueError(
            f"colour limits ({lo}, {hi}) must be finite, increasing (and > 0 on a log scale)"
        )
    if hi == lo:  # a constant landscape: widen so that levels and colours still exist
        pad = abs(lo) * 1e-3 or 1e-3
        lo, hi = (lo / 1.01, hi * 1.01) if log else (lo - pad, hi + pad)
    return lo, hi


def _norm(z: np.ma.MaskedArray, log: bool, limits: Limits = None) -> Normalize:
    lo, hi = _limits(z, log, limits)
    return LogNorm(lo, hi) if log else Normalize(lo, hi)


def _log_ticks(lo: float, hi: float) -> list[float]:
    """Round ticks inside [lo, hi] on a log scale.

    1-2-5 ticks (powers of ten alone over more than three decades; the ends themselves when
    fewer than two fit).
    """
    mantissas = (1.0,) if hi / lo > 1e3 else (1.0, 2.0, 5.0)
    ticks = [
        float(f"{m * 10.0**e:.1g}")
        for e in range(int(np.floor(np.log10(lo))), int(np.ceil(np.log10(hi))) + 1)
        for m in mantissas
        if lo <= m * 10.0**e <= hi
    ]
    return ticks if len(ticks) >= 2 else [lo, hi]


def round_ticks(lo: float, hi: float, log: bool) -> list[float]:
    """Round colour-bar ticks inside [lo, hi].

    On a linear scale, multiples of 1, 2, 2.5 or 5 times a power of ten (matplotlib's
    :class:`~matplotlib.ticker.MaxNLocator`, at most 6 intervals); on a log scale, 1-2-5 ticks.
    A colour bar left to itself over a contour's levels shows a subset of the levels, odd
    numbers such as 0.276 and 1.148.
    """
    if log:
        return _log_ticks(lo, hi)
    ticks = MaxNLocator(nbins=6, steps=[1, 2, 2.5, 5, 10]).tick_values(lo, hi)
    span = hi - lo
    inside = [float(t) for t in ticks if lo - 1e-9 * span <= t <= hi + 1e-9 * span]
    return inside if len(inside) >= 2 else [lo, hi]


def colorbar(mappable, axes, *, log: bool, label: str, **kwargs):
    """One colour bar for ``mappable`` beside ``axes`` (one axes or several), with round ticks.

    Several side-by-side panels on one colour scale get one bar for all of them.
    """
    fig = (axes[0] if isinstance(axes, (list, tuple)) else axes).figure
    bar = fig.colorbar(mappable, ax=axes, **kwargs)
    lo, hi = float(mappable.norm.vmin), float(mappable.norm.vmax)
    ticks = round_ticks(lo, hi, log)
    bar.set_ticks(ticks, labels=[f"{t:g}" for t in ticks])
    bar.minorticks_off()
    bar.set_label(label)
    return bar


def plt_colormap(name: str, n: int):
    """``name`` resampled to ``n`` discrete colours."""
    if n < 2:
        raise LandscapeError(f"`levels` must be at least 2, got {n}")
    return matplotlib.colormaps[name].resampled(n)


def _mark_origin(ax: Axes, x: np.ndarray, y: np.ndarray) -> None:
    if x.min() <= 0 <= x.max() and y.min() <= 0 <= y.max():
        ax.plot(
            [0.0],
            [0.0],
            marker="*",
            markersize=13,
            color="red",
            markeredgecolor="white",
            linestyle="none",
            label="checkpoint",
            zorder=5,
        )


def _new_axes(projection: str | None = None) -> Axes:
    fig = new_figure(6.4 if projection is None else 7.0, 5.0 if projection is None else 5.6)
    return fig.add_subplot(projection=projection)


def _title(ax: Axes, scan: ScanResult) -> None:
    if not ax.get_title():
        ax.set_title(literal(_scan.scan_name(scan)))


def _bar_label(scan: ScanResult, log: bool, what: str = "loss") -> str:
    return _scan.value_label(what, [scan], log=log)


def contour(
    scan: ScanResult,
    ax: Axes | None = None,
    log: bool | None = None,
    *,
    limits: Limits = None,
    levels: int = 30,
    bar: bool = True,
) -> Axes:
    """Filled contours plus contour lines of a 2-D scan, the origin marked, with a colorbar.

    ``log`` spaces the levels (and colours) logarithmically; it needs positive losses. The
    default (None) is a log scale when the loss spans more than two decades (:func:`auto_log`).
    ``limits`` (lo, hi) fixes the colour range, so that several panels share one scale (default:
    this scan's finite minimum and maximum; a None end keeps the data's own). ``levels`` is the
    number of filled levels (every third is also drawn as a line). ``bar=False`` leaves the
    colour bar out (side-by-side panels on one scale share one, :func:`colorbar`). Returns the
    axes (a new figure's when ``ax`` is None).
    """
    if levels < 2:
        raise LandscapeError(f"`levels` must be at least 2, got {levels}")
    x, y, z, log = _prepare(scan, log, limits)
    if ax is None:
        ax = _new_axes()
    lo, hi = _limits(z, log, limits)
    nlev = levels
    if log:
        levels = np.geomspace(lo, hi, nlev + 1)
    elif limits is not None:  # the range asked for, exactly
        levels = np.linspace(lo, hi, nlev + 1)
    else:  # round numbers, covering [lo, hi]
        levels = MaxNLocator(nbins=nlev).tick_values(lo, hi)
        levels = levels[
            (levels >= levels[levels <= lo].max()) & (levels <= levels[levels >= hi].min())
        ]
    norm = LogNorm(levels[0], levels[-1]) if log else Normalize(levels[0], levels[-1])
    below, above = bool(z.min() < levels[0]), bool(z.max() > levels[-1])
    extend = {(False, False): "neither", (True, False): "min", (False, True): "max"}.get(
        (below, above), "both"
    )
    filled = ax.contourf(x, y, z, levels=levels, cmap=CMAP, norm=norm, extend=extend)
    ax.contour(x, y, z, levels=levels[::3], colors="black", linewidths=0.5, alpha=0.7)
    _mark_origin(ax, x, y)
    if bar:
        colorbar(filled, ax, log=log, label=_bar_label(scan, log))
    xlabel, ylabel = _scan.axis_labels_2d(scan)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_xlim(x.min(), x.max())
    ax.set_ylim(y.min(), y.max())
    _title(ax, scan)
    return ax


def heatmap(
    scan: ScanResult,
    ax: Axes | None = None,
    log: bool | None = None,
    *,
    limits: Limits = None,
    levels: int | None = None,
    bar: bool = True,
) -> Axes:
    """The loss of a 2-D scan as coloured cells centred on the grid points, with a colorbar.

    x runs horizontally, y vertically (upwards); cells not computed yet stay blank. ``log``,
    ``limits`` and ``bar`` as for :func:`contour`; ``levels`` (None: a continuous scale) makes
    the colour scale that many discrete steps.
    """
    x, y, z, log = _prepare(scan, log, limits)
    if ax is None:
        ax = _new_axes()
    cmap = CMAP if levels is None else plt_colormap(CMAP, levels)
    mesh = ax.pcolormesh(x, y, z, shading="nearest", cmap=cmap, norm=_norm(z, log, limits))
    _mark_origin(ax, x, y)
    if bar:
        colorbar(mesh, ax, log=log, label=_bar_label(scan, log))
    xlabel, ylabel = _scan.axis_labels_2d(scan)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    _title(ax, scan)
    return ax


def surface(
    scan: ScanResult,
    ax: Axes | None = None,
    log: bool | None = None,
    *,
    limits: Limits = None,
    levels: int | None = None,
    bar: bool = True,
) -> Axes:
    """A 3-D surface of a 2-D scan (the axes must be 3-D: ``projection="3d"``).

    Points not computed yet are masked out of the surface. ``log`` draws log10 of the loss on the
    z axis (matplotlib's 3-D axes have no log scale; the default as for :func:`contour`).
    ``limits`` (in loss units) fixes the z and colour range, as for :func:`contour`; ``levels``
    (None: continuous) makes the colours that many discrete steps; ``bar`` as for
    :func:`contour`.
    """
    x, y, z, log = _prepare(scan, log, limits)
    if ax is None:
        ax = _new_axes("3d")
    elif getattr(ax, "name", "") != "3d":
        raise ValueError('surface() needs 3-D axes: fig.add_subplot(projection="3d")')
    if log:
        z = np.ma.log10(z)
        if limits is not None:
            _limits(np.ma.power(10.0, z), True, limits)  # positive limits only
            limits = tuple(None if v is None else float(np.log10(v)) for v in limits)
    X, Y = np.meshgrid(x, y)
    norm = _norm(z, False, limits)
    surf = ax.plot_surface(
        X,
        Y,
        z,
        cmap=CMAP if levels is None else plt_colormap(CMAP, levels),
        norm=norm,
        rstride=1,
        cstride=1,
        linewidth=0,
        antialiased=False,
    )
    ax.set_xlim(x.min(), x.max())
    ax.set_ylim(y.min(), y.max())
    ax.set_zlim(*_limits(z, False, limits))
    zlabel = "log₁₀ loss" if log else "loss"
    if bar:
        colorbar(surf, ax, log=False, label=_scan.value_label(zlabel, [scan]), shrink=0.6, pad=0.1)
    xlabel, ylabel = _scan.axis_labels_2d(scan)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_zlabel(zlabel)
    _title(ax, scan)
    return ax
