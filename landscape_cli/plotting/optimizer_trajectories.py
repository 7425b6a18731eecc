"""Fig. 2 of the DualAdam paper.

Adam, InvAdam and DualAdam trajectories on 2-parameter loss landscapes, drawn from a
:class:`~landscape_cli.jobs.fig2_simulation.Fig2Simulation` (the simulation itself, its
landscapes and optimizers are :mod:`landscape_cli.jobs.fig2_simulation`; this module only draws):
loss contours, one trajectory per optimizer, start points as red stars and end points as black
circles.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from matplotlib.figure import Figure

from landscape_cli.plotting.style import new_figure

if TYPE_CHECKING:
    from matplotlib.axes import Axes

    from landscape_cli.jobs.fig2_simulation import Fig2Panel, Fig2Simulation

__all__ = ["draw_optimizer_trajectories"]

#: Colour and line style per optimizer (by display name).
_COLORS = {"Adam": "#ff7f0e", "InvAdam": "#1f77b4", "DualAdam": "#2ca02c"}
_STYLES = {"Adam": "-", "InvAdam": "-", "DualAdam": (0, (4, 3))}


def draw_optimizer_trajectories(result: Fig2Simulation, fig: Figure | None = None) -> Figure:
    """Draw the panels of a :func:`~landscape_cli.jobs.fig2_simulation.simulate` result.

    Side by side: loss contours, one trajectory per optimizer (legend: its final loss and the
    sharpness λmax at its end point), the start as a red star and each end point as a black
    circle. Returns the figure.
    """
    panels = result.panels
    if not panels:
        raise ValueError("draw_optimizer_trajectories needs at least one panel")
    if fig is None:
        fig = new_figure(6.2 * len(panels), 5.2)
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, panel in zip(axes, panels, strict=True):
        _draw_panel(fig, ax, panel)
    return fig


def _draw_panel(fig: Figure, ax: Axes, panel: Fig2Panel) -> None:
    """One landscape: contours with a colorbar, the trajectories, start and end points."""
    x, y, z = panel.x, panel.y, panel.loss
    filled = ax.contourf(x, y, z, levels=40, cmap="viridis")
    ax.contour(
        x,
        y,
        z,
        levels=20,
        colors="white",
        linewidths=0.3,
        alpha=0.6,
        negative_linestyles="solid",
    )
    fig.colorbar(filled, ax=ax, shrink=0.85).set_label("loss")
    for name, path in panel.trajectories.items():
        detail = ""
        if name in panel.sharpness:
            detail = f" (loss {panel.final_loss[name]:.3g}, λmax {panel.sharpness[name]:.3g})"
        ax.plot(
            path[:, 0],
            path[:, 1],
            color=_COLORS.get(name),
            linewidth=1.4,
            linestyle=_STYLES.get(name, "-"),
            alpha=0.95,
            label=f"{name}{detail}",
        )
    _mark_points(ax, panel)
    ax.set_xlim(x[0], x[-1])
    ax.set_ylim(y[0], y[-1])
    ax.set_xlabel("x")
    ax.set_ylabel("y")
    ax.set_title(panel.title)
    ax.legend(loc="upper right", fontsize=8, framealpha=0.85)


def _mark_points(ax: Axes, panel: Fig2Panel) -> None:
    """End points as black circles, the start as a red star, the named minima as text."""
    ends = np.array([path[-1] for path in panel.trajectories.values()])
    ax.plot(
        ends[:, 0],
        ends[:, 1],
        linestyle="none",
        marker="o",
        markersize=8,
        markerfacecolor="black",
        markeredgecolor="white",
        label="end",
        zorder=6,
    )
    start = panel.start
    ax.plot(
        [start[0]],
        [start[1]],
        linestyle="none",
        marker="*",
        markersize=16,
        color="red",
        markeredgecolor="white",
        label="start",
        zorder=7,
    )
    for label, point in panel.minima.items():
        ax.annotate(
            f"{label} minimum",
            xy=(point[0], point[1]),
            xytext=(8, -14),
            textcoords="offset points",
            color="white",
            fontsize=9,
        )
