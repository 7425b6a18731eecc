"""Shared look and output of the figures: colours, figure creation, saving by extension.

Figures are created as :class:`matplotlib.figure.Figure` objects, never through pyplot, so nothing
here touches global state or needs a display.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path

from matplotlib.figure import Figure

from landscape_cli.errors import LandscapeError

__all__ = ["IMAGE_FORMATS", "color", "image_format", "new_figure", "save_figure"]

#: Output extensions and the matplotlib format each one selects.
IMAGE_FORMATS = {".png": "png", ".pdf": "pdf", ".svg": "svg"}

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

    The image is written to a temporary file in the same folder and renamed over ``path``, so a
    crash never leaves a truncated image. Missing parent folders are created.
    """
    fmt = image_format(path)
    target = Path(path)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise LandscapeError(f"cannot create folder {target.parent}: {exc}") from exc
    tmp = target.with_name(f".{target.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        with open(tmp, "wb") as fh:
            fig.savefig(fh, format=fmt, dpi=dpi)
        os.replace(tmp, target)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise LandscapeError(f"cannot write {target}: {exc}") from exc
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    return target
