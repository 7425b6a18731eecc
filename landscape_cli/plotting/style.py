"""Shared look and output of the figures.

Colours, line styles, labels, figure creation, saving by extension.

Figures are created as :class:`matplotlib.figure.Figure` objects, never through pyplot, so nothing
here touches global state or needs a display. Saving sets the font embedding for that one call only
(:func:`matplotlib.rc_context`): PDF and PostScript embed TrueType (Type 42) fonts, as publishers
require, instead of matplotlib's default Type 3; SVG keeps text as ``<text>`` elements.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import matplotlib
from matplotlib.figure import Figure

from landscape_cli import files
from landscape_cli.errors import LandscapeError
from landscape_cli.resources import image_pixels

__all__ = [
    "IMAGE_FORMATS",
    "check_canvas",
    "color",
    "hatch",
    "image_format",
    "line_style",
    "literal",
    "measured_on",
    "new_figure",
    "save_figure",
]

#: Output extensions and the matplotlib format each one selects.
IMAGE_FORMATS = {".png": "png", ".pdf": "pdf", ".svg": "svg", ".ps": "ps", ".eps": "eps"}

#: Font settings every save runs under: TrueType (Type 42) fonts in PDF/PS/EPS, text kept as text
#: in SVG. Applied with rc_context, so the caller's own rcParams are left as they were.
SAVE_RC = {"pdf.fonttype": 42, "ps.fonttype": 42, "svg.fonttype": "none"}

#: Line styles and markers of the i-th run: solid, dashed, dotted, dash-dot, then the same with
#: more markers; together with the colour, runs with almost equal curves stay apart.
_LINESTYLES = ("-", "--", ":", "-.")
_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "<", ">")
_HATCHES = ("", "//", "..", "xx", "\\\\", "++", "--", "oo")

#: One colour per checkpoint (matplotlib's tab10 cycle), the same in every panel.
_PALETTE = (
    "#1f77b4",
    "#ff7f0e",
    "#2ca02c",
    "#d62728",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#7f7f7f",
    "#bcbd22",
    "#17becf",
)


def color(i: int) -> str:
    """The colour of the ``i``-th checkpoint (or curve) in every figure."""
    return _PALETTE[i % len(_PALETTE)]


def line_style(i: int, n: int = 1, points: int | None = None) -> dict:
    """Keyword arguments for ``ax.plot`` of the ``i``-th of ``n`` curves.

    Its colour, line style and marker. Markers sit every few points (``points``: the curve's length)
    or, without it, every 0.15 of the axes' diagonal; each curve's markers start at their own
    offset, so markers of overlapping curves do not hide each other.
    """
    offset = (i % max(n, 1)) / max(n, 1)
    if points is None:
        markevery: object = (0.15 * offset, 0.15)
    else:
        step = max(1, points // 8)
        markevery = (int(offset * step) % step, step)
    return {
        "color": color(i),
        "linestyle": _LINESTYLES[i % len(_LINESTYLES)],
        "marker": _MARKERS[i % len(_MARKERS)],
        "markevery": markevery,
        "markersize": 4.5,
        "markerfacecolor": "white" if (i // len(_LINESTYLES)) % 2 else color(i),
        "markeredgecolor": color(i),
    }


def hatch(i: int) -> str:
    """The hatch pattern of the ``i``-th run's bars (none for the first), for grey-scale print."""
    return _HATCHES[i % len(_HATCHES)]


_LOSS_NAMES = {"ce": "cross-entropy", "mse": "MSE"}
_ENGINES = {"lanczos": "Lanczos", "pyhessian": "PyHessian"}
_CURVATURES = {"hessian": "Hessian", "ggn": "GGN", "fisher": "empirical Fisher"}


def _measured_parts(attrs: dict | None) -> dict[str, str]:
    """The recorded parts of what a result was measured on: curvature, engine, loss, samples."""
    attrs = attrs or {}
    parts: dict[str, str] = {}
    curvature = attrs.get("curvature")
    if curvature:
        parts["curvature"] = _CURVATURES.get(str(curvature), str(curvature))
    engine = attrs.get("engine")
    if engine:
        parts["engine"] = _ENGINES.get(str(engine), str(engine))
    loss = attrs.get("loss")
    if loss:
        parts["loss"] = _LOSS_NAMES.get(str(loss), str(loss))
    samples, split = attrs.get("samples"), attrs.get("split")
    if samples is not None and split:
        parts["samples"] = f"{int(samples)} {split} samples"
    elif samples is not None:
        parts["samples"] = f"{int(samples)} samples"
    elif split:
        parts["samples"] = f"{split} split"
    return {key: literal(text) for key, text in parts.items()}  # file strings, shown as such


def measured_on(attrs: dict | None) -> str:
    """What a result was measured on, from its group's attributes.

    E.g. "cross-entropy, 512 train samples" (only the parts that are recorded; "" when none is).
    """
    return ", ".join(_measured_parts(attrs).values())


def shared_measure(
    attrs_list: list[dict | None], *, without: tuple[str, ...] = ()
) -> tuple[str, list[str]]:
    """Split what the runs were measured on into what they share and per-run remainders.

    Returns ``(what all runs share, per-run remainders)``. The parts of :func:`measured_on` that
    every run shares go in an axis label; the parts that differ go after each run's legend label
    (e.g. " (PyHessian)" beside " (Lanczos)" for two engines on one checkpoint, " (GGN)" beside
    " (Hessian)" for two curvature matrices). The Hessian engine is named only where it is not the
    default Lanczos for every run, the curvature only where it is not the Hessian for every run.
    ``without`` leaves parts out (``("loss",)`` for an accuracy, which no loss function measures).
    """
    parts = [_measured_parts(a) for a in attrs_list]
    keys = [
        k
        for k in ("curvature", "engine", "loss", "samples")
        if k not in without and any(k in p for p in parts)
    ]
    if "engine" in keys and all(p.get("engine", "Lanczos") == "Lanczos" for p in parts):
        keys.remove("engine")
    if "curvature" in keys and all(p.get("curvature", "Hessian") == "Hessian" for p in parts):
        keys.remove("curvature")
    common = [k for k in keys if len({p.get(k, "") for p in parts}) == 1]
    shared = ", ".join(parts[0][k] for k in common if parts[0].get(k)) if parts else ""
    own = []
    for p in parts:
        texts = [p[k] for k in keys if k not in common and p.get(k)]
        own.append(f" ({', '.join(texts)})" if texts else "")
    return shared, own


def literal(text: object) -> str:
    r"""``text`` from a user or a file, made to show as itself in a figure.

    Every label, title, legend entry and tick label that comes from a user or a file goes
    through here: ``$`` becomes ``\$``, so that matplotlib never reads ``$...$`` as mathtext
    (which would typeset it, or fail on an unknown command such as ``$\foo$``); a leading
    ``_`` gets a zero-width space before it, since matplotlib leaves labels starting with ``_``
    out of legends.
    """
    shown = str(text).replace("$", r"\$")
    return "\u200b" + shown if shown.startswith("_") else shown


def check_canvas(fig: Figure, *, dpi: float) -> None:
    """Refuse a figure whose canvas at ``dpi`` is too large to draw, in one line.

    :func:`landscape_cli.resources.image_pixels`: at most 65,535 pixels a side and 400
    megapixels, within the memory available.
    """
    width, height = fig.get_size_inches()
    image_pixels(float(width), float(height), dpi)


def new_figure(width: float, height: float) -> Figure:
    """A fresh figure with constrained layout, detached from pyplot."""
    return Figure(figsize=(width, height), layout="constrained")


def image_format(path: str | os.PathLike[str]) -> str:
    """The matplotlib format for an output path, from its extension (.png, .pdf or .svg)."""
    suffix = Path(path).suffix.lower()
    if suffix not in IMAGE_FORMATS:
        shown = suffix or "no extension"
        raise LandscapeError(
            f"cannot write an image to {os.fspath(path)!r} ({shown}): "
            f"use one of {', '.join(IMAGE_FORMATS)}"
        )
    return IMAGE_FORMATS[suffix]


def save_figure(fig: Figure, path: str | os.PathLike[str], *, dpi: int = 150) -> Path:
    """Save ``fig`` to ``path`` in the format its extension names, atomically.

    The image is drawn in memory, then written by :func:`landscape_cli.files.save`: to a
    temporary file in the same folder, renamed over ``path``, so a crash never leaves a truncated
    image; a write that fails (a full disk) saves it to a fresh ``<stem>.rescued-*`` file and
    says so. Missing parent folders are created. ``dpi`` sets the resolution of PNGs (and of the
    rasterised parts of vector formats). Fonts follow :data:`SAVE_RC` for this call only.
    """
    if dpi <= 0:
        raise LandscapeError(f"`dpi` must be > 0, got {dpi}")
    fmt = image_format(path)
    check_canvas(fig, dpi=dpi)
    target = Path(path)
    buffer = io.BytesIO()
    with matplotlib.rc_context(SAVE_RC):
        fig.savefig(buffer, format=fmt, dpi=dpi)
    files.save(target, buffer.getbuffer(), what="figure", product="the figure")
    return target
