"""Figures: Fig. 2 (optimizer trajectories), Fig. 5 (Hessian spectra), Fig. 6 (1-D loss curves),
and 2-D loss landscapes as contours, a 3-D surface or a heatmap.

Plotting functions take result objects (the dicts :mod:`landscape_cli.results` reads back) and an
optional figure or axes, draw, and return what they drew on. They never read files or compute
estimates; the one exception is :func:`simulate`, Fig. 2's 2-parameter simulation. Figures are
plain :class:`matplotlib.figure.Figure` objects (no pyplot state), so everything works headless.
"""

from landscape_cli.plotting.curves import fig6
from landscape_cli.plotting.fig2 import draw_fig2, simulate
from landscape_cli.plotting.landscape2d import contour, heatmap, surface
from landscape_cli.plotting.spectra import DENSITY_FLOOR, fig5
from landscape_cli.plotting.style import IMAGE_FORMATS, image_format, new_figure, save_figure

#: The figures ``landscape plot --figure`` knows.
FIGURES = ("fig2", "fig5", "fig6", "contour", "surface", "heatmap")

__all__ = [
    "DENSITY_FLOOR",
    "FIGURES",
    "IMAGE_FORMATS",
    "contour",
    "draw_fig2",
    "fig5",
    "fig6",
    "heatmap",
    "image_format",
    "new_figure",
    "save_figure",
    "simulate",
    "surface",
]
