"""A scan run into ``/scan/<name>`` of a results file, resumably.

The job layer behind the ``store`` of :func:`landscape_cli.scan.grid.run_scan`.

:mod:`landscape_cli.scan` only computes points and hands each round of them to ``store``; this
module decides where they go, so the library never writes files.

**Crash safety.** The results file is HDF5, which is not crash-consistent, so points are not
written into it one by one. Each computed point is appended as one line to a journal beside the
file (``<file>.<scan name>.journal``, flushed after every point: a SIGKILL keeps every line
already written), and the journal is folded into the HDF5 file by an atomic rewrite
(:func:`landscape_cli.results.set_scan_points`) every ``fold_every`` seconds, on Ctrl-C, and at the
end. A torn last line (killed mid-write) is ignored. Folding twice is harmless, so a kill between
the rewrite and the journal's truncation loses nothing either. Re-running the same scan folds any
journal left behind and computes only the points still missing.

Usage from Python::

    plan = random_plan(model, name="1d-random", x=axis(-1, 1, 51), seed=0)
    result = execute(model, batches, plan, out="ckpt.h5", root={...})
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from landscape_cli import distributed
from landscape_cli.errors import LandscapeError
from landscape_cli.evaluation import LOSSES, Batch
from landscape_cli.results import (
    ResultsWriteError,
    read_scan,
    scan_attrs,
    set_scan_points,
    update_file,
    write_scan,
)
from landscape_cli.scan.grid import IDENTITY, Point, PointEvaluator, ScanPlan, run_scan

__all__ = [
    "Journal",
    "ScanStore",
    "check_resumable",
    "execute",
    "journal_path",
    "read_journal",
    "scan_lock",
]


def journal_path(results: Path, name: str) -> Path:
    """The journal of scan ``name`` of ``results``: ``<file>.<name>.journal`` beside it."""
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
                "finish (re-running then resumes it) or pass another `name` to start another scan"
            ) from None
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def read_journal(path: Path) -> list[Point]:
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
    """Append-only record of computed points, flushed per point (survives SIGKILL).

    Args:
        path: the journal file, appended to.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fh = open(path, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()
        self._last_sync = time.monotonic()

    def add(self, i: int, j: int, loss: float, acc: float) -> None:
        """Journal one point and flush it (synced to disk every few seconds)."""
        self._fh.write(f"{i} {j} {loss!r} {acc!r}\n")
        self._fh.flush()
        if time.monotonic() - self._last_sync > 2.0:  # power loss too, every few seconds
            os.fsync(self._fh.fileno())
            self._last_sync = time.monotonic()

    def close(self) -> None:
        """Close the journal."""
        self._fh.close()


class ScanStore:
    """The ``store`` of :func:`run_scan` on rank 0.

    Journals every point at once and folds the journal into ``/scan/<name>`` of ``results`` every
    ``fold_every`` seconds and on :meth:`close`.

    Args:
        results: the results file.
        root: its root (provenance) attributes.
        name: the scan's name under ``/scan``.
        fold_every: seconds between folds of the journal into the file.
    """

    def __init__(self, results: Path, root: dict[str, Any], name: str, fold_every: float) -> None:
        self.results, self.root, self.name, self.fold_every = results, root, name, fold_every
        self.journal = journal_path(results, name)
        self._log = Journal(self.journal)
        self._last_fold = time.monotonic()

    def __call__(self, points: Sequence[Point]) -> None:
        """Journal ``points``, folding the journal into the results file now and then."""
        for point in points:
            self._log.add(*point)
        if time.monotonic() - self._last_fold > self.fold_every:
            self.fold()
            self._last_fold = time.monotonic()

    def fold(self) -> None:
        """Write the journal's points into the results file (atomically), then empty it."""
        points = read_journal(self.journal)
        if points:
            try:
                set_scan_points(self.results, self.root, self.name, points)
            except ResultsWriteError as exc:  # the journal still holds every point
                raise LandscapeError(
                    f"{exc}; the {len(points)} computed point(s) are kept in {self.journal}: run "
                    "the same command again to store them"
                ) from exc
        self.journal.write_text("")

    def close(self, *, finished: bool) -> None:
        """Fold what is left; a ``finished`` scan's journal is then removed."""
        self._log.close()
        self.fold()
        if finished:
            self.journal.unlink(missing_ok=True)


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


def check_resumable(out: Path, name: str, attrs: dict[str, Any], overwrite: bool) -> bool:
    """Whether scan ``name`` of ``out`` exists, made with ``attrs``, to be resumed.

    False when there is none or with ``overwrite``; one made with other options is an error.
    """
    existing = scan_attrs(out, name)
    if existing is None or overwrite:
        return False
    diff = _mismatch(existing, attrs)
    if diff:
        raise LandscapeError(
            f"scan {name!r} in {out} was made with other options "
            f"({'; '.join(diff[:3])}); pass a new `name` to keep both, or `overwrite=True`"
        )
    return True


def _prepare(
    out: Path, root: dict[str, Any], plan: ScanPlan, attrs: dict[str, Any], overwrite: bool
) -> None:
    """On rank 0 only: check or create the scan group and fold any leftover journal."""
    journal = journal_path(out, plan.name)
    if not check_resumable(out, plan.name, attrs, overwrite):
        journal.unlink(missing_ok=True)
        grid = np.full(plan.shape, np.nan)
        write_scan(
            out,
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
            trajectory=plan.trajectory,
        )
    leftover = read_journal(journal)
    if leftover:
        set_scan_points(out, root, plan.name, leftover)
    journal.unlink(missing_ok=True)


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
    attrs = {**plan.attrs, "loss": loss, "bn_mode": bn_mode}
    if bn is not None:
        attrs["bn"] = bn
    lock = scan_lock(out_path, plan.name) if distributed.is_main() else contextlib.nullcontext()
    with lock:
        distributed.on_main(lambda: _prepare(out_path, root, plan, attrs, overwrite))
        # Every rank scans with the stored directions (a resumed scan keeps the ones it started
        # with) and from the stored grid, so all ranks agree on the points still missing.
        stored = read_scan(out_path, plan.name, directions=True)
        axes = ["x", "y"][: plan.attrs["dim"]]
        dirs = tuple(
            {k: torch.from_numpy(v) for k, v in stored["directions"][a].items()} for a in axes
        )
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
            model, batches, plan.directions, LOSSES[loss], bn_mode,
            sharded=distributed.active() and not by_points, bn=bn,
        )  # fmt: skip
        try:
            _run(evaluator, plan, current, out_path, root, fold_every, on_point, by_points)
        finally:
            evaluator.restore()
        distributed.barrier()  # rank 0 has folded every point before anyone reads the result
        return read_scan(out_path, plan.name)


def _run(
    evaluator: PointEvaluator,
    plan: ScanPlan,
    current: np.ndarray,
    out: Path,
    root: dict[str, Any],
    fold_every: float,
    on_point: Callable[[int, int, float, float], None] | None,
    by_points: bool,
) -> None:
    """:func:`run_scan` with a :class:`ScanStore` on rank 0 (only rank 0 keeps the journal)."""
    store = ScanStore(out, root, plan.name, fold_every) if distributed.is_main() else None
    finished = False
    try:
        run_scan(
            evaluator, plan, current, store=store, on_point=on_point, distribute_points=by_points
        )
        finished = True
    finally:
        if store is not None:
            store.close(finished=finished)
