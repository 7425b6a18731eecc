"""Training trajectories over the loss in their PCA plane (Li et al. 2018, Figs. 9–10).

Input: the :class:`~landscape_cli.results.ScanResult` of ``landscape scan CKPT --direction pca
--trajectory ...`` (``kind == "pca"``), read by its fields: the loss on the grid of the
plane through the checkpoint spanned by the run's two principal directions, the
``explained_variance`` attribute, and ``trajectory``, the snapshots in training order (``x``,
``y``, ``loss``, ``label``, ``residual``, ``distance``).

The contour is the loss *in the plane*; a snapshot is drawn at its projection, which is not where
it is: its ``residual`` is its distance from the plane. Each snapshot's marker is filled with the
colour of its own loss on the contour's scale, so a marker that stands out from the contour
under it is a snapshot whose loss the plane does not show. A snapshot is flagged as off the plane
(ringed, and named in the legend) when its residual exceeds :data:`OFF_PLANE` of its distance
from the checkpoint (it lies more than 30° off the plane) and :data:`VISIBLE` of the drawn path's
size (so the last, tiny steps next to the checkpoint, which often leave the plane, are not).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
from matplotlib.figure import Figure

from landscape_cli.errors import LandscapeError
from landscape_cli.plotting import _scan
from landscape_cli.plotting.landscape2d import (
    Limits,
    auto_log,
    colorbar,
    contour,
)
from landscape_cli.plotting.style import new_figure

__all__ = ["OFF_PLANE", "VISIBLE", "off_plane", "trajectories"]

#: A snapshot whose distance from the plane exceeds this share of its distance from the
#: checkpoint (30° off the plane) ...
OFF_PLANE = 0.5
#: ... and this share of the drawn path's size (its largest distance from the checkpoint in the
#: plane) is flagged as off the plane.
VISIBLE = 0.02


def off_plane(x: np.ndarray, y: np.ndarray, residual: np.ndarray, distance: np.ndarray):
    """Which snapshots the figure flags as off the plane (see the module docstring)."""
    size = float(np.max(np.hypot(x, y))) if len(x) else 0.0
    angle = residual > OFF_PLANE * np.maximum(distance, np.finfo(np.float64).tiny)
    return angle & (residual > VISIBLE * size)


if TYPE_CHECKING:
    from landscape_cli.results import ScanResult


def _checked(scan: ScanResult, label: str) -> dict:
    t = scan.trajectory
    if scan.kind != "pca" or not t:
        raise LandscapeError(
            f"the scan {_scan.scan_name(scan)!r} of {label!r} has no trajectory; run `landscape "
            "scan` with `direction='pca'` and `trajectory` on its checkpoint"
        )
    return {
        k: np.asarray(t[k], dtype=np.float64) for k in ("x", "y", "loss", "residual", "distance")
    }


def trajectories(
    scans: Sequence[ScanResult],
    labels: Sequence[str],
    fig: Figure | None = None,
    *,
    log: bool | None = None,
    limits: Limits = None,
    levels: int = 30,
) -> Figure:
    """Draw each run's trajectory over the loss contours of its own PCA plane, one panel each.

    Args:
        scans: PCA scans (``kind == "pca"``), one per run; each has its own plane.
        labels: one title per scan.
        fig: the figure to draw into (one axes per scan); a new one by default.
        log: colour scale as for :func:`~landscape_cli.plotting.contour` (None: log when the
            losses span more than two decades).
        limits: colour range (lo, hi); by default the extremes of every grid and snapshot
            loss, so that all panels and markers share one scale and one colour bar.
        levels: number of filled contour levels.

    Each panel: the filled contours of the plane's loss, the checkpoint (the origin, a red
    star), the path through the snapshots in training order with a marker per snapshot filled
    with the colour of its own loss, the first marked "start" and the last "end", snapshots off
    the plane (:func:`off_plane`) ringed in red, and the axes labelled with each direction's
    share of the variance. Returns the figure.

    Raises:
        LandscapeError: a scan without a trajectory, or ``log`` with losses <= 0.
    """
    if len(scans) == 0:
        raise ValueError("trajectories needs at least one scan")
    if len(labels) != len(scans):
        raise ValueError(f"{len(labels)} labels for {len(scans)} scans")
    paths = [_checked(s, label) for s, label in zip(scans, labels, strict=True)]
    values = np.concatenate(
        [np.ravel(np.asarray(s.loss, dtype=np.float64)) for s in scans] + [p["loss"] for p in paths]
    )
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        raise LandscapeError("the trajectory scans have no computed points yet")
    if log is None:
        log = auto_log(finite, limits)
    if log:
        finite = finite[finite > 0]
    lo, hi = float(finite.min()), float(finite.max())
    if limits is not None:
        lo = lo if limits[0] is None else float(limits[0])
        hi = hi if limits[1] is None else float(limits[1])
    if fig is None:
        fig = new_figure(5.6 * len(scans) + 1.4, 5.0)
    axes = []
    for i, (scan, path, label) in enumerate(zip(scans, paths, labels, strict=True)):
        ax = fig.add_subplot(1, len(scans), i + 1)
        ax.set_title(label)
        contour(scan, ax, log=log, limits=(lo, hi), levels=levels, bar=False)
        _draw_path(ax, path)
        axes.append(ax)
    colorbar(axes[0].collections[0], axes, log=log, label=_scan.value_label("loss", scans, log))
    return fig


def _draw_path(ax, path: dict) -> None:
    """The snapshots in order over the contours, filled with their own losses' colours."""
    filled = ax.collections[0]
    x, y, loss = path["x"], path["y"], path["loss"]
    ax.plot(x, y, color="white", linewidth=2.6, zorder=6, solid_capstyle="round")
    ax.plot(x, y, color="black", linewidth=1.2, zorder=7)
    faces = filled.cmap(filled.norm(np.where(np.isfinite(loss), loss, np.nan)))
    ax.scatter(x, y, s=28, c=faces, edgecolors="black", linewidths=0.8, zorder=8)
    ax.plot(x[:1], y[:1], marker="^", markersize=11, color="white", markeredgecolor="black",
            linestyle="none", zorder=9, label="start")  # fmt: skip
    ax.plot(x[-1:], y[-1:], marker="s", markersize=9, color="black", markeredgecolor="white",
            linestyle="none", zorder=9, label="end")  # fmt: skip
    off = off_plane(x, y, path["residual"], path["distance"])
    if off.any():
        ax.plot(x[off], y[off], marker="o", markersize=11, markerfacecolor="none",
                markeredgecolor="red", markeredgewidth=1.1, linestyle="none", zorder=9,
                label="off the plane (> 30°)")  # fmt: skip
    # the whole path in view, even where it leaves the scanned grid (left blank there)
    x0, x1 = ax.get_xlim()
    y0, y1 = ax.get_ylim()
    pad_x, pad_y = 0.04 * (x1 - x0), 0.04 * (y1 - y0)
    ax.set_xlim(min(x0, x.min() - pad_x), max(x1, x.max() + pad_x))
    ax.set_ylim(min(y0, y.min() - pad_y), max(y1, y.max() + pad_y))
    ax.legend(loc="best", fontsize="small")
