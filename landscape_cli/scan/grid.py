r"""Evaluating the loss on a grid of points :math:`\theta_0 + a\,d_x + b\,d_y`, resumably.

Each point's weights are written in place from the *base* weights (``copy`` then ``add``), never
by accumulating steps, so no drift builds up and the point at the origin is the checkpoint itself,
bit for bit. Evaluation is a forward pass over fixed batches already on the device; the per-point
overhead is one pass of ``torch._foreach_copy_``/``_foreach_add_`` over the parameters.

**Crash safety.** The results file is HDF5, which is not crash-consistent, so points are not
written into it one by one. Each computed point is appended as one line to a journal beside the
file (``<file>.<scan name>.journal``, flushed after every point: a SIGKILL keeps every line
already written), and the journal is folded into the HDF5 file by an atomic rewrite
(:func:`landscape_cli.results.set_scan_points`) every ``fold_every`` seconds, on Ctrl-C, and at the
end. A torn last line (killed mid-write) is ignored. Folding twice is harmless, so a kill between
the rewrite and the journal's truncation loses nothing either. Re-running the same scan folds any
journal left behind and computes only the points still missing.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from landscape_cli.errors import LandscapeError
from landscape_cli.evaluation import Batch, LossFn, loss_and_accuracy
from landscape_cli.scan.directions import Direction

#: Attributes that must match for a re-run to resume an existing scan of the same name.
IDENTITY = (
    "dim",
    "kind",
    "norm",
    "ignore",
    "seed",
    "samples",
    "samples_sha256",
    "split",
    "loss",
    "bn_mode",
    "bn",
    "orthogonalize",
    "checkpoint_sha256",
    "targets_sha256",
    "xmin",
    "xmax",
    "nx",
    "ymin",
    "ymax",
    "ny",
)


def axis(lo: float, hi: float, n: int) -> np.ndarray:
    """``n`` evenly spaced coordinates from lo to hi, with 0 exactly 0 when it is on the grid.

    One point is the checkpoint itself (0) when the range holds it, else the range's middle.
    """
    if n < 1:
        raise LandscapeError(f"--points must be >= 1, got {n}")
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

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self.x),) if self.y is None else (len(self.y), len(self.x))


def journal_path(results: Path, name: str) -> Path:
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
    return results.with_name(f"{results.name}.{safe}.journal")


@contextlib.contextmanager
def scan_lock(results: Path, name: str) -> Iterator[None]:
    """Hold the lock of scan ``name`` of ``results`` for a whole run, or refuse at once.

    Two runs of one scan would both truncate and delete its journal and lose each other's
    points; the second one is refused with one line instead (a no-op where ``fcntl`` is missing).
    The lock file ``<journal>.lock`` is left in place (removing it would race).
    """
    try:
        import fcntl
    except ImportError:  # pragma: no cover - non-POSIX
        yield
        return
    lock = journal_path(results, name).with_suffix(".journal.lock")
    try:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError as exc:
        raise LandscapeError(f"cannot create the scan lock {lock}: {exc.strerror}") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise LandscapeError(
                f"scan {name!r} of {results} is in use by another process; wait for it to "
                "finish (re-running then resumes it) or pass --name to start another scan"
            ) from None
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def read_journal(path: Path) -> list[tuple[int, int, float, float]]:
    """Complete lines ``i j loss accuracy`` of a journal; a torn last line is ignored."""
    if not path.exists():
        return []
    points = []
    text = path.read_text(encoding="utf-8", errors="replace")
    for line in text.split("\n")[:-1]:  # the part after the last newline is incomplete
        parts = line.split()
        if len(parts) != 4:
            continue
        try:
            points.append((int(parts[0]), int(parts[1]), float(parts[2]), float(parts[3])))
        except ValueError:
            continue
    return points


class Journal:
    """Append-only record of computed points, flushed per point (survives SIGKILL)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fh = open(path, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()
        self._last_sync = time.monotonic()

    def add(self, i: int, j: int, loss: float, acc: float) -> None:
        self._fh.write(f"{i} {j} {loss!r} {acc!r}\n")
        self._fh.flush()
        if time.monotonic() - self._last_sync > 2.0:  # power loss too, every few seconds
            os.fsync(self._fh.fileno())
            self._last_sync = time.monotonic()

    def close(self) -> None:
        self._fh.close()


BN_CHOICES = ("recompute", "interpolate")


def has_batchnorm(model: nn.Module) -> bool:
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
        if bn is not None and bn not in BN_CHOICES:
            raise LandscapeError(f"--bn must be recompute or interpolate, got {bn!r}")
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
        from landscape_cli.evaluation import math_attention

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
        torch._foreach_copy_(self.targets, self.base)
        for m, count in self.tracked:
            m.num_batches_tracked.copy_(count)


def run_scan(
    evaluate: Callable[[Sequence[float]], tuple[float, float]],
    plan: ScanPlan,
    loss: np.ndarray,
    *,
    store: Callable[[list[tuple[int, int, float, float]]], None],
    journal: Path,
    fold_every: float = 30.0,
    on_point: Callable[[int, int, float, float], None] | None = None,
    distribute_points: bool = False,
) -> np.ndarray:
    """Compute every point of ``plan`` whose ``loss`` entry is NaN, in row-major order.

    ``store(points)`` writes points into the results file (atomically); it is called with the
    journal's contents every ``fold_every`` seconds, on interruption and at the end. Returns the
    loss grid with the new points filled in.

    Under torchrun, only rank 0 keeps the journal and stores points. With ``distribute_points``
    the points are dealt out in rounds of one point per rank and gathered after each round;
    otherwise every rank takes part in every point (``evaluate`` shards the samples).
    """
    from landscape_cli import distributed

    loss = loss.copy()
    nx = len(plan.x)
    # Flat row-major indices of the missing points (j-major, like the grid): 8 bytes per point,
    # not a Python tuple each.
    todo_flat = np.flatnonzero(np.isnan(loss.ravel()))

    class _Todo:
        def __len__(self) -> int:
            return len(todo_flat)

        def __getitem__(self, t: int) -> tuple[int, int]:
            idx = int(todo_flat[t])
            return idx % nx, idx // nx

    todo = _Todo()
    main = distributed.is_main()
    log = Journal(journal) if main else None
    last_fold = time.monotonic()
    step = distributed.world() if distribute_points else 1

    def fold() -> None:
        from landscape_cli.results import ResultsWriteError

        points = read_journal(journal)
        if points:
            try:
                store(points)
            except ResultsWriteError as exc:  # the journal still holds every point
                raise LandscapeError(
                    f"{exc}; the {len(points)} computed point(s) are kept in {journal}: run the "
                    "same command again to store them"
                ) from exc
        journal.write_text("")

    def compute(i: int, j: int) -> tuple[int, int, float, float]:
        coords = (plan.x[i],) if plan.y is None else (plan.x[i], plan.y[j])
        lv, av = evaluate(coords)
        return i, j, lv, av

    try:
        for start in range(0, len(todo), step):
            if distribute_points:
                mine = start + distributed.rank()
                rows = distributed.gather_rows([compute(*todo[mine])] if mine < len(todo) else [])
            else:
                rows = [compute(*todo[start])]
            for i, j, lv, av in rows:
                if log is not None:
                    log.add(i, j, lv, av)
                if plan.y is None:
                    loss[i] = lv
                else:
                    loss[j, i] = lv
                if on_point is not None and main:
                    on_point(i, j, lv, av)
            if main and time.monotonic() - last_fold > fold_every:
                fold()
                last_fold = time.monotonic()
    finally:
        if log is not None:
            log.close()
            fold()
    if main:
        journal.unlink(missing_ok=True)
    return loss
