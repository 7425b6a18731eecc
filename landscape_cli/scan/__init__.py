"""Loss-landscape scans.

1-D/2-D filter-normalised random directions, Hessian eigenvector directions, and interpolations
between checkpoints.

This package plans scans and computes their points (:func:`~landscape_cli.scan.grid.run_scan`
hands them to a ``store`` callback); it writes no files. Running a plan into ``/scan/<name>`` of a
results file, resumably, is :func:`landscape_cli.jobs.scan_journal.execute`::

    plan = random_plan(model, name="1d-random", x=axis(-1, 1, 51), seed=0)
    result = scan_journal.execute(model, batches, plan, out="ckpt.h5", root={...})
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from landscape_cli.errors import LandscapeError
from landscape_cli.params import ParamSelection
from landscape_cli.scan.directions import (
    IGNORES,
    NORMS,
    difference,
    orthogonalise,
    random_direction,
    split_flat,
)
from landscape_cli.scan.grid import ScanPlan, axis

__all__ = [
    "IGNORES",
    "NORMS",
    "ScanPlan",
    "axis",
    "eigenvector_plan",
    "interpolation_plan",
    "random_plan",
    "second_difference",
]


def _coords_attrs(x: np.ndarray, y: np.ndarray | None) -> dict[str, Any]:
    attrs: dict[str, Any] = {"xmin": float(x[0]), "xmax": float(x[-1]), "nx": len(x)}
    if y is not None:
        attrs.update({"ymin": float(y[0]), "ymax": float(y[-1]), "ny": len(y)})
    return attrs


def random_plan(
    model: nn.Module,
    *,
    name: str,
    x: np.ndarray,
    y: np.ndarray | None = None,
    seed: int = 0,
    norm: str = "filter",
    ignore: str = "biasbn",
    orthogonalize: bool = False,
    selection: ParamSelection | None = None,
    **attrs: Any,
) -> ScanPlan:
    """Gaussian directions (one per axis) from ``seed``, normalised per ``norm``/``ignore``.

    They move the parameters of ``selection`` (:mod:`landscape_cli.params`; default: the
    trainable ones).
    """
    gen = torch.Generator().manual_seed(seed)
    kw = {"norm": norm, "ignore": ignore, "selection": selection}
    dirs = [random_direction(model, generator=gen, **kw)]
    if y is not None:
        dy = random_direction(model, generator=gen, **kw)
        dirs.append(orthogonalise(dirs[0], dy) if orthogonalize else dy)
    meta = {
        "dim": 1 if y is None else 2,
        "kind": "random",
        "norm": norm,
        "ignore": ignore,
        "seed": seed,
        "orthogonalize": bool(orthogonalize and y is not None),
        **_coords_attrs(x, y),
        **attrs,
    }
    return ScanPlan(name, x, y, tuple(dirs), meta)


def eigenvector_plan(
    model: nn.Module,
    eigenvectors: np.ndarray,
    eigenvalues: np.ndarray,
    param_names: tuple[str, ...],
    *,
    name: str,
    x: np.ndarray,
    y: np.ndarray | None = None,
    **attrs: Any,
) -> ScanPlan:
    """Unit Hessian eigenvectors (top one for x, second for y) as directions."""
    dim = 1 if y is None else 2
    if len(eigenvectors) < dim:
        raise LandscapeError(f"a {dim}-D eigenvector scan needs {dim} eigenvectors")
    dirs = tuple(split_flat(eigenvectors[i], model, param_names) for i in range(dim))
    meta = {
        "dim": dim,
        "kind": "eigenvector",
        "norm": "none",
        "ignore": "none",
        "eigenvalues": np.asarray(eigenvalues[:dim], dtype=np.float64),
        **_coords_attrs(x, y),
        **attrs,
    }
    return ScanPlan(name, x, y, dirs, meta)


def interpolation_plan(
    model: nn.Module,
    targets: Sequence[nn.Module],
    *,
    name: str,
    x: np.ndarray,
    y: np.ndarray | None = None,
    names: tuple[str, ...] | None = None,
    **attrs: Any,
) -> ScanPlan:
    """θ(a, b) = θ₀ + a(θ₁ − θ₀) (+ b(θ₂ − θ₀)), over parameters and floating-point buffers.

    With ``names``, only those parameters move (and every floating-point buffer).
    """
    dim = 1 if y is None else 2
    if len(targets) != dim:
        raise LandscapeError(f"a {dim}-D interpolation needs {dim} `targets`, got {len(targets)}")
    dirs = tuple(difference(t, model, names) for t in targets)
    meta = {
        "dim": dim,
        "kind": "interpolation",
        "norm": "none",
        "ignore": "none",
        **_coords_attrs(x, y),
        **attrs,
    }
    return ScanPlan(name, x, y, dirs, meta)


def second_difference(scan: dict[str, Any]) -> float:
    """Curvature estimate at the origin of a 1-D scan: (L(h) − 2L(0) + L(−h)) / h²."""
    x, loss = scan["x"], scan["loss"]
    i0 = int(np.argmin(np.abs(x)))
    if x[i0] != 0 or i0 == 0 or i0 == len(x) - 1:
        raise LandscapeError("the scan has no interior point at 0")
    h = x[i0 + 1] - x[i0]
    return float((loss[i0 + 1] - 2 * loss[i0] + loss[i0 - 1]) / h**2)
