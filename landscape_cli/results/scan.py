"""The ``/scan/<name>`` groups.

Loss and accuracy on a grid of points along one or two directions, written whole
(:func:`write_scan`), filled in point by point (:func:`set_scan_points`) and read back as a
:class:`ScanResult`.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from landscape_cli.errors import LandscapeError
from landscape_cli.results import store
from landscape_cli.results import typed as t
from landscape_cli.results.store import (
    DictView,
    ResultsConflict,
    member_name,
    open_read,
    set_attr,
)

__all__ = [
    "ScanResult",
    "check_scan_name",
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
        g = scan_groups(f).get(name)
        return None if g is None else _scan_attrs(g)


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
    check: store.Check | None = None,
) -> Path:
    """Create (or replace) ``/scan/<name>``: coordinates, loss/accuracy grids, directions.

    ``directions`` maps an axis (``"x"``, ``"y"``) to ``{parameter name: array}``; each array is
    stored under ``directions/<axis>/<parameter name>``. ``loss``/``accuracy`` hold NaN where a
    point is not computed yet; for 2-D scans they are shaped (ny, nx). ``trajectory`` (PCA scans)
    is stored as the datasets of ``/scan/<name>/trajectory`` (see :class:`ScanResult`). ``check``
    runs under the file's lock right before the write.
    """
    check_scan_name(name)

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

    return store.update_file(path, root, mutate, drop_foreign=drop_foreign, check=check)


#: The datasets of ``/scan/<name>/trajectory``: numbers, then strings.
TRAJECTORY_NUMBERS = ("x", "y", "loss", "accuracy", "residual", "distance")
TRAJECTORY_STRINGS = ("label", "file")


def _write_trajectory(g: h5py.Group, trajectory: Mapping[str, Any]) -> None:
    lengths = {len(trajectory[k]) for k in (*TRAJECTORY_NUMBERS, *TRAJECTORY_STRINGS)}
    if len(lengths) != 1:
        raise ValueError(f"trajectory datasets of different lengths: {sorted(lengths)}")
    for key in TRAJECTORY_NUMBERS:
        g.create_dataset(key, data=np.asarray(trajectory[key], dtype=np.float64))
    for key in TRAJECTORY_STRINGS:
        values = [str(v) for v in trajectory[key]]
        g.create_dataset(key, data=np.array(values, dtype=object), dtype=h5py.string_dtype())


def _read_trajectory(g: h5py.Group) -> dict[str, Any]:
    """The datasets of ``/scan/<name>/trajectory``, checked (:mod:`.typed`)."""
    x = t.array(g, "x", finite=True)
    out: dict[str, Any] = {"x": x}
    for key in TRAJECTORY_NUMBERS[1:]:
        if key in g:
            out[key] = t.array(g, key, shape=(len(x),))
    for key in TRAJECTORY_STRINGS:
        if key in g:
            d = t.dataset(g, key)
            if d.ndim != 1 or d.shape[0] != len(x) or h5py.check_string_dtype(d.dtype) is None:
                raise t.fail(
                    g, f"{g.name}/{key}", f"has dtype {d.dtype} and shape {d.shape}",
                    f"a 1-D array of {len(x)} strings",
                )  # fmt: skip
            out[key] = [v.decode() if isinstance(v, bytes) else str(v) for v in d[()]]
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
    *,
    identity: Mapping[str, Any] | None = None,
) -> Path:
    """Store computed points ``(i, j, loss, accuracy)`` (j is 0 for 1-D scans) atomically.

    With ``identity`` (:func:`scan_identity` of the scan the points were computed for), the group
    is checked under the file's lock to still be that scan (:class:`~.store.ResultsConflict`).
    """

    def mutate(f: h5py.File) -> None:
        key = f"scan/{name}"
        if key not in f:
            raise ResultsConflict(f"{path} has no scan {name!r} to add points to")
        g = f[key]
        if identity is not None and _group_identity(name, g) != dict(identity):
            raise ResultsConflict(
                f"scan {name!r} in {path} was replaced meanwhile by another scan; its points "
                "were not stored there"
            )
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
    result's ``directions`` are read too (else they are None). Every value is checked
    (:mod:`.typed`).
    """
    with open_read(path) as f:
        groups = scan_groups(f)
        names = sorted(groups)
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
        if name not in groups:
            raise LandscapeError(f"{path} has no scan {name!r} (it has: {', '.join(names)})")
        return read_scan_group(groups[name], name, directions=directions)


def scan_names(path: str | os.PathLike[str]) -> list[str]:
    """The names of the scans in ``path``, sorted."""
    with open_read(path) as f:
        return sorted(scan_groups(f))


#: The longest scan name (characters).
_NAME_LIMIT = 200


def check_scan_name(name: str) -> str:
    """``name`` checked as a scan name (one HDF5 group under ``/scan``); returns it.

    A scan name is 1 to 200 characters, none of them ``/`` or a control character, without
    leading or trailing spaces, and not ``.`` or ``..``: anything else would make a nested group
    or a name that reads back differently.
    """
    bad = None
    if not isinstance(name, str) or not name:
        bad = "is empty"
    elif "/" in name:
        bad = "holds '/', which would make nested groups in the results file"
    elif any(ord(c) < 32 or ord(c) == 127 for c in name):
        bad = "holds a control character"
    elif name != name.strip():
        bad = "starts or ends with a space"
    elif name in (".", ".."):
        bad = "is '.' or '..'"
    elif len(name) > _NAME_LIMIT:
        bad = f"is longer than {_NAME_LIMIT} characters"
    if bad is not None:
        raise LandscapeError(f"`name` {name!r} {bad}; choose another scan name")
    return name


def scan_groups(f: h5py.File) -> dict[str, h5py.Group]:
    """Every scan group under ``/scan`` by name.

    A group without attributes whose members are all groups is a folder of scans, not a scan:
    a scan named ``a/b`` by an earlier landscape (which allowed ``/`` in names) is the group
    ``/scan/a/b`` and is found here under that name.
    """
    out: dict[str, h5py.Group] = {}
    root = t.group(f, "scan", None)
    if root is None:
        return out

    def visit(g: h5py.Group, prefix: str, depth: int) -> None:
        for member in g:
            sub = t.group(g, member)
            name = f"{prefix}{member}"
            children = list(sub.values())
            folder = (
                depth < 8
                and len(children) > 0
                and len(sub.attrs) == 0
                and all(isinstance(c, h5py.Group) for c in children)
            )
            if folder:
                visit(sub, f"{name}/", depth + 1)
            else:
                out[name] = sub

    visit(root, "", 0)
    return out


#: The kinds of a scan's attributes (:mod:`.typed`); others are read as plain data.
SCAN_KINDS = {
    "dim": t.INT,
    "kind": t.STR,
    "norm": t.STR,
    "ignore": t.STR,
    "seed": t.INT,
    "samples": t.COUNT,
    "samples_sha256": t.STR,
    "split": t.STR,
    "loss": t.STR,
    "bn_mode": t.STR,
    "bn": t.STR,
    "orthogonalize": t.BOOL,
    "checkpoint_sha256": t.STR,
    "targets_sha256": t.STR,
    "to": t.STRS,
    "eigenvalues": t.NUMBERS,
    "xmin": t.FINITE,
    "xmax": t.FINITE,
    "nx": t.COUNT,
    "ymin": t.FINITE,
    "ymax": t.FINITE,
    "ny": t.COUNT,
    "dataset": t.STR,
    "params": t.STRS,
    "include_frozen": t.BOOL,
    "skipped_params": t.STRS,
    "skipped_reasons": t.STRS,
    "float32_precision": t.STR,
    "explained_variance": t.NUMBERS,
    "trajectory": t.STRS,
    "trajectory_sha256": t.STR,
}


def _scan_attrs(g: h5py.Group) -> dict[str, Any]:
    out = t.attrs(g, SCAN_KINDS, others=True)
    if out.get("dim", 1) not in (1, 2):
        raise t.fail(g, f"attribute 'dim' of {g.name}", f"is {out['dim']}", "1 or 2")
    return out


def read_scan_group(g: h5py.Group, name: str, *, directions: bool = False) -> ScanResult:
    """The :class:`ScanResult` stored in the open scan group ``g`` (every value checked).

    ``x`` (and ``y``) are finite 1-D coordinates; ``loss`` and ``accuracy`` are float arrays
    shaped (nx,) or (ny, nx) (NaN where not computed); the directions are numeric arrays.
    """
    attrs = _scan_attrs(g)
    x = t.array(g, "x", finite=True, shape=(attrs.get("nx"),))
    y = t.array(g, "y", finite=True, shape=(attrs.get("ny"),), default=None)
    dim = attrs.get("dim", 1 if y is None else 2)
    if (dim == 2) != (y is not None):
        found = "is missing" if dim == 2 else "is present"
        raise t.fail(g, f"{g.name}/y", found, f"a {dim}-D scan")
    grid = (len(x),) if y is None else (len(y), len(x))
    loss = t.array(g, "loss", ndim=len(grid), shape=grid)
    accuracy = t.array(g, "accuracy", ndim=len(grid), shape=grid)
    dirs = None
    if directions:
        dg = t.group(g, "directions")
        dirs = {}
        for axis in ("x", "y")[:dim]:
            ag = t.group(dg, axis)
            if len(ag) == 0:
                raise t.fail(g, ag.name, "is empty", "one direction per parameter")
            dirs[axis] = {p: t.array(ag, p, ndim=range(0, 33), dtype="n") for p in ag}
    tg = t.group(g, "trajectory", None)
    return ScanResult(
        name=name, x=x, y=y, loss=loss, accuracy=accuracy, attrs=attrs, directions=dirs,
        trajectory=_read_trajectory(tg) if tg is not None else None,
    )  # fmt: skip


# -- identity ----------------------------------------------------------------------------------


def _digest(*arrays: np.ndarray | None) -> str:
    h = hashlib.sha256()
    for arr in arrays:
        if arr is not None:
            a = np.ascontiguousarray(arr)
            h.update(f"{a.dtype.str}{a.shape}".encode())
            h.update(a.tobytes())
    return h.hexdigest()


def identity(
    name: str,
    x: np.ndarray,
    y: np.ndarray | None,
    shape: tuple[int, ...],
    directions: Mapping[str, Mapping[str, np.ndarray]],
) -> dict[str, Any]:
    """What makes a scan this scan: its name, grid and a hash of its directions (plain values)."""
    h = hashlib.sha256()
    for axis in sorted(directions):
        for param in sorted(directions[axis]):
            h.update(f"{axis}/{param}".encode())
            h.update(_digest(directions[axis][param]).encode())
    return {
        "name": name,
        "shape": [int(n) for n in shape],
        "x": _digest(x),
        "y": _digest(y) if y is not None else None,
        "directions": h.hexdigest(),
    }


def scan_identity(scan: ScanResult) -> dict[str, Any]:
    """:func:`identity` of a scan read back with its directions (``read_scan(directions=True)``)."""
    return identity(scan.name, scan.x, scan.y, np.shape(scan.loss), scan.directions or {})


def _group_identity(name: str, g: Any) -> dict[str, Any]:
    """:func:`identity` of the open group ``/scan/<name>``."""
    dirs = {}
    if "directions" in g:
        dirs = {
            axis: {p: g[f"directions/{axis}/{p}"][()] for p in g[f"directions/{axis}"]}
            for axis in g["directions"]
        }
    y = g["y"][()] if "y" in g else None
    return identity(name, g["x"][()], y, g["loss"].shape, dirs)
