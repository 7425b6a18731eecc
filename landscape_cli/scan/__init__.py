"""Loss-landscape scans: 1-D/2-D filter-normalised random directions, Hessian eigenvector
directions, and interpolations between checkpoints, stored in ``/scan/<name>`` and resumable.

Usage from Python::

    plan = random_plan(model, name="1d-random", x=axis(-1, 1, 51), seed=0)
    result = execute(model, batches, plan, out="ckpt.h5", root={...})
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from landscape_cli import distributed
from landscape_cli.errors import LandscapeError
from landscape_cli.evaluation import LOSSES, Batch
from landscape_cli.results import (
    read_scan,
    scan_attrs,
    set_scan_points,
    update_file,
    write_scan,
)
from landscape_cli.scan.directions import (
    IGNORES,
    NORMS,
    difference,
    orthogonalise,
    random_direction,
    split_flat,
)
from landscape_cli.scan.grid import (
    IDENTITY,
    PointEvaluator,
    ScanPlan,
    axis,
    journal_path,
    read_journal,
    run_scan,
    scan_lock,
)

__all__ = [
    "IGNORES",
    "NORMS",
    "ScanPlan",
    "axis",
    "eigenvector_plan",
    "execute",
    "interpolation_plan",
    "random_plan",
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
    **attrs: Any,
) -> ScanPlan:
    """Gaussian directions (one per axis) from ``seed``, normalised per ``norm``/``ignore``."""
    gen = torch.Generator().manual_seed(seed)
    dirs = [random_direction(model, generator=gen, norm=norm, ignore=ignore)]
    if y is not None:
        dy = random_direction(model, generator=gen, norm=norm, ignore=ignore)
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
    **attrs: Any,
) -> ScanPlan:
    """θ(a, b) = θ₀ + a(θ₁ − θ₀) (+ b(θ₂ − θ₀)), over parameters and floating-point buffers."""
    dim = 1 if y is None else 2
    if len(targets) != dim:
        raise LandscapeError(f"a {dim}-D interpolation needs {dim} --to checkpoint(s)")
    dirs = tuple(difference(t, model) for t in targets)
    meta = {
        "dim": dim,
        "kind": "interpolation",
        "norm": "none",
        "ignore": "none",
        **_coords_attrs(x, y),
        **attrs,
    }
    return ScanPlan(name, x, y, dirs, meta)


def _mismatch(stored: dict[str, Any], wanted: dict[str, Any]) -> list[str]:
    out = []
    for key in IDENTITY:
        a, b = stored.get(key), wanted.get(key)
        if a is None and b is None:
            continue
        if isinstance(a, float) or isinstance(b, float):
            same = a is not None and b is not None and float(a) == float(b)
        else:
            same = a == b
        if not same:
            out.append(f"{key} {a!r} vs {b!r}")
    return out


def execute(
    model: nn.Module,
    batches: Sequence[Batch],
    plan: ScanPlan,
    *,
    out: str | os.PathLike[str],
    root: dict[str, Any],
    loss: str = "ce",
    bn_mode: str = "eval",
    bn: str | None = None,
    overwrite: bool = False,
    fold_every: float = 30.0,
    on_start: Callable[[int, int], None] | None = None,
    on_point: Callable[[int, int, float, float], None] | None = None,
) -> dict[str, Any]:
    """Run (or resume) ``plan`` into ``/scan/<plan.name>`` of ``out``; returns the stored scan.

    An existing scan of the same name made with other options is an error unless ``overwrite``;
    one made with the same options is resumed with its stored directions, computing only the
    points still missing. ``on_start(done, total)`` reports the points already computed.
    ``bn`` ("recompute", "interpolate" or None) handles BatchNorm statistics at each point, see
    :class:`~landscape_cli.scan.grid.PointEvaluator`.
    """
    out_path = Path(out)
    journal = journal_path(out_path, plan.name)
    attrs = {**plan.attrs, "loss": loss, "bn_mode": bn_mode}
    if bn is not None:
        attrs["bn"] = bn

    def prepare() -> None:
        """On rank 0 only: check or create the scan group and fold any leftover journal."""
        existing = scan_attrs(out_path, plan.name)
        if existing is not None and not overwrite:
            diff = _mismatch(existing, attrs)
            if diff:
                raise LandscapeError(
                    f"scan {plan.name!r} in {out_path} was made with other options "
                    f"({'; '.join(diff[:3])}); pass --name NEW to keep both or --overwrite"
                )
        else:
            journal.unlink(missing_ok=True)
            grid = np.full(plan.shape, np.nan)
            write_scan(
                out_path,
                root,
                plan.name,
                attrs=attrs,
                x=plan.x,
                y=plan.y,
                loss=grid,
                accuracy=grid,
                directions={
                    a: {k: v.detach().cpu().numpy() for k, v in d.items()}
                    for a, d in zip(("x", "y"), plan.directions, strict=False)
                },
                drop_foreign=overwrite,
            )
        leftover = read_journal(journal)
        if leftover:
            set_scan_points(out_path, root, plan.name, leftover)
        journal.unlink(missing_ok=True)

    lock = scan_lock(out_path, plan.name) if distributed.is_main() else contextlib.nullcontext()
    with lock:
        return _execute_locked(
            model, batches, plan, out_path, root, loss, bn_mode, bn, prepare, on_start,
            on_point, fold_every, journal,
        )  # fmt: skip


def _execute_locked(
    model, batches, plan, out_path, root, loss, bn_mode, bn, prepare, on_start, on_point,
    fold_every, journal,
) -> dict[str, Any]:  # fmt: skip
    distributed.on_main(prepare)
    # Every rank scans with the stored directions (a resumed scan keeps the ones it started
    # with) and from the stored grid, so all ranks agree on the points still missing.
    stored = read_scan(out_path, plan.name, directions=True)
    axes = ["x", "y"][: plan.attrs["dim"]]
    dirs = tuple({k: torch.from_numpy(v) for k, v in stored["directions"][a].items()} for a in axes)
    plan = ScanPlan(plan.name, plan.x, plan.y, dirs, plan.attrs)
    current = stored["loss"]
    missing = int(np.isnan(current).sum())
    if on_start is not None and distributed.is_main():
        on_start(current.size - missing, current.size)
    if missing == 0 and distributed.is_main():  # nothing left: still record this run's root
        update_file(out_path, root, lambda f: None)  # attributes (label, argv)
    # Under torchrun: deal out whole points when there are enough of them (no communication
    # while a point is computed), else split each point's samples over the ranks.
    by_points = distributed.active() and missing >= distributed.world()
    evaluator = PointEvaluator(
        model,
        batches,
        plan.directions,
        LOSSES[loss],
        bn_mode,
        sharded=distributed.active() and not by_points,
        bn=bn,
    )
    try:
        run_scan(
            evaluator,
            plan,
            current,
            store=lambda pts: set_scan_points(out_path, root, plan.name, pts),
            journal=journal,
            fold_every=fold_every,
            on_point=on_point,
            distribute_points=by_points,
        )
    finally:
        evaluator.restore()
    distributed.barrier()  # rank 0 has folded every point before anyone reads the result
    return read_scan(out_path, plan.name)


def second_difference(scan: dict[str, Any]) -> float:
    """Curvature estimate at the origin of a 1-D scan: (L(h) − 2L(0) + L(−h)) / h²."""
    x, loss = scan["x"], scan["loss"]
    i0 = int(np.argmin(np.abs(x)))
    if x[i0] != 0 or i0 == 0 or i0 == len(x) - 1:
        raise LandscapeError("the scan has no interior point at 0")
    h = x[i0 + 1] - x[i0]
    return float((loss[i0 + 1] - 2 * loss[i0] + loss[i0 - 1]) / h**2)
