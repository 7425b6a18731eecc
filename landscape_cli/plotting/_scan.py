"""Checks and labels shared by the scan figures (Fig. 6, contour, surface, heatmap).

A scan is the :class:`~landscape_cli.results.ScanResult` :func:`landscape_cli.results.read_scan`
returns, read by its fields: ``name``, ``dim`` (1 or 2), ``kind`` ("random", "interpolation",
"eigenvector" or "pca"), ``x`` (nx,), ``y`` (ny,) or None, ``loss`` (nx,) or (ny, nx) with NaN
where not computed yet, ``accuracy`` (same shape) and ``attrs``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from landscape_cli.errors import LandscapeError
from landscape_cli.plotting.style import shared_measure

if TYPE_CHECKING:
    from landscape_cli.results import ScanResult

_NORMS = {
    "filter": "filter-normalised random direction",
    "layer": "layer-normalised random direction",
    "none": "random direction (not normalised)",
}


def _random_direction(scan: ScanResult) -> str:
    norm = scan.attrs.get("norm")
    return _NORMS.get(str(norm), "random direction") if norm else "random direction"


def _direction(scan: ScanResult) -> str:
    """What the scan stepped along, in words, from its kind and normalisation attributes."""
    kind = str(scan.kind)
    if kind == "random":
        return _random_direction(scan)
    if kind == "eigenvector":
        return "top Hessian eigenvector"
    return "direction"


def scan_name(scan: ScanResult) -> str:
    return str(scan.name or "scan")


def checked(scan: ScanResult, dim: int, key: str = "loss") -> dict[str, Any]:
    """Validate ``scan`` as a ``dim``-D scan; return x, y and ``key`` as float64 arrays.

    Raises LandscapeError for a scan of the other dimension, shapes that do not match, or a scan
    with no computed (finite) value of ``key``.
    """
    name = scan_name(scan)
    got = int(scan.dim or np.ndim(scan.loss))
    if got != dim:
        other = "fig6" if got == 1 else "contour, surface or heatmap"
        raise LandscapeError(
            f"scan {name!r} is {got}-D but this figure draws {dim}-D scans (draw it as {other})"
        )
    x = np.asarray(scan.x, dtype=np.float64)
    y = None if scan.y is None else np.asarray(scan.y, dtype=np.float64)
    if getattr(scan, key) is None:
        raise LandscapeError(f"scan {name!r} has no {key} values")
    values = np.asarray(getattr(scan, key), dtype=np.float64)
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


def axis_labels_2d(scan: ScanResult) -> tuple[str, str]:
    """The x and y labels of a 2-D scan: what each axis steps along (from its attributes)."""
    kind = str(scan.kind)
    if kind == "interpolation":
        return "α in (1−α−β)·θa + α·θb + β·θc", "β"
    if kind == "eigenvector":
        return "α (top Hessian eigenvector 1)", "β (top Hessian eigenvector 2)"
    if kind == "pca":  # unit directions: coordinates in parameter-space units
        shares = scan.attrs.get("explained_variance")
        shares = [None, None] if shares is None or len(shares) < 2 else list(shares)
        return tuple(
            f"PCA direction {j + 1} of the trajectory"
            + (f" ({float(v):.1%} of the variance)" if v is not None else "")
            for j, v in enumerate(shares)
        )
    what = _direction(scan)
    return f"α ({what} 1)", f"β ({what} 2)"


def axis_label_1d(scans: list[ScanResult]) -> str:
    """The x label of overlaid 1-D scans: what they step along, when they all agree."""
    kinds = {str(s.kind) for s in scans}
    if kinds == {"interpolation"}:
        return "α in (1−α)·θa + α·θb"
    whats = {_direction(s) for s in scans}
    if len(whats) == 1:
        return f"ζ (step along a {whats.pop()})"
    return "ζ (step along the direction)"


def value_label(what: str, scans: list[ScanResult], log: bool = False) -> str:
    """The colour bar's or axis's label for ``what``.

    ``what`` (loss, accuracy), "log scale" when so, and what the scans were measured on when
    they all agree (e.g. "loss (log scale; cross-entropy, 512 train samples)"). An accuracy
    names the samples only: it does not depend on the loss function.
    """
    without = ("loss",) if what.startswith("accuracy") else ()
    common, _ = shared_measure([dict(s.attrs) for s in scans], without=without)
    parts = [p for p in ("log scale" if log else "", common) if p]
    return f"{what} ({'; '.join(parts)})" if parts else what


def positive_or_error(values: np.ndarray, name: str) -> None:
    finite = values[np.isfinite(values)]
    if finite.size and finite.min() <= 0:
        raise LandscapeError(
            f"scan {name!r} has losses <= 0 (minimum {finite.min():.4g}); "
            "a log scale needs positive losses: drop `log`"
        )
