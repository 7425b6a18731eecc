"""The figures: each draws results it is given and computes nothing.

Fig. 2 (optimizer trajectories, :func:`draw_optimizer_trajectories`), Fig. 5 (Hessian spectra,
:func:`draw_spectra`), Fig. 6 (1-D loss curves, :func:`draw_loss_curves`), per-layer λmax and
trace, 2-D loss landscapes as contours, a 3-D surface or a heatmap, and training trajectories over
their PCA plane (Fig. 7 of the demo). ``fig5`` and ``fig6`` are deprecated aliases of
:func:`draw_spectra` and :func:`draw_loss_curves`.

Plotting functions take result objects (the :class:`~landscape_cli.results.HessianResult` and
:class:`~landscape_cli.results.ScanResult` that :mod:`landscape_cli.results` reads back, read by
their fields, and for Fig. 2 the :class:`~landscape_cli.jobs.fig2_simulation.Fig2Simulation` that
:func:`landscape_cli.jobs.fig2_simulation.simulate` returns) and an optional figure or axes,
draw, and return what they drew on. They never read files or compute. Figures are plain
:class:`matplotlib.figure.Figure` objects (no pyplot state), so everything works headless.
"""

import warnings

from matplotlib.figure import Figure

from landscape_cli.plotting.curves import draw_loss_curves
from landscape_cli.plotting.landscape2d import auto_log, colorbar, contour, heatmap, surface
from landscape_cli.plotting.layers import layers
from landscape_cli.plotting.optimizer_trajectories import draw_optimizer_trajectories
from landscape_cli.plotting.spectra import (
    DENSITY_AXES,
    DENSITY_FLOOR,
    density_linthresh,
    draw_spectra,
)
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
    "draw_loss_curves",
    "draw_optimizer_trajectories",
    "draw_spectra",
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


# Deprecated: the names of earlier releases, which docs/python-api.md listed. Each warns and draws
# what the new name draws. Not in __all__.


def fig5(*args, **kwargs) -> Figure:
    """Deprecated alias of :func:`draw_spectra` (warns :class:`DeprecationWarning`)."""
    warnings.warn(
        "landscape_cli.plotting.fig5 is deprecated; use draw_spectra",
        DeprecationWarning,
        stacklevel=2,
    )
    return draw_spectra(*args, **kwargs)


def fig6(*args, **kwargs) -> Figure:
    """Deprecated alias of :func:`draw_loss_curves` (warns :class:`DeprecationWarning`)."""
    warnings.warn(
        "landscape_cli.plotting.fig6 is deprecated; use draw_loss_curves",
        DeprecationWarning,
        stacklevel=2,
    )
    return draw_loss_curves(*args, **kwargs)
