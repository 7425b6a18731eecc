"""Checks and labels shared by the scan figures (Fig. 6, contour, surface, heatmap).

A scan is the dict :func:`landscape_cli.results.read_scan` returns: ``name``, ``dim`` (1 or 2),
``kind`` ("random", "interpolation" or "eigenvector"), ``x`` (nx,), ``y`` (ny,) or None, ``loss``
(nx,) or (ny, nx) with NaN where not computed yet, ``accuracy`` (same shape) and ``attrs``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from landscape_cli.errors import LandscapeError

_AXIS = {
    "random": ("α (random direction 1)", "β (random direction 2)"),
    "eigenvector": ("α (top eigenvector 1)", "β (top eigenvector 2)"),
    "interpolation": ("α in (1−α−β)·θa + α·θb + β·θc", "β"),
}
_AXIS_1D = {
    "random": "ζ (step along a random direction)",
    "eigenvector": "ζ (step along the top eigenvector)",
    "interpolation": "α in (1−α)·θa + α·θb",
}


def scan_name(scan: dict[str, Any]) -> str:
    return str(scan.get("name") or "scan")


def checked(scan: dict[str, Any], dim: int, key: str = "loss") -> dict[str, Any]:
    """Validate ``scan`` as a ``dim``-D scan; return x, y and ``key`` as float64 arrays.

    Raises LandscapeError for a scan of the other dimension, shapes that do not match, or a scan
    with no computed (finite) value of ``key``.
    """
    name = scan_name(scan)
    got = int(scan.get("dim") or np.ndim(scan.get("loss")))
    if got != dim:
        other = "fig6" if got == 1 else "contour, surface or heatmap"
        raise LandscapeError(
            f"scan {name!r} is {got}-D but this figure draws {dim}-D scans (use --figure {other})"
        )
    x = np.asarray(scan["x"], dtype=np.float64)
    y = None if scan.get("y") is None else np.asarray(scan["y"], dtype=np.float64)
    if scan.get(key) is None:
        raise LandscapeError(f"scan {name!r} has no {key} values")
    values = np.asarray(scan[key], dtype=np.float64)
    shape = (len(x),) if dim == 1 else (0 if y is None else len(y), len(x))
    if values.shape != shape:
        raise LandscapeError(
            f"scan {name!r}: {key} has shape {values.shape} but the grid needs {shape}"
        )
    if dim == 2 and min(shape) < 2:
        raise LandscapeError(f"scan {name!r}: a 2-D figure needs at least 2 points each way")
    if not np.isfinite(values).any():
        raise LandscapeError(
            f"scan {name!r} has no computed points yet"
            if key == "loss"
            else f"scan {name!r} has no computed {key} values yet"
        )
    return {"x": x, "y": y, key: values}


def axis_labels_2d(scan: dict[str, Any]) -> tuple[str, str]:
    return _AXIS.get(str(scan.get("kind")), ("α (direction 1)", "β (direction 2)"))


def axis_label_1d(scans: list[dict[str, Any]]) -> str:
    kinds = {str(s.get("kind")) for s in scans}
    if len(kinds) == 1:
        return _AXIS_1D.get(kinds.pop(), "step along the direction")
    return "step along the direction"


def positive_or_error(values: np.ndarray, name: str) -> None:
    finite = values[np.isfinite(values)]
    if finite.size and finite.min() <= 0:
        raise LandscapeError(
            f"scan {name!r} has losses <= 0 (minimum {finite.min():.4g}); "
            "a log scale needs positive losses: drop --log"
        )
