"""The store under every results group.

The locked atomic rewrite, attribute encoding, the root (provenance) attributes, and the checks a
command runs before computing.

Writes (:func:`update_file`, and every group's writer on top of it) hold the results file's lock
(:func:`landscape_cli.files.locked`: ``<file>.lock``, removed again when released), build the new
file in memory (the existing file's objects and root attributes copied, the caller's change, the
root attributes refreshed) and hand it to :func:`landscape_cli.files.write_atomic` (temporary file
beside it, free space checked, fsync, ``os.replace``). HDF5 never writes to a disk that may fill
up (that crashes inside the library), except for an existing file too large to copy in memory,
which is rewritten on disk after a free-space check. A crash leaves either the old or the new
file, never a torn one; concurrent writers adding different groups never lose each other's
groups. A ``check`` runs under the lock on what the file holds right before the write (the
"same options" rule, :func:`expect_settings`), and an existing file that is not HDF5, or is HDF5
without this schema, is refused (:class:`ResultsConflict`, a
:class:`~landscape_cli.errors.LandscapeError`) and left untouched. :func:`write_or_rescue`
saves a finished result elsewhere when its write fails or conflicts.

Attributes: strings are variable-length UTF-8 ``str``, never bytes; lists of strings are 1-D
string arrays; mappings are JSON text; None is not written (:func:`set_attr`). Read back, they
are plain Python values and numpy arrays (:func:`plain`).
"""

from __future__ import annotations

import contextlib
import functools
import io
import json
import os
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from landscape_cli import __version__, files
from landscape_cli.errors import LandscapeError, one_line
from landscape_cli.resources import available_bytes
from landscape_cli.results import typed
from landscape_cli.results import typed as t

SCHEMA = "landscape-results"
SCHEMA_VERSION = 1


class DictView(Mapping[str, Any]):
    """Read-only ``result["key"]`` access to a frozen result, as the readers' dicts had it.

    A shim for old scripts: the typed fields are the interface, and nothing in the package reads
    a result through this view (a test runs the commands with it disabled). It keeps the keys that
    the readers returned before they returned dataclasses (documented per class), so scripts that
    index a result keep working. The view is built once, on first use.
    """

    def _view(self) -> dict[str, Any]:
        raise NotImplementedError

    @functools.cached_property
    def _view_cache(self) -> dict[str, Any]:
        return self._view()

    def __getitem__(self, key: str) -> Any:
        """The attribute ``key``."""
        return self._view_cache[key]

    def __iter__(self) -> Iterator[str]:
        """Iterate over the attribute names."""
        return iter(self._view_cache)

    def __len__(self) -> int:
        """The number of attributes."""
        return len(self._view_cache)


# --------------------------------------------------------------------------------------------------
# helpers


def set_attr(obj: h5py.HLObject, name: str, value: Any) -> None:
    """Store ``value`` as attribute ``name``: str as UTF-8 str, lists of str as string arrays.

    ``None`` is skipped; paths become str; dicts become JSON strings; an empty list becomes an
    empty string array; numbers and numeric sequences are stored as they are.
    """
    if value is None:
        return
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    if isinstance(value, bytes):
        value = value.decode("utf-8")
    if isinstance(value, Mapping):
        value = json.dumps(value, sort_keys=True, default=str)
    if isinstance(value, str):
        obj.attrs.create(name, data=value, dtype=h5py.string_dtype())
        return
    if isinstance(value, (list, tuple)) and all(isinstance(v, (str, os.PathLike)) for v in value):
        # an empty list lands here too: an empty string array
        data = np.array([os.fspath(v) for v in value], dtype=object)
        obj.attrs.create(name, data=data, dtype=h5py.string_dtype())
        return
    if isinstance(value, (bool, np.bool_)):
        obj.attrs[name] = np.bool_(value)
        return
    if isinstance(value, (int, float, np.integer, np.floating)):
        obj.attrs[name] = value
        return
    arr = np.asarray(value)
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"cannot store attribute {name!r} of type {type(value).__name__}")
    obj.attrs[name] = arr


def plain(value: Any) -> Any:
    """Turn an h5py attribute value into plain Python (str arrays become lists of str)."""
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if isinstance(value, np.ndarray):
        if value.dtype.kind in "OSU":
            return [v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in value.tolist()]
        return value
    if isinstance(value, np.generic):
        return value.item()
    return value


def attrs_of(obj: h5py.HLObject) -> dict[str, Any]:
    """All attributes of an HDF5 object as plain Python values (:func:`plain`)."""
    return {key: plain(obj.attrs[key]) for key in obj.attrs}


def _check_schema(f: h5py.File, path: Path) -> None:
    schema = t.attr(f, "schema", t.PLAIN, None)
    if not (isinstance(schema, str) and schema == SCHEMA):
        shown = schema if isinstance(schema, (str, int, float, type(None))) else "not a string"
        raise LandscapeError(
            f"{path} is an HDF5 file but not a landscape results file "
            f"(schema attribute {shown!r}); choose another `out`"
        )
    version = t.attr(f, "schema_version", t.PLAIN, None)
    if not isinstance(version, int) or isinstance(version, bool) or version > SCHEMA_VERSION:
        shown = version if isinstance(version, (str, int, float, type(None))) else "not a number"
        raise LandscapeError(
            f"{path} has results schema version {shown!r}; this landscape reads up to "
            f"{SCHEMA_VERSION} (upgrade landscape or choose another `out`)"
        )


@contextlib.contextmanager
def open_read(path: str | os.PathLike[str]) -> Iterator[h5py.File]:
    """Open an existing results file read-only, with one-line errors for every bad case."""
    p = Path(path)
    if not p.exists():
        raise LandscapeError(f"results file {p} does not exist")
    if not p.is_file():
        raise LandscapeError(f"results file {p} is not a file")
    if not h5py.is_hdf5(p):
        raise LandscapeError(f"{p} is not an HDF5 file")
    try:
        f = h5py.File(p, "r")
    except OSError as exc:
        raise LandscapeError(f"cannot open results file {p}: {one_line(exc)}") from exc
    with f:
        try:
            _check_schema(f, p)
            typed.walk(f)  # no soft, external or looping links: a reader never leaves the file
            yield f
        except (OSError, KeyError, RuntimeError, ValueError, TypeError) as exc:  # h5py, damaged
            raise LandscapeError(
                f"results file {p} is damaged ({one_line(exc)}); move it away or choose "
                "another file"
            ) from exc


class ResultsWriteError(files.WriteError):
    """Writing a results file failed for a reason outside the file's content.

    Writing a results file failed for a reason outside the file's content (disk full, a
    folder that vanished, permissions): the caller may save its result elsewhere.
    """


class ResultsConflict(LandscapeError):
    """The results file holds what this write must not replace, as found under its lock.

    A group written meanwhile with other options, a file of another checkpoint, a file that is
    not a landscape results file: the target is left as it is, and the caller may save its result
    elsewhere (:func:`write_or_rescue`).
    """


def check_folder(
    folder: str | os.PathLike[str], what: str = "output", target: Path | None = None
) -> None:
    """Refuse early a folder that cannot be created or takes no new file.

    ``target`` is the file the message names (default: the folder);
    see :func:`landscape_cli.files.check_folder`.
    """
    if target is None:
        files.check_folder(folder, what)
    else:
        files.check_output(target, what)


def check_output_file(path: str | os.PathLike[str], what: str = "output file") -> None:
    """Refuse early an output file path that cannot be written.

    A folder, a device, FIFO or socket, a name too long for the temporary and rescue files named
    after it, or a folder that cannot be created or takes no new file
    (:func:`landscape_cli.files.check_output`).
    """
    files.check_output(path, what)


def check_target(
    path: str | os.PathLike[str],
    checkpoint_sha256: str | None = None,
    *,
    drop_foreign: bool = False,
    way_out: str = "pass another `out` to keep them apart, or `overwrite=True` to drop them",
) -> None:
    """Refuse early (before any computing) a ``--out`` that :func:`update_file` would refuse.

    Refuse early (before any computing) a ``--out`` that :func:`update_file` would refuse or
    fail on: a path whose folder cannot be written, an existing file that is not HDF5, an HDF5
    file without this schema, one whose groups cannot all be read (a damaged file), or (given
    ``checkpoint_sha256``, unless ``drop_foreign``) a results file of another checkpoint.
    """
    p = Path(path)
    files.check_output(p, "results file", lock=True)
    if not p.exists():
        return
    if not (p.is_file() and h5py.is_hdf5(p)):
        raise LandscapeError(f"{p} exists and is not an HDF5 file; refusing to overwrite it")
    with open_read(p) as f:
        _read_everything(f, p)
        check_groups(f)
        other = _foreign(f, checkpoint_sha256)
        if other and not drop_foreign:
            raise LandscapeError(_foreign_message(p, other, way_out))


def _read_everything(f: h5py.File, path: Path) -> None:
    """Open every object of ``f`` and read its attributes and data.

    :func:`update_file` copies them all, so a damaged one must be found before any computing, not
    after.
    """

    def visit(name: str, obj: Any) -> None:
        attrs_of(obj)
        if isinstance(obj, h5py.Dataset):
            obj[()]

    try:
        attrs_of(f)
        f.visititems(visit)
    except (OSError, RuntimeError, KeyError, ValueError, TypeError) as exc:
        raise LandscapeError(
            f"results file {path} is damaged ({one_line(exc)}); move it away or choose "
            "another `out`"
        ) from exc


def check_groups(f: h5py.File) -> None:
    """Read every group landscape knows through its typed reader; the first bad value raises.

    The root attributes, ``/hessian``, ``/audit`` (and ``/audit/hessian``) and every scan: run
    before computing, so that nothing read from the file after computing can fail.
    """
    # lazy: import cycle (results.audit, .hessian and .scan import store)
    from landscape_cli.results.audit import read_audit_group
    from landscape_cli.results.hessian import read_group
    from landscape_cli.results.scan import read_scan_group, scan_groups

    typed.attrs(f, ROOT_KINDS, others=True)
    hessian = typed.group(f, "hessian", None)
    if hessian is not None:
        read_group(hessian)
    audit = typed.group(f, "audit", None)
    if audit is not None:
        read_audit_group(audit)
    for name, g in scan_groups(f).items():
        read_scan_group(g, name, directions=True)


def _foreign(f: h5py.File, checkpoint_sha256: str | None) -> str | None:
    """The checkpoint file named by ``f``'s root when its SHA-256 is not ``checkpoint_sha256``."""
    if not checkpoint_sha256:
        return None
    stored = typed.attr(f, "checkpoint_sha256", typed.STR, "")
    if not stored or stored == checkpoint_sha256:
        return None
    name = typed.attr(f, "checkpoint", typed.STR, "") or "another checkpoint"
    return f"{name} ({stored[:12]})"


def _foreign_message(
    path: Path,
    other: str,
    way_out: str = "pass another `out` to keep them apart, or `overwrite=True` to drop them",
) -> str:
    return f"{path} holds the results of {other}, a different checkpoint; {way_out}"


def settings_mismatch(
    stored: Mapping[str, Any] | None,
    wanted: Mapping[str, Any],
    *,
    keys: Sequence[str] | None = None,
    later: Collection[str] = (),
) -> list[str]:
    """The options that differ between ``stored`` and ``wanted``, as ``"key stored vs wanted"``.

    The one comparison behind "the same options, or ``overwrite``": a group's ``settings``
    before computing (``jobs.check_same_options``) and under the lock before writing
    (:func:`expect_settings`), and a scan's identity before resuming it
    (``jobs.scan_journal.check_resumable``). Numbers compare as floats (``1`` and ``1.0`` agree;
    a bool is not a number), anything else by ``==``. ``keys`` are the keys compared, in order
    (default: every key of either, sorted); a key of ``later`` that ``stored`` lacks is not
    compared (it is recorded only from some version on, and older files match either value).
    Empty when they agree or ``stored`` records none (older files).
    """
    if not stored:
        return []
    out = []
    for key in sorted(set(stored) | set(wanted)) if keys is None else keys:
        a, b = stored.get(key), wanted.get(key)
        if a is None and key in later:
            continue
        if not _same_setting(a, b):
            out.append(f"{key} {a!r} vs {b!r}")
    return out


def _same_setting(a: Any, b: Any) -> bool:
    """Whether a stored setting and a wanted one agree (numbers as floats)."""

    def number(v: Any) -> bool:
        return isinstance(v, (int, float)) and not isinstance(v, bool)

    return float(a) == float(b) if number(a) and number(b) else a == b


def group_settings(path: str | os.PathLike[str], group: str) -> dict[str, Any] | None:
    """The ``settings`` (a JSON attribute) of ``group`` in ``path``.

    ``{}`` for a group that records none, None when the file or the group does not exist.
    """
    p = Path(path)
    if not p.exists():
        return None
    with open_read(p) as f:
        g = typed.group(f, group, None)
        if g is None:
            return None
        return typed.attr(g, "settings", typed.JSON, {})


Check = Callable[["h5py.File", Path], None]


def expect_settings(
    group: str, wanted: Mapping[str, Any], way_out: str = "pass `overwrite=True` to replace it"
) -> Check:
    """A ``check`` of :func:`update_file`: ``group``, if present, was computed with ``wanted``.

    Run under the lock right before the write, so that a group another run wrote meanwhile with
    other options is never replaced silently (:class:`ResultsConflict` names the options).
    """

    def check(f: h5py.File, path: Path) -> None:
        if group not in f:
            return
        raw = plain(f[group].attrs.get("settings"))
        try:
            stored = json.loads(raw) if raw else {}
        except (TypeError, ValueError):
            stored = {"settings": raw}
        diff = settings_mismatch(stored, wanted)
        if diff:
            raise ResultsConflict(
                f"/{group} in {path} was written meanwhile by another run with other options "
                f"({'; '.join(diff[:3])}); {way_out}"
            )

    return check


def expect_absent(group: str, way_out: str) -> Check:
    """A ``check`` of :func:`update_file`: ``group`` is not in the file (another run made none)."""

    def check(f: h5py.File, path: Path) -> None:
        if group in f:
            raise ResultsConflict(
                f"/{group} in {path} was written meanwhile by another run; {way_out}"
            )

    return check


def expect_incomplete(group: str) -> Check:
    """A ``check`` of :func:`update_file`: ``group`` is absent or marked ``partial``.

    A partial result never replaces a complete one.
    """

    def check(f: h5py.File, path: Path) -> None:
        if group in f and not bool(plain(f[group].attrs.get("partial", False))):
            raise ResultsConflict(f"the complete /{group} in {path} was kept")

    return check


def all_of(*checks: Check | None) -> Check:
    """One ``check`` that runs each of ``checks`` (None skipped)."""

    def check(f: h5py.File, path: Path) -> None:
        for one in checks:
            if one is not None:
                one(f, path)

    return check


def _memory_limit() -> int:
    """The largest existing file rewritten in memory (a quarter of the memory available)."""
    free = available_bytes("cpu")
    return max(256 * 1024**2, free // 4) if free else 1024**3


# --------------------------------------------------------------------------------------------------
# writing


def update_file(
    path: str | os.PathLike[str],
    root: Mapping[str, Any],
    mutate: Callable[[h5py.File], None],
    *,
    drop_foreign: bool = False,
    check: Check | None = None,
) -> Path:
    """Change a results file atomically under its lock, keeping every group ``mutate`` leaves alone.

    Under the lock of ``path`` (:func:`landscape_cli.files.locked`): copy the existing file (if
    any) into a new one in memory, call ``check(f, path)`` on that copy (it raises
    :class:`ResultsConflict` when the file holds what this write must not replace), call
    ``mutate(f)`` on it (it deletes and recreates the groups it owns), set the root attributes
    (``schema``, ``schema_version``, ``tool_version``, then every non-None item of ``root``), and
    write it over ``path`` with :func:`landscape_cli.files.write_atomic`.

    A results file describes one checkpoint: when the existing file's root ``checkpoint_sha256``
    differs from ``root["checkpoint_sha256"]``, :class:`ResultsConflict` is raised, unless
    ``drop_foreign``, in which case none of the existing file's groups are kept.

    If ``check`` or ``mutate`` raises, the original file is left byte-identical and nothing else is
    left behind. An existing file that is not HDF5 or lacks this schema raises
    :class:`ResultsConflict` and is not touched; a write that fails for an outside reason (a full
    disk) raises :class:`ResultsWriteError`. Missing parent folders are created. Returns ``path``
    as a Path.
    """
    target = Path(path)
    try:
        files.ensure_parent(target, "results file")
        with files.locked(target, what="results file"):
            exists = target.exists()
            if exists:
                _check_replaceable(target)
            fill = functools.partial(
                _fill, existing=target if exists else None, root=root, mutate=mutate,
                drop_foreign=drop_foreign, check=check, path=target,
            )  # fmt: skip
            size = target.stat().st_size if exists else 0
            if size <= _memory_limit():
                files.write_atomic(target, _image(fill), what="results file")
            else:  # too large to copy in memory: HDF5 writes on disk, after a space check
                need = size * 5 // 4 + 16 * 1024**2
                files.write_atomic(target, _on_disk(fill), what="results file", size=need)
    except ResultsWriteError:
        raise
    except files.WriteError as exc:
        raise ResultsWriteError(str(exc)) from None
    return target


def _check_replaceable(target: Path) -> None:
    """An existing ``target`` must be a regular HDF5 file (checked under the lock)."""
    try:
        files.check_input(target, "results file")
    except LandscapeError as exc:
        raise ResultsConflict(f"{exc}; refusing to replace it") from None
    if target.is_dir():
        raise ResultsConflict(f"the results file {target} is a folder; give a file path")
    if not h5py.is_hdf5(target):
        raise ResultsConflict(f"{target} exists and is not an HDF5 file; refusing to overwrite it")


def _image(fill: Callable[[h5py.File], None]) -> memoryview:
    """The bytes of the HDF5 file that ``fill`` writes, built in memory."""
    buffer = io.BytesIO()
    with h5py.File(buffer, "w") as out:
        fill(out)
    return buffer.getbuffer()


def _on_disk(fill: Callable[[h5py.File], None]) -> Callable[[Path], None]:
    """A filler of :func:`landscape_cli.files.write_atomic` that lets HDF5 write ``fill``'s file."""

    def write(tmp: Path) -> None:
        with h5py.File(tmp, "w") as out:
            fill(out)

    return write


def _fill(
    out: h5py.File,
    *,
    existing: Path | None,
    root: Mapping[str, Any],
    mutate: Callable[[h5py.File], None],
    drop_foreign: bool,
    check: Check | None,
    path: Path,
) -> None:
    """Write the new file into ``out``: the existing content, ``check``, ``mutate``, the root."""
    if existing is not None:
        try:
            _copy_existing(existing, out, root.get("checkpoint_sha256"), drop_foreign)
        except (OSError, RuntimeError, KeyError, ValueError) as exc:
            raise ResultsConflict(
                f"results file {existing} cannot be read back ({one_line(exc)})"
            ) from None
    if check is not None:
        check(out, path)
    mutate(out)
    _set_root(out, root)
    out.flush()


def _copy_existing(
    target: Path, out: h5py.File, checkpoint_sha256: str | None, drop_foreign: bool
) -> None:
    """Copy ``target``'s root attributes and objects into ``out``.

    Refuse a file without this schema, or one of another checkpoint (whose content is dropped with
    ``drop_foreign``).
    """
    try:
        src = h5py.File(target, "r")
    except OSError as exc:
        raise ResultsConflict(f"cannot open results file {target}: {one_line(exc)}") from None
    with src:
        try:
            _check_schema(src, target)
        except LandscapeError as exc:
            raise ResultsConflict(str(exc)) from None
        other = _foreign(src, checkpoint_sha256)
        if other and not drop_foreign:
            raise ResultsConflict(_foreign_message(target, other))
        if not other:
            for key in src.attrs:
                dtype = src.attrs.get_id(key).dtype
                out.attrs.create(key, data=src.attrs[key], dtype=dtype)
            for name in src:
                src.copy(src[name], out, name=name)


def _set_root(out: h5py.File, root: Mapping[str, Any]) -> None:
    """The root attributes: schema, schema version, tool version, then ``root``'s (not None)."""
    set_attr(out, "schema", SCHEMA)
    out.attrs["schema_version"] = np.int64(SCHEMA_VERSION)
    set_attr(out, "tool_version", __version__)
    for key, value in root.items():
        if key not in ("schema", "schema_version", "tool_version"):
            set_attr(out, key, value)


def member_name(name: str) -> str:
    """``name`` checked as an HDF5 member name (a parameter's name: dots kept, no slash)."""
    if not name or "/" in name or name in (".", ".."):
        raise ValueError(f"parameter name {name!r} cannot be an HDF5 member name")
    return name


# --------------------------------------------------------------------------------------------------
# reading


#: The root attributes' kinds (:mod:`.typed`); any other root attribute is read as plain data.
ROOT_KINDS = {
    "schema": typed.STR,
    "schema_version": typed.INT,
    "tool_version": typed.STR,
    "checkpoint": typed.STR,
    "checkpoint_sha256": typed.STR,
    "label": typed.STR,
    "model": typed.STR,
    "dataset": typed.STR,
    "state_dict_prefix": typed.STR,
}


def read_root(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Return the root attributes of a results file as plain Python values, each checked."""
    with open_read(path) as f:
        return typed.attrs(f, ROOT_KINDS, others=True)


def list_groups(path: str | os.PathLike[str]) -> list[str]:
    """Return the result groups of a file, sorted: e.g. ``["hessian", "scan/1d-random"]``.

    A top-level group with no attributes whose members are all groups (like ``/scan``) is a
    container: its children are listed as ``"<container>/<child>"`` instead of itself (an empty
    container is listed by its own name).
    """
    names: list[str] = []
    with open_read(path) as f:
        for name, obj in f.items():
            if not isinstance(obj, h5py.Group):
                continue
            members = list(obj.values())
            container = (
                len(members) > 0
                and len(obj.attrs) == 0
                and all(isinstance(m, h5py.Group) for m in members)
            )
            if container:
                names.extend(f"{name}/{child}" for child in obj)
            else:
                names.append(name)
    return sorted(names)


def rescue_path(path: str | os.PathLike[str], label: str = "rescued") -> Path:
    """A fresh file name for a result that could not go to ``path`` (nothing is created).

    ``<stem>.<label>-<random>.h5`` in the first existing folder among ``path``'s, the working
    folder and the temporary folder (:func:`landscape_cli.files.rescue_folders`).
    """
    p = Path(path)
    places = files.rescue_folders(p)
    if not places:
        raise LandscapeError(f"cannot write results file {p}, nor any rescue copy")
    return places[0] / files.rescue_name(p.with_suffix(".h5"), label)


def verify_readable(path: str | os.PathLike[str]) -> None:
    """Read every object of the results file ``path`` (a rescue copy is checked so)."""
    p = Path(path)
    with open_read(p) as f:
        _read_everything(f, p)


def write_or_rescue(
    path: str | os.PathLike[str],
    write: Callable[[Path], Path],
    *,
    product: str = "the finished result",
) -> Path:
    """Run ``write(path)``, falling back to a fresh file.

    If that fails for a reason outside the result (:class:`~landscape_cli.files.WriteError`: a
    full disk) or conflicts with what the file holds now (:class:`ResultsConflict`: another run
    wrote the group meanwhile with other options), ``write`` a fresh
    ``<stem>.rescued-<random>.h5`` in the first place that takes it among ``path``'s folder, the
    working folder and the temporary folder, read it back, and raise one line naming it.
    """
    target = Path(path)
    try:
        return write(target)
    except (files.WriteError, ResultsConflict) as exc:
        first = exc
    try:
        saved = files.rescue(target, write, what="results file", verify=verify_readable)
    except files.WriteError as again:
        raise LandscapeError(f"{first}; {again}") from first
    raise LandscapeError(f"{first}; {product} was saved to {saved} instead") from first
