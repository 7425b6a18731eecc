"""A scan run into ``/scan/<name>`` of a results file, resumably.

The job layer behind the ``store`` of :func:`landscape_cli.scan.grid.run_scan`.

:mod:`landscape_cli.scan` only computes points and hands each round of them to ``store``; this
module decides where they go, so the library never writes files.

**Crash safety.** The results file is HDF5, which is not crash-consistent, so points are not
written into it one by one. Each computed point is appended as one line to a journal beside the
file (``<file>.<16 hex digits of the SHA-256 of the scan name>.journal``, written unbuffered after
every point: a SIGKILL keeps every line already written), and the journal is folded into the HDF5
file by an atomic rewrite (:func:`landscape_cli.results.set_scan_points`) every ``fold_every``
seconds, on Ctrl-C or SIGTERM, and at the end. A torn last line (killed mid-write) is ignored.
Folding twice is harmless, so a kill between the rewrite and the journal's truncation loses
nothing either. Re-running the same scan folds any journal left behind and computes only the
points still missing.

A journal belongs to exactly one scan: its name hashes the exact scan name (``"x y"`` and
``"x_y"`` never share one), and its first line records the scan's identity (name, grid and a hash
of its directions, :func:`landscape_cli.results.scan_identity`), checked before any of its points
is folded; a journal of another scan is refused with one line, never folded. Lines whose indices
lie outside the grid are ignored. Every fold checks under the file's lock that ``/scan/<name>`` is
still that scan.

Usage from Python::

    plan = random_plan(model, name="1d-random", x=axis(-1, 1, 51), seed=0)
    result = execute(model, batches, plan, out="ckpt.h5", root={...})
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from landscape_cli import distributed, files
from landscape_cli.batches import Batch
from landscape_cli.errors import LandscapeError
from landscape_cli.losses import LOSSES
from landscape_cli.results import (
    ResultsConflict,
    ResultsWriteError,
    expect_absent,
    read_scan,
    scan_attrs,
    scan_identity,
    set_scan_points,
    settings_mismatch,
    update_file,
    write_scan,
)
from landscape_cli.scan.directions import Direction
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

#: The first line of every journal: this tag, then the scan's identity as JSON.
HEADER = "# landscape scan journal 1 "


def journal_path(results: Path, name: str) -> Path:
    """The journal of scan ``name`` of ``results``: ``<file>.<hash of the name>.journal``."""
    digest = hashlib.sha256(name.encode("utf-8")).hexdigest()[:16]
    return results.with_name(f"{results.name}.{digest}.journal")


def journal_names(results: Path, name: str) -> tuple[str, str]:
    """The names of scan ``name``'s journal and of its lock, beside ``results``."""
    journal = journal_path(results, name)
    return journal.name, files.lock_path(journal).name


@contextlib.contextmanager
def scan_lock(results: Path, name: str) -> Iterator[None]:
    """Hold the lock of scan ``name`` of ``results`` for a whole run, or refuse at once.

    Two runs of one scan would both truncate and delete its journal and lose each other's
    points; the second one is refused with one line instead (a no-op where ``fcntl`` is missing).
    The lock file ``<journal>.lock`` is removed when the run ends. The results file's folder is
    created if missing.
    """
    files.ensure_parent(Path(results), "results file")
    busy = lambda: LandscapeError(  # noqa: E731
        f"scan {name!r} of {results} is in use by another process; wait for it to "
        "finish (re-running then resumes it) or pass another `name` to start another scan"
    )
    with files.locked(journal_path(results, name), wait=False, busy=busy, what="scan journal"):
        yield


def read_journal(path: Path, identity: Mapping[str, Any] | None = None) -> list[Point]:
    """Complete lines ``i j loss accuracy`` of a journal; a torn last line is ignored.

    With ``identity`` (:func:`landscape_cli.results.scan_identity`), the journal's header must
    record that scan, else :class:`LandscapeError` (its points are never folded elsewhere); lines
    whose indices lie outside its grid are ignored.
    """
    data = files.read_regular(path)
    if not data:
        return []
    lines = data.decode("utf-8", errors="replace").split("\n")[:-1]  # the rest is incomplete
    if identity is not None:
        recorded = _header(lines[0]) if lines else None
        if recorded != dict(identity):
            theirs = f"scan {recorded.get('name')!r}" if isinstance(recorded, dict) else "unknown"
            raise LandscapeError(
                f"the journal {path} belongs to another scan ({theirs}), not to scan "
                f"{identity['name']!r} with this grid and these directions; it was not folded: "
                "move it away to run this scan"
            )
    shape = tuple(identity["shape"]) if identity is not None else None
    points = []
    for line in lines:
        if line.startswith("#"):
            continue
        parts = line.split()
        if len(parts) != 4:
            continue
        try:
            point = (int(parts[0]), int(parts[1]), float(parts[2]), float(parts[3]))
        except ValueError:
            continue
        if shape is not None and not _on_grid(point, shape):
            continue
        points.append(point)
    return points


def _header(line: str) -> dict[str, Any] | None:
    if not line.startswith(HEADER):
        return None
    try:
        value = json.loads(line[len(HEADER) :])
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _on_grid(point: Point, shape: tuple[int, ...]) -> bool:
    i, j = point[0], point[1]
    if len(shape) == 1:
        return 0 <= i < shape[0] and j == 0
    return 0 <= i < shape[1] and 0 <= j < shape[0]


class Journal:
    """Append-only record of computed points, written unbuffered per point (survives SIGKILL).

    Args:
        path: the journal file, appended to (never through a symlink).
        identity: the scan's identity, written as the header of a new (or emptied) journal.
    """

    def __init__(self, path: Path, identity: Mapping[str, Any]) -> None:
        self.path = path
        self.identity = dict(identity)
        self._fd = files.open_append(path, "scan journal")
        self._last_sync = time.monotonic()
        if os.fstat(self._fd).st_size == 0:
            self._write(HEADER + json.dumps(self.identity, sort_keys=True) + "\n")

    def _write(self, text: str) -> None:
        try:
            files._write_all(self._fd, memoryview(text.encode("utf-8")))
        except OSError as exc:
            raise ResultsWriteError(
                f"cannot write the scan journal {self.path}: {files._reason(exc)}"
            ) from None

    def add(self, i: int, j: int, loss: float, acc: float) -> None:
        """Journal one point (synced to disk every few seconds)."""
        self._write(f"{i} {j} {loss!r} {acc!r}\n")
        if time.monotonic() - self._last_sync > 2.0:  # power loss too, every few seconds
            with contextlib.suppress(OSError):
                os.fsync(self._fd)
            self._last_sync = time.monotonic()

    def reset(self) -> None:
        """Empty the journal (its points are in the results file), keeping its header."""
        try:
            os.ftruncate(self._fd, 0)
        except OSError as exc:
            raise ResultsWriteError(
                f"cannot write the scan journal {self.path}: {files._reason(exc)}"
            ) from None
        self._write(HEADER + json.dumps(self.identity, sort_keys=True) + "\n")

    def close(self) -> None:
        """Close the journal."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


class ScanStore:
    """The ``store`` of :func:`run_scan` on rank 0.

    Journals every point at once and folds the journal into ``/scan/<name>`` of ``results`` every
    ``fold_every`` seconds and on :meth:`close`.

    Args:
        results: the results file.
        root: its root (provenance) attributes.
        name: the scan's name under ``/scan``.
        fold_every: seconds between folds of the journal into the file.
        identity: the scan's identity (:func:`landscape_cli.results.scan_identity`).
    """

    def __init__(
        self,
        results: Path,
        root: dict[str, Any],
        name: str,
        fold_every: float,
        identity: Mapping[str, Any],
    ) -> None:
        self.results, self.root, self.name, self.fold_every = results, root, name, fold_every
        self.identity = dict(identity)
        self.journal = journal_path(results, name)
        self._log = Journal(self.journal, self.identity)
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
        points = read_journal(self.journal, self.identity)
        if points:
            _store_points(self.results, self.root, self.name, points, self.identity, self.journal)
        self._log.reset()

    def close(self, *, finished: bool) -> None:
        """Fold what is left, then remove the journal (kept, with its points, if that fails).

        ``finished`` is whether the scan computed every point; either way a journal whose points
        all reached the results file is not left behind.
        """
        try:
            self.fold()
        finally:
            self._log.close()
        self.journal.unlink(missing_ok=True)  # this run created it; its points are stored


def _store_points(
    results: Path,
    root: dict[str, Any],
    name: str,
    points: list[Point],
    identity: Mapping[str, Any],
    journal: Path,
) -> None:
    """Fold ``points`` into ``/scan/<name>``; if that fails, say that the journal keeps them."""
    try:
        set_scan_points(results, root, name, points, identity=identity)
    except (ResultsWriteError, ResultsConflict) as exc:  # the journal still holds every point
        raise LandscapeError(
            f"{exc}; the {len(points)} computed point(s) are kept in {journal}: run "
            "the same command again to store them"
        ) from exc


#: Identity attributes that scans written before them lack: such a scan resumes with any value.
_LATER = frozenset({"float32_precision"})


def check_resumable(out: Path, name: str, attrs: dict[str, Any], overwrite: bool) -> bool:
    """Whether scan ``name`` of ``out`` exists, made with ``attrs``, to be resumed.

    False when there is none or with ``overwrite``; one made with other options is an error.
    """
    existing = scan_attrs(out, name)
    if existing is None or overwrite:
        return False
    diff = settings_mismatch(existing, attrs, keys=IDENTITY, later=_LATER)
    if diff:
        raise LandscapeError(
            f"scan {name!r} in {out} was made with other options "
            f"({'; '.join(diff[:3])}); pass a new `name` to keep both, or `overwrite=True`"
        )
    return True


def _prepare(
    out: Path, root: dict[str, Any], plan: ScanPlan, attrs: dict[str, Any], overwrite: bool
) -> None:
    """On rank 0 only: check the scan group, or create it.

    ``overwrite`` drops the replaced scan's journal; a journal found for a scan that is new to the
    file is folded afterwards if it records this very scan (a killed run whose results file went
    away), and refused otherwise (:func:`read_journal`).
    """
    journal = journal_path(out, plan.name)
    if check_resumable(out, plan.name, attrs, overwrite):
        return
    if overwrite:
        journal.unlink(missing_ok=True)  # the journal of the scan being replaced
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
        check=None if overwrite else expect_absent(f"scan/{plan.name}", "run the command again"),
    )


def _fold_leftover(out: Path, root: dict[str, Any], name: str, identity: dict[str, Any]) -> bool:
    """On rank 0 only: fold the journal a killed run of this scan left; whether it held points."""
    journal = journal_path(out, name)
    leftover = read_journal(journal, identity)  # refuses another scan's journal
    if leftover:
        _store_points(out, root, name, leftover, identity, journal)
    journal.unlink(missing_ok=True)
    return bool(leftover)


def _check_directions(
    stored: Sequence[Direction], wanted: Sequence[Direction], out: Path, name: str
) -> None:
    """Refuse stored directions that do not fit the model the scan resumes on (names, shapes)."""
    for axis, got, want in zip("xy", stored, wanted, strict=False):
        names = set(got) ^ set(want)
        shapes = [k for k in want if k in got and tuple(got[k].shape) != tuple(want[k].shape)]
        if names or shapes:
            what = f"parameter {sorted(names)[0]!r}" if names else f"the shape of {shapes[0]!r}"
            raise LandscapeError(
                f"scan {name!r} in {out} holds {axis}-directions that do not fit the model "
                f"({what} differs); pass `overwrite=True` to start it again, or a new `name`"
            )


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
        # the stored directions and grid, as every rank scans them (see _resume)
        plan, current, identity = _resume(out_path, root, plan)
        missing = int(np.isnan(current).sum())
        if on_start is not None and distributed.is_main():
            on_start(current.size - missing, current.size)
        if missing == 0 and distributed.is_main():  # nothing left: still record this run's root
            update_file(out_path, root, lambda _file: None)  # attributes (label, argv)
        # Under torchrun: deal out whole points when there are enough of them (no communication
        # while a point is computed), else split each point's samples over the ranks.
        by_points = distributed.active() and missing >= distributed.world()
        evaluator = PointEvaluator(
            model, batches, plan.directions, LOSSES[loss], bn_mode,
            sharded=distributed.active() and not by_points, bn=bn,
        )  # fmt: skip
        try:
            _run(
                evaluator, plan, current, out_path, root, fold_every, on_point, by_points, identity
            )
        finally:
            evaluator.restore()
        distributed.barrier()  # rank 0 has folded every point before anyone reads the result
        return read_scan(out_path, plan.name)


def _resume(
    out_path: Path, root: dict[str, Any], plan: ScanPlan
) -> tuple[ScanPlan, np.ndarray, dict[str, Any]]:
    """The scan as stored: ``plan`` with its stored directions, the loss grid, its identity.

    Every rank scans with the stored directions (a resumed scan keeps the ones it started with)
    and from the stored grid, so all ranks agree on the points still missing. Rank 0 first folds
    the journal a killed run left.
    """
    stored = read_scan(out_path, plan.name, directions=True)
    identity = scan_identity(stored)
    if distributed.on_main(lambda: _fold_leftover(out_path, root, plan.name, identity)):
        stored = replace(stored, loss=read_scan(out_path, plan.name).loss)
    axes = ["x", "y"][: plan.attrs["dim"]]
    dirs = tuple({k: torch.from_numpy(v) for k, v in stored.directions[a].items()} for a in axes)
    _check_directions(dirs, plan.directions, out_path, plan.name)
    return ScanPlan(plan.name, plan.x, plan.y, dirs, plan.attrs), stored.loss, identity


def _run(
    evaluator: PointEvaluator,
    plan: ScanPlan,
    current: np.ndarray,
    out: Path,
    root: dict[str, Any],
    fold_every: float,
    on_point: Callable[[int, int, float, float], None] | None,
    by_points: bool,
    identity: dict[str, Any],
) -> None:
    """:func:`run_scan` with a :class:`ScanStore` on rank 0 (only rank 0 keeps the journal)."""
    main = distributed.is_main()
    store = ScanStore(out, root, plan.name, fold_every, identity) if main else None
    finished = False
    try:
        run_scan(
            evaluator, plan, current, store=store, on_point=on_point, distribute_points=by_points
        )
        finished = True
    finally:
        if store is not None:
            store.close(finished=finished)
