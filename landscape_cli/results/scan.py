"""The ``/scan/<name>`` groups.

Loss and accuracy on a grid of points along one or two directions, written whole
(:func:`write_scan`), filled in point by point (:func:`set_scan_points`) and read back as a
:class:`ScanResult`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from landscape_cli.errors import LandscapeError
from landscape_cli.results import store
from landscape_cli.results.store import DictView, attrs_of, member_name, open_read, set_attr

if TYPE_CHECKING:
    import h5py

__all__ = [
    "ScanResult",
    "read_scan",
    "scan_attrs",
    "scan_names",
    "set_scan_points",
    "write_scan",
    "write_scan_result",
]


@dataclass(frozen=True)
class ScanResult(DictView):
    """One scan as stored in ``/scan/<name>``.

    ``x`` (nx,) and ``y`` (ny,) (None for a 1-D scan) are the coordinates; ``loss`` and
    ``accuracy`` are (nx,) or (ny, nx), NaN where a point is not computed yet. ``attrs`` are the
    group's attributes as plain values (``dim``, ``kind``, ``norm``, ``to``, the hashes, ...).
    ``directions`` maps each axis (``"x"``, ``"y"``) to ``{parameter name: array}`` in parameter
    order; it is None when the reader was not asked for it (``read_scan(directions=True)``).

    ``trajectory`` (PCA scans, ``kind == "pca"``) holds the snapshots of the run the plane was
    fitted to, in training order: ``x``, ``y`` (their coordinates in the plane), ``loss``,
    ``accuracy`` (each snapshot's own, on the scan's samples), ``label`` (str), ``residual``
    (distance from the plane), ``distance`` (from the checkpoint) and ``file`` (str); None for
    other scans.

    ``result["key"]`` (:class:`~landscape_cli.results.store.DictView`) gives the dict the reader
    returned before: ``name``, ``dim``, ``kind``, ``x``, ``y``, ``loss``, ``accuracy``, ``attrs``,
    ``trajectory`` (when there is one) and, when read, ``directions``.
    """

    name: str
    x: np.ndarray
    y: np.ndarray | None
    loss: np.ndarray
    accuracy: np.ndarray
    attrs: Mapping[str, Any] = field(default_factory=dict)
    directions: Mapping[str, Mapping[str, np.ndarray]] | None = field(default=None, repr=False)
    trajectory: Mapping[str, Any] | None = field(default=None, repr=False)

    @property
    def dim(self) -> int:
        """1 or 2: the ``dim`` attribute, else the number of axes of ``loss``."""
        return int(self.attrs.get("dim", np.ndim(self.loss)))

    @property
    def kind(self) -> str | None:
        """``"random"``, ``"interpolation"`` or ``"eigenvector"`` (None if not recorded)."""
        return self.attrs.get("kind")

    def _view(self) -> dict[str, Any]:
        out = {
            "name": self.name,
            "dim": self.dim,
            "kind": self.kind,
            "x": self.x,
            "y": self.y,
            "loss": self.loss,
            "accuracy": self.accuracy,
            "attrs": dict(self.attrs),
        }
        if self.directions is not None:
            out["directions"] = {axis: dict(p) for axis, p in self.directions.items()}
        if self.trajectory is not None:
            out["trajectory"] = dict(self.trajectory)
        return out


def scan_attrs(path: str | os.PathLike[str], name: str) -> dict[str, Any] | None:
    """The attributes of ``/scan/<name>``, or None when the file or the scan does not exist."""
    p = Path(path)
    if not p.exists():
        return None
    with open_read(p) as f:
        key = f"scan/{name}"
        return attrs_of(f[key]) if key in f else None


def write_scan(
    path: str | os.PathLike[str],
    root: Mapping[str, Any],
    name: str,
    *,
    attrs: Mapping[str, Any],
    x: np.ndarray,
    y: np.ndarray | None,
    loss: np.ndarray,
    accuracy: np.ndarray,
    directions: Mapping[str, Mapping[str, np.ndarray]],
    drop_foreign: bool = False,
    trajectory: Mapping[str, Any] | None = None,
) -> Path:
    """Create (or replace) ``/scan/<name>``: coordinates, loss/accuracy grids, directions.

    ``directions`` maps an axis (``"x"``, ``"y"``) to ``{parameter name: array}``; each array is
    stored under ``directions/<axis>/<parameter name>``. ``loss``/``accuracy`` hold NaN where a
    point is not computed yet; for 2-D scans they are shaped (ny, nx). ``trajectory`` (PCA scans)
    is stored as the datasets of ``/scan/<name>/trajectory`` (see :class:`ScanResult`).
    """

    def mutate(f: h5py.File) -> None:
        key = f"scan/{name}"
        if key in f:
            del f[key]
        g = f.require_group("scan").create_group(name)
        for k, v in attrs.items():
            set_attr(g, k, v)
        g.create_dataset("x", data=np.asarray(x, dtype=np.float64))
        if y is not None:
            g.create_dataset("y", data=np.asarray(y, dtype=np.float64))
        g.create_dataset("loss", data=np.asarray(loss, dtype=np.float64))
        g.create_dataset("accuracy", data=np.asarray(accuracy, dtype=np.float64))
        dg = g.create_group("directions")
        for axis, params in directions.items():
            ag = dg.create_group(axis, track_order=True)
            for pname, arr in params.items():
                ag.create_dataset(member_name(pname), data=np.asarray(arr))
        if trajectory is not None:
            _write_trajectory(g.create_group("trajectory"), trajectory)

    return store.update_file(path, root, mutate, drop_foreign=drop_foreign)


#: The datasets of ``/scan/<name>/trajectory``: numbers, then strings.
TRAJECTORY_NUMBERS = ("x", "y", "loss", "accuracy", "residual", "distance")
TRAJECTORY_STRINGS = ("label", "file")


def _write_trajectory(g: h5py.Group, trajectory: Mapping[str, Any]) -> None:
    import h5py

    lengths = {len(trajectory[k]) for k in (*TRAJECTORY_NUMBERS, *TRAJECTORY_STRINGS)}
    if len(lengths) != 1:
        raise ValueError(f"trajectory datasets of different lengths: {sorted(lengths)}")
    for key in TRAJECTORY_NUMBERS:
        g.create_dataset(key, data=np.asarray(trajectory[key], dtype=np.float64))
    for key in TRAJECTORY_STRINGS:
        values = [str(v) for v in trajectory[key]]
        g.create_dataset(key, data=np.array(values, dtype=object), dtype=h5py.string_dtype())


def _read_trajectory(g: h5py.Group) -> dict[str, Any]:
    out: dict[str, Any] = {key: g[key][()] for key in TRAJECTORY_NUMBERS if key in g}
    for key in TRAJECTORY_STRINGS:
        if key in g:
            out[key] = [v.decode() if isinstance(v, bytes) else str(v) for v in g[key][()]]
    return out


def write_scan_result(
    path: str | os.PathLike[str],
    root: Mapping[str, Any],
    scan: ScanResult,
    *,
    drop_foreign: bool = False,
) -> Path:
    """:func:`write_scan` of a :class:`ScanResult` (no directions stored when it has none)."""
    return write_scan(
        path,
        root,
        scan.name,
        attrs=scan.attrs,
        x=scan.x,
        y=scan.y,
        loss=scan.loss,
        accuracy=scan.accuracy,
        directions=scan.directions or {},
        drop_foreign=drop_foreign,
        trajectory=scan.trajectory,
    )


def set_scan_points(
    path: str | os.PathLike[str],
    root: Mapping[str, Any],
    name: str,
    points: list[tuple[int, int, float, float]],
) -> Path:
    """Store computed points ``(i, j, loss, accuracy)`` (j is 0 for 1-D scans) atomically."""

    def mutate(f: h5py.File) -> None:
        key = f"scan/{name}"
        if key not in f:
            raise LandscapeError(f"{path} has no scan {name!r} to add points to")
        g = f[key]
        loss, acc = g["loss"][()], g["accuracy"][()]
        for i, j, lv, av in points:
            if loss.ndim == 1:
                loss[i], acc[i] = lv, av
            else:
                loss[j, i], acc[j, i] = lv, av
        g["loss"][...] = loss
        g["accuracy"][...] = acc

    return store.update_file(path, root, mutate)


def read_scan(
    path: str | os.PathLike[str], name: str | None = None, *, directions: bool = False
) -> ScanResult:
    """Read ``/scan/<name>`` back as a :class:`ScanResult`.

    ``name`` may be omitted when the file holds exactly one scan. With ``directions``, the
    result's ``directions`` are read too (else they are None).
    """
    with open_read(path) as f:
        names = sorted(f["scan"]) if "scan" in f else []
        if not names:
            raise LandscapeError(
                f"{path} has no scans; run `landscape scan` on its checkpoint first"
            )
        if name is None:
            if len(names) > 1:
                raise LandscapeError(
                    f"{path} holds several scans ({', '.join(names)}); pass `name`"
                )
            name = names[0]
        if name not in names:
            raise LandscapeError(f"{path} has no scan {name!r} (it has: {', '.join(names)})")
        g = f[f"scan/{name}"]
        dirs = None
        if directions:
            dirs = {
                axis: {p: g[f"directions/{axis}/{p}"][()] for p in g[f"directions/{axis}"]}
                for axis in g["directions"]
            }
        return ScanResult(
            name=name,
            x=g["x"][()],
            y=g["y"][()] if "y" in g else None,
            loss=g["loss"][()],
            accuracy=g["accuracy"][()],
            attrs=attrs_of(g),
            directions=dirs,
            trajectory=_read_trajectory(g["trajectory"]) if "trajectory" in g else None,
        )


def scan_names(path: str | os.PathLike[str]) -> list[str]:
    """The names of the scans in ``path``, sorted."""
    with open_read(path) as f:
        return sorted(f["scan"]) if "scan" in f else []
