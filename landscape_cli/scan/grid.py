r"""Evaluating the loss on a grid of points :math:`\theta_0 + a\,d_x + b\,d_y`.

Each point's weights are written in place from the *base* weights (``copy`` then ``add``), never
by accumulating steps, so no drift builds up and the point at the origin is the checkpoint itself,
bit for bit. Evaluation is a forward pass over fixed batches already on the device; the per-point
overhead is one pass of ``torch._foreach_copy_``/``_foreach_add_`` over the parameters.

This module computes points and hands them to a ``store`` callback; it writes no files. The
results file, its crash-safe journal and resuming live behind that callback in the job layer
(:mod:`landscape_cli.jobs.scan_journal`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from landscape_cli import distributed
from landscape_cli.batches import Batch, math_attention
from landscape_cli.errors import LandscapeError, check_choice
from landscape_cli.losses import LossFn, loss_and_accuracy
from landscape_cli.scan.directions import Direction

#: Attributes that must match for a re-run to resume an existing scan of the same name.
IDENTITY = (
    "dim",
    "kind",
    "norm",
    "ignore",
    "seed",
    "dataset",
    "samples",
    "samples_sha256",
    "split",
    "loss",
    "bn_mode",
    "bn",
    "orthogonalize",
    "checkpoint_sha256",
    "targets_sha256",
    "params",
    "include_frozen",
    "trajectory_sha256",
    "xmin",
    "xmax",
    "nx",
    "ymin",
    "ymax",
    "ny",
    "float32_precision",
)


#: One computed point: ``(i, j, loss, accuracy)``, column i of x and row j of y (0 in 1-D).
Point = tuple[int, int, float, float]


def axis(lo: float, hi: float, n: int) -> np.ndarray:
    """``n`` evenly spaced coordinates from lo to hi, with 0 exactly 0 when it is on the grid.

    One point is the checkpoint itself (0) when the range holds it, else the range's middle.
    """
    if n < 1:
        raise LandscapeError(f"`points` must be >= 1, got {n}")
    if not (math.isfinite(lo) and math.isfinite(hi)) or (n > 1 and not lo < hi):
        raise LandscapeError(f"a range needs two finite numbers, low < high; got {lo} {hi}")
    if n == 1:
        return np.array([0.0 if lo <= 0 <= hi else (lo + hi) / 2])
    x = np.linspace(lo, hi, n)
    x[np.abs(x) < 1e-12 * max(abs(lo), abs(hi), 1.0)] = 0.0
    return x


@dataclass(frozen=True)
class ScanPlan:
    """What to scan: coordinates, directions and every option that identifies the scan."""

    name: str
    x: np.ndarray
    y: np.ndarray | None
    directions: tuple[Direction, ...]  # one per axis
    attrs: dict[str, Any] = field(default_factory=dict)
    # PCA scans: the snapshots' projections, losses and labels (``/scan/<name>/trajectory``)
    trajectory: dict[str, Any] | None = None

    @property
    def shape(self) -> tuple[int, ...]:
        """The grid's shape: ``(len(x),)`` or ``(len(y), len(x))``."""
        return (len(self.x),) if self.y is None else (len(self.y), len(self.x))


BN_CHOICES = ("recompute", "interpolate")


def has_batchnorm(model: nn.Module) -> bool:
    """Whether ``model`` has a BatchNorm layer."""
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


class PointEvaluator:
    """Sets the model to ``base + a·dx (+ b·dy)`` in place and evaluates loss and accuracy.

    ``bn`` says what BatchNorm's running statistics are at each point (they only move when the
    directions carry them, as interpolations do): None leaves them as the directions set them;
    ``"interpolate"`` clamps the interpolated (or extrapolated) variances at zero, the only
    invalid values a linear combination of valid statistics can take; ``"recompute"`` replaces
    them by the statistics of the point's own weights on the scan's samples (each BatchNorm
    layer's running mean and variance averaged over the batches, in train mode without
    gradients, as mode-connectivity work does: Garipov et al. 2018, Izmailov et al. 2018) before
    evaluating. The checkpoint's statistics are put back by :meth:`restore`.

    Args:
        model: the network, whose parameters are moved in place.
        batches: the scan's samples, in batches.
        directions: one or two directions (parameter name → tensor).
        loss_fn: ``(output, target) -> mean loss``.
        bn_mode: ``"eval"`` or ``"train"`` BatchNorm while evaluating.
        sharded: under torchrun: each point's samples are split over the ranks.
        bn: None, ``"interpolate"`` or ``"recompute"`` (above).
    """

    def __init__(
        self,
        model: nn.Module,
        batches: Sequence[Batch],
        directions: Sequence[Direction],
        loss_fn: LossFn,
        bn_mode: str = "eval",
        *,
        sharded: bool = False,
        bn: str | None = None,
    ) -> None:
        if bn is not None:
            check_choice("bn", bn, BN_CHOICES)
        self.bn = bn
        self.norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        self.tracked = [
            (m, m.num_batches_tracked.clone())
            for m in self.norms
            if getattr(m, "num_batches_tracked", None) is not None
        ]
        self.sharded = sharded  # under torchrun: each point's samples split over the ranks
        self.model, self.batches, self.loss_fn, self.bn_mode = (
            model,
            list(batches),
            loss_fn,
            bn_mode,
        )
        state = model.state_dict(keep_vars=True)
        names = list(directions[0])
        missing = [k for k in names if k not in state]
        if missing:
            raise LandscapeError(f"directions name unknown tensors: {', '.join(missing[:4])}")
        self.targets: list[Tensor] = [state[k].data for k in names]
        ptrs = [t.data_ptr() for t in self.targets if t.numel()]
        if len(set(ptrs)) != len(ptrs):  # a tied tensor named twice would move twice
            raise LandscapeError("directions name one tensor twice (tied weights)")
        self.base = [t.detach().clone() for t in self.targets]
        self.dirs = [
            [
                d[k].to(device=t.device, dtype=t.dtype)
                for k, t in zip(names, self.targets, strict=True)
            ]
            for d in directions
        ]

    @torch.no_grad()
    def __call__(self, coords: Sequence[float]) -> tuple[float, float]:
        """Loss and accuracy at the point ``coords`` along the directions."""
        torch._foreach_copy_(self.targets, self.base)
        for c, d in zip(coords, self.dirs, strict=True):
            if c != 0.0:
                torch._foreach_add_(self.targets, d, alpha=float(c))
        if self.bn == "interpolate":
            for m in self.norms:
                if m.running_var is not None:
                    m.running_var.clamp_(min=0)
        elif self.bn == "recompute":
            self._recompute_statistics()
        return loss_and_accuracy(
            self.model, self.batches, self.loss_fn, self.bn_mode, sharded=self.sharded
        )

    @torch.no_grad()
    def _recompute_statistics(self) -> None:
        momenta = [m.momentum for m in self.norms]
        modes = {m: m.training for m in self.model.modules()}
        try:
            self.model.eval()
            for m in self.norms:
                if m.running_mean is not None:
                    m.reset_running_stats()
                    m.momentum = None  # cumulative average over the batches
                    m.train()
            with math_attention():
                for b in self.batches:
                    self.model(b.inputs)
        finally:
            for m, momentum in zip(self.norms, momenta, strict=True):
                m.momentum = momentum
            for m, mode in modes.items():
                m.training = mode

    @torch.no_grad()
    def restore(self) -> None:
        """Put the original parameters and BatchNorm batch counts back."""
        torch._foreach_copy_(self.targets, self.base)
        for m, count in self.tracked:
            m.num_batches_tracked.copy_(count)


def run_scan(
    evaluate: Callable[[Sequence[float]], tuple[float, float]],
    plan: ScanPlan,
    loss: np.ndarray,
    *,
    store: Callable[[list[Point]], None] | None = None,
    on_point: Callable[[int, int, float, float], None] | None = None,
    distribute_points: bool = False,
) -> np.ndarray:
    """Compute every point of ``plan`` whose ``loss`` entry is NaN, in row-major order.

    ``store(points)`` receives each round's computed points ``(i, j, loss, accuracy)`` (one
    point, or one per rank with ``distribute_points``) as soon as they are computed, before
    ``on_point`` is told of them; it is where they are kept (None keeps nothing). Returns the loss
    grid with the new points filled in.

    Under torchrun, ``store`` and ``on_point`` are called on rank 0 only. With
    ``distribute_points`` the points are dealt out in rounds of one point per rank and gathered
    after each round; otherwise every rank takes part in every point (``evaluate`` shards the
    samples).
    """
    loss = loss.copy()
    nx = len(plan.x)
    # Flat row-major indices of the missing points (j-major, like the grid): 8 bytes per point,
    # not a Python tuple each.
    todo_flat = np.flatnonzero(np.isnan(loss.ravel()))

    def where(t: int) -> tuple[int, int]:
        idx = int(todo_flat[t])
        return idx % nx, idx // nx

    main = distributed.is_main()
    step = distributed.world() if distribute_points else 1

    def compute(t: int) -> Point:
        i, j = where(t)
        coords = (plan.x[i],) if plan.y is None else (plan.x[i], plan.y[j])
        lv, av = evaluate(coords)
        return i, j, lv, av

    for start in range(0, len(todo_flat), step):
        if distribute_points:
            mine = start + distributed.rank()
            rows = distributed.gather_rows([compute(mine)] if mine < len(todo_flat) else [])
        else:
            rows = [compute(start)]
        if main and store is not None:
            store(rows)
        for i, j, lv, av in rows:
            if plan.y is None:
                loss[i] = lv
            else:
                loss[j, i] = lv
            if on_point is not None and main:
                on_point(i, j, lv, av)
    return loss
