"""Trajectory scans: a training run's snapshots projected on their PCA plane around a checkpoint.

The job-layer half of ``landscape scan CKPT --direction pca --trajectory PATTERN`` (Li, Xu, Taylor,
Studer & Goldstein 2018, "Visualizing the Loss Landscape of Neural Nets", §7, Figs. 9–10):

1. :func:`snapshot_files` expands the patterns (globs or files) into snapshot files, checked
   before anything is loaded;
2. :func:`read_trajectory` reads every snapshot with the checkpoint loader and key matching of
   every other checkpoint (nothing in a file runs code without ``trust``), refuses one whose
   parameters are not the checkpoint's, orders them by the epoch or step stored inside (else
   by natural file-name order) and takes the PCA of their differences from the checkpoint
   (:func:`~landscape_cli.scan.directions.trajectory_pca`), all before anything is shown;
3. :func:`trajectory_plan` turns that into the scan's plan: the plane of the two directions,
   by default over a grid that spans the projections (and the checkpoint) with a margin;
4. :func:`evaluate_snapshots` computes each snapshot's own loss and accuracy exactly on the
   scan's samples (reading it again, so that no more than one snapshot is in memory).

The plane is drawn through the checkpoint: the contour is the loss *in the plane*, and a
snapshot off the plane (its ``residual``, the distance from it, large next to its ``distance``
from the checkpoint) has another loss than the contour under its projection (Li et al.'s caveat).
"""

from __future__ import annotations

import glob
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from landscape_cli import resources
from landscape_cli.checkpoints import sha256
from landscape_cli.errors import LandscapeError
from landscape_cli.scan.directions import parameters_of, split_flat, trajectory_pca
from landscape_cli.scan.grid import ScanPlan, axis

__all__ = [
    "MARGIN",
    "Trajectory",
    "default_axes",
    "evaluate_snapshots",
    "read_trajectory",
    "snapshot_files",
    "trajectory_plan",
]

#: The default grid reaches this share of the projections' span beyond them on every side.
MARGIN = 0.2

_GLOB = re.compile(r"[*?\[]")


def _natural(path: Path) -> list[Any]:
    """Sort key: file name with its digit runs as numbers (epoch2 before epoch10)."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", str(path))]


def snapshot_files(patterns: Sequence[str | os.PathLike[str]]) -> list[Path]:
    """The snapshot files the ``trajectory`` patterns name, each once, in the order first named.

    A pattern with ``*``, ``?`` or ``[`` is a glob (``~`` expanded; its matches in natural
    order); anything else names one file or Hugging Face folder. A pattern that matches nothing
    is an error naming it.
    """
    files: list[Path] = []
    seen: set[Path] = set()
    for pattern in patterns:
        text = os.path.expanduser(str(pattern))
        if _GLOB.search(text):
            matched = sorted((Path(p) for p in glob.glob(text)), key=_natural)
            if not matched:
                raise LandscapeError(f"`trajectory` pattern {str(pattern)!r} matches no file")
        else:
            matched = [Path(text)]
            if not matched[0].exists():
                raise LandscapeError(f"`trajectory` snapshot not found: {pattern}")
        for path in matched:
            key = path.resolve()
            if key not in seen:
                seen.add(key)
                files.append(path)
    if len(files) < 2:
        raise LandscapeError(
            f"a trajectory plane needs at least two snapshots; `trajectory` named {len(files)}"
        )
    return files


@dataclass(frozen=True)
class Trajectory:
    """The snapshots of a run, in training order, and their PCA plane around the checkpoint.

    ``files`` and ``labels`` (the stored epoch, "epoch N", else the file's stem), each
    snapshot's ``loss`` and ``accuracy`` on the scan's samples, and ``pca`` (directions,
    explained variance, projections, residuals).
    """

    files: tuple[Path, ...]
    labels: tuple[str, ...]
    loss: np.ndarray
    accuracy: np.ndarray
    pca: Any  # landscape_cli.scan.directions.TrajectoryPCA

    def datasets(self) -> dict[str, Any]:
        """What ``/scan/<name>/trajectory`` stores."""
        pca = self.pca
        return {
            "x": pca.x,
            "y": pca.y,
            "loss": self.loss,
            "accuracy": self.accuracy,
            "label": list(self.labels),
            "residual": pca.residual,
            "distance": pca.distance,
            "file": [str(f) for f in self.files],
        }


def _order(raw: Any) -> tuple[float | None, float | None]:
    """The (step, epoch) a checkpoint file records: landscape's ``train``, Lightning's keys."""
    if not isinstance(raw, dict):
        return None, None
    info = raw.get("train") if isinstance(raw.get("train"), dict) else raw
    step = info.get("step", info.get("global_step"))
    epoch = info.get("epoch")
    number = (int, float)
    return (
        float(step) if isinstance(step, number) and not isinstance(step, bool) else None,
        float(epoch) if isinstance(epoch, number) and not isinstance(epoch, bool) else None,
    )


def _same_parameters(snapshot: nn.Module, model: nn.Module, path: Path, checkpoint: Path) -> None:
    mine, theirs = parameters_of(model), parameters_of(snapshot)
    if list(mine) != list(theirs) or any(
        mine[k].shape != theirs[k].shape for k in mine if k in theirs
    ):
        missing = [k for k in mine if k not in theirs]
        extra = [k for k in theirs if k not in mine]
        shaped = [k for k in mine if k in theirs and mine[k].shape != theirs[k].shape]
        what = (
            f"missing {missing[0]}"
            if missing
            else f"unexpected {extra[0]}"
            if extra
            else f"{shaped[0]} shaped {tuple(theirs[shaped[0]].shape)} instead of "
            f"{tuple(mine[shaped[0]].shape)}"
            if shaped
            else "its parameters come in another order"
        )
        raise LandscapeError(
            f"{path}: not a snapshot of {checkpoint}'s model ({what}); a trajectory's snapshots "
            "need the checkpoint's parameter names and shapes"
        )


def read_trajectory(
    files: Sequence[Path],
    *,
    checkpoint: Path,
    model: nn.Module,
    load: Callable[[Path], tuple[nn.Module, Any]],
    ignore: str = "biasbn",
) -> Trajectory:
    """Read, check, order and project the snapshots; their losses are left NaN.

    Every snapshot is read (and refused, in one line naming it, if its parameters are not the
    checkpoint's) before anything is computed or shown; :func:`evaluate_snapshots` then adds
    their losses.

    Args:
        files: the snapshot files (:func:`snapshot_files`).
        checkpoint: the checkpoint's path, for messages.
        model: the checkpoint's model, θ₀ (its trainable parameters define the space).
        load: reads one snapshot: ``(its model, the raw file contents or None)``, through the
            checkpoint loader (on the CPU).
        ignore: ``"biasbn"`` leaves 1-D parameters (biases, BatchNorm) out of the directions.
    """
    base = {k: p.detach().to("cpu", torch.float64) for k, p in parameters_of(model).items()}
    n = sum(p.numel() for p in base.values())
    resources.require(
        # the differences (T rows), θ₀ in float64, the two directions, one snapshot's row
        {"the snapshots' differences": (8 * n * (len(files) + 4), "fewer `trajectory` files")},
        "cpu",
    )
    keep = np.concatenate(
        [np.full(p.numel(), p.dim() > 1 or ignore == "none", dtype=bool) for p in base.values()]
    )
    D = np.empty((len(files), n))  # one row θᵢ − θ₀ per snapshot, in the order read
    orders = []
    for k, path in enumerate(files):
        snapshot, raw = load(path)
        _same_parameters(snapshot, model, path, checkpoint)
        params = parameters_of(snapshot)
        start = 0
        for name, p in base.items():
            stop = start + p.numel()
            D[k, start:stop] = (params[name].detach().to("cpu", torch.float64) - p).reshape(-1)
            start = stop
        orders.append(_order(raw))
        del snapshot, params, raw
    order = _training_order(files, orders)
    _permute_rows(D, order)
    labels = tuple(
        f"epoch {int(e)}" if e is not None and float(e).is_integer() else files[i].stem
        for i, e in ((i, orders[i][1]) for i in order)
    )
    pca = trajectory_pca(D, keep)
    nan = np.full(len(files), np.nan)
    return Trajectory(
        files=tuple(files[i] for i in order), labels=labels, loss=nan, accuracy=nan.copy(), pca=pca
    )


def evaluate_snapshots(
    trajectory: Trajectory,
    *,
    load: Callable[[Path], tuple[nn.Module, Any]],
    evaluate: Callable[[nn.Module], tuple[float, float]],
    on_snapshot: Callable[[int, int], None] | None = None,
) -> Trajectory:
    """Each snapshot's own loss and accuracy, exactly (read again, evaluated as it is).

    ``evaluate(model)`` gives a model's ``(loss, accuracy)`` on the scan's samples;
    ``on_snapshot(done, total)`` is told as they are done (first with ``done = 0``).
    """
    total = len(trajectory.files)
    if on_snapshot is not None:
        on_snapshot(0, total)
    losses, accs = [], []
    for k, path in enumerate(trajectory.files):
        snapshot, _ = load(path)
        loss, acc = evaluate(snapshot)
        losses.append(loss)
        accs.append(acc)
        del snapshot
        if on_snapshot is not None:
            on_snapshot(k + 1, total)
    return replace(
        trajectory,
        loss=np.array(losses, dtype=np.float64),
        accuracy=np.array(accs, dtype=np.float64),
    )


def _permute_rows(D: np.ndarray, order: list[int]) -> None:
    """``D[:] = D[order]`` in place, one row of extra memory (by cycles of the permutation)."""
    done = [False] * len(order)
    for start in range(len(order)):
        if done[start] or order[start] == start:
            done[start] = True
            continue
        first = D[start].copy()
        i = start
        while True:
            done[i] = True
            j = order[i]
            if j == start:
                D[i] = first
                break
            D[i] = D[j]
            i = j


def _training_order(files: Sequence[Path], orders: list[tuple[float | None, float | None]]):
    """Indices in training order.

    By the stored step when every file has one, else by the stored epoch when every file has
    one, else by natural file-name order (ties by name).
    """
    names = sorted(range(len(files)), key=lambda i: _natural(files[i]))
    rank = {i: r for r, i in enumerate(names)}
    for which in (0, 1):
        values = [o[which] for o in orders]
        if all(v is not None for v in values):
            return sorted(range(len(files)), key=lambda i: (values[i], rank[i]))
    return names


def default_axes(
    trajectory: Trajectory,
    points: int,
    ypoints: int | None,
    xrange: tuple[float, float] | None,
    yrange: tuple[float, float] | None,
) -> tuple[np.ndarray, np.ndarray]:
    """The grid's x and y axes.

    ``xrange``/``yrange`` where given, else the span of the projections and the checkpoint (0)
    widened by :data:`MARGIN` of that span on each side.
    """

    def span(values: np.ndarray) -> tuple[float, float]:
        lo, hi = min(float(values.min()), 0.0), max(float(values.max()), 0.0)
        width = hi - lo or 1.0
        return lo - MARGIN * width, hi + MARGIN * width

    pca = trajectory.pca
    lo, hi = xrange if xrange is not None else span(pca.x)
    ylo, yhi = yrange if yrange is not None else span(pca.y)
    return axis(lo, hi, points), axis(ylo, yhi, ypoints if ypoints is not None else points)


def trajectory_plan(
    model: nn.Module,
    trajectory: Trajectory,
    *,
    name: str,
    x: np.ndarray,
    y: np.ndarray,
    ignore: str,
    **attrs: Any,
):
    """The scan's plan: the PCA plane through the checkpoint, with the trajectory to store."""
    names = tuple(parameters_of(model))
    dirs = tuple(
        split_flat(torch.from_numpy(trajectory.pca.directions[j]), model, names) for j in range(2)
    )
    meta = {
        "dim": 2,
        "kind": "pca",
        "norm": "none",
        "ignore": ignore,
        "explained_variance": np.asarray(trajectory.pca.explained_variance, dtype=np.float64),
        "trajectory": [str(f) for f in trajectory.files],
        "trajectory_sha256": ",".join(sha256(f) for f in trajectory.files),
        "xmin": float(x[0]),
        "xmax": float(x[-1]),
        "nx": len(x),
        "ymin": float(y[0]),
        "ymax": float(y[-1]),
        "ny": len(y),
        **attrs,
    }
    return ScanPlan(name, x, y, dirs, meta, trajectory=trajectory.datasets())
