"""The figures: each draws results it is given and computes nothing.

Fig. 2 (optimizer trajectories), Fig. 5 (Hessian spectra), Fig. 6 (1-D loss curves), per-layer λmax
and trace, 2-D loss landscapes as contours, a 3-D surface or a heatmap, and training trajectories
over their PCA plane (Fig. 7 of the demo).

Plotting functions take result objects (the :class:`~landscape_cli.results.HessianResult` and
:class:`~landscape_cli.results.ScanResult` that :mod:`landscape_cli.results` reads back, read by
their fields, and for Fig. 2 the :class:`~landscape_cli.jobs.fig2_simulation.Fig2Simulation` that
:func:`landscape_cli.jobs.fig2_simulation.simulate` returns) and an optional figure or axes,
draw, and return what they drew on. They never read files or compute. Figures are plain
:class:`matplotlib.figure.Figure` objects (no pyplot state), so everything works headless.
"""

from landscape_cli.plotting.curves import fig6
from landscape_cli.plotting.fig2 import draw_fig2
from landscape_cli.plotting.landscape2d import auto_log, colorbar, contour, heatmap, surface
from landscape_cli.plotting.layers import layers
from landscape_cli.plotting.spectra import DENSITY_AXES, DENSITY_FLOOR, density_linthresh, fig5
from landscape_cli.plotting.style import (
    IMAGE_FORMATS,
    SAVE_RC,
    check_canvas,
    image_format,
    literal,
    new_figure,
    save_figure,
)
from landscape_cli.plotting.trajectory import OFF_PLANE, off_plane, trajectories

__all__ = [
    "DENSITY_AXES",
    "DENSITY_FLOOR",
    "IMAGE_FORMATS",
    "OFF_PLANE",
    "SAVE_RC",
    "auto_log",
    "check_canvas",
    "colorbar",
    "contour",
    "density_linthresh",
    "draw_fig2",
    "fig5",
    "fig6",
    "heatmap",
    "image_format",
    "layers",
    "literal",
    "new_figure",
    "off_plane",
    "save_figure",
    "surface",
    "trajectories",
]
