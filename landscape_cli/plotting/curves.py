"""Fig. 6 of the DualAdam paper.

1-D loss curves L(θ* + ζ·d) of several checkpoints overlaid (for interpolations: L((1−α)·θa + α·θb),
each curve labelled "a → b").
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import PurePath
from typing import TYPE_CHECKING

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from landscape_cli.plotting import _scan
from landscape_cli.plotting.style import line_style, literal, new_figure, shared_measure

__all__ = ["draw_loss_curves"]

if TYPE_CHECKING:
    from landscape_cli.results import ScanResult


def _curve(ax: Axes, x: np.ndarray, values: np.ndarray, i: int, n: int, label: str) -> None:
    """One curve in the ``i``-th run's colour, line style and marker (every few points).

    NaN or ±inf (not computed yet, or no finite loss) leaves gaps, and an incomplete curve marks
    every point, so isolated points stay visible.
    """
    partial = not np.isfinite(values).all()
    style = line_style(i, n, points=len(x))
    if partial:
        style["markevery"] = None
    ax.plot(
        x,
        np.where(np.isfinite(values), values, np.nan),
        label=label,
        linewidth=1.6,
        **style,
    )


def _interpolation_label(scan: ScanResult, label: str) -> str:
    """``label → target`` for an interpolation (its ``to`` attribute names the end point θb).

    Both come from a user or a file: shown literally (:func:`~.style.literal`).
    """
    label = literal(label)
    if scan.kind != "interpolation":
        return label
    to = scan.attrs.get("to")
    if isinstance(to, (list, tuple)):
        to = to[0] if to else None
    if not to:
        return f"{label} → b"
    return f"{label} → {literal(PurePath(str(to)).stem)}"


def draw_loss_curves(
    scans: Sequence[ScanResult],
    labels: Sequence[str],
    fig: Figure | None = None,
    accuracy: bool = False,
    log: bool = False,
) -> Figure:
    """Draw Fig. 6: the 1-D loss curves of several scans overlaid (and their accuracies).

    Args:
        scans: 1-D scans (see :mod:`landscape_cli.plotting._scan`); NaN marks points not
            computed yet: they leave gaps, and an incomplete curve gets markers.
        labels: one legend label per scan.
        fig: the figure to draw into (one or two axes are added); a new one by default.
        accuracy: add a second panel with the accuracy curves.
        log: draw the losses on a log axis.

    Every run has its own colour, line style (solid, dashed, dotted, dash-dot) and marker, shown
    every few points, so curves that lie on top of each other stay apart. The x label names the
    direction (e.g. "filter-normalised random direction", from the scans' attributes) and the y
    label what the loss was measured on (loss, split, samples) when the scans agree; otherwise each
    legend label gets its own.

    Returns the figure. Raises LandscapeError for a 2-D scan, a scan with no computed point, or
    (with ``accuracy``) a scan without accuracy values.
    """
    data, accs = _checked_curves(scans, labels, accuracy=accuracy, log=log)
    if fig is None:
        fig = new_figure(11.0 if accuracy else 6.0, 4.4)
    axes = fig.subplots(1, 2 if accuracy else 1, squeeze=False)[0]
    xlabel = _scan.axis_label_1d(list(scans))
    interpolation = all(s.kind == "interpolation" for s in scans)
    _, own = shared_measure([dict(s.attrs) for s in scans])
    labels = [
        _interpolation_label(s, lab) + extra
        for s, lab, extra in zip(scans, labels, own, strict=True)
    ]
    n = len(scans)

    ax = axes[0]
    for i, (d, label) in enumerate(zip(data, labels, strict=True)):
        _curve(ax, d["x"], d["loss"], i, n, label)
    if log:
        ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(_scan.value_label("loss", list(scans)))
    what = "L((1−α)·θa + α·θb)" if interpolation else "L(θ* + ζ·d)"
    ax.set_title(f"(a) Loss {what}" if accuracy else f"Loss {what}")
    ax.legend()
    if accuracy:
        ax = axes[1]
        for i, (d, acc, label) in enumerate(zip(data, accs, labels, strict=True)):
            _curve(ax, d["x"], acc, i, n, label)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(_scan.value_label("accuracy", list(scans)))
        ax.set_title("(b) Accuracy")
        ax.legend()
    return fig


def _checked_curves(scans, labels, *, accuracy: bool, log: bool) -> tuple[list, list]:
    """Each scan's checked 1-D data (and accuracies with ``accuracy``).

    A log axis needs every computed loss > 0.
    """
    if len(scans) == 0:
        raise ValueError("draw_loss_curves needs at least one scan")
    if len(labels) != len(scans):
        raise ValueError(f"{len(labels)} labels for {len(scans)} scans")
    data = [_scan.checked(s, 1) for s in scans]
    if log:
        for s, d in zip(scans, data, strict=True):
            _scan.positive_or_error(d["loss"], _scan.scan_name(s))
    accs = [_scan.checked(s, 1, "accuracy")["accuracy"] for s in scans] if accuracy else []
    return data, accs
