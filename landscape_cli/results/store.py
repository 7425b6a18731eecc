"""The store under every results group.

The locked atomic rewrite, attribute encoding, the root (provenance) attributes, and the checks a
command runs before computing.

Writes (:func:`update_file`, and every group's writer on top of it) take an exclusive
``fcntl.flock`` on the sidecar ``<file>.lock`` (left in place: removing it would race), copy the
existing file's objects and root attributes into a temporary file in the same folder, let the caller
change that copy, refresh the root attributes, fsync, and ``os.replace`` it over the target. A crash
leaves either the old or the new file, never a torn one; concurrent writers adding different groups
never lose each other's groups. An existing file that is not HDF5, or is HDF5 without this schema,
is refused with :class:`~landscape_cli.errors.LandscapeError` and left untouched.

Attributes: strings are variable-length UTF-8 ``str``, never bytes; lists of strings are 1-D
string arrays; mappings are JSON text; None is not written (:func:`set_attr`). Read back, they
are plain Python values and numpy arrays (:func:`plain`).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import secrets
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from landscape_cli.errors import LandscapeError
from landscape_cli.results import typed

if TYPE_CHECKING:
    import h5py

SCHEMA = "landscape-results"
SCHEMA_VERSION = 1


class DictView(Mapping[str, Any]):
    """Read-only ``result["key"]`` access to a frozen result, as the readers' dicts had it.

    The typed fields are the interface; this view keeps the keys that the readers returned before
    they returned dataclasses (documented per class in :meth:`_view`), so scripts that index a
    result keep working. The view is built once, on first use.
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


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Return the hex SHA-256 of a file, read in 1 MiB chunks.

    For a Hugging Face model folder: the SHA-256 of the lines ``<name> <sha256>`` of its weight
    files (``*.safetensors``, ``*.bin`` and their index files), sorted by name.
    """
    if os.path.isdir(path):
        from landscape_cli.models.hf import weight_files

        lines = [f"{f.name} {sha256_file(f)}\n" for f in weight_files(Path(path))]
        return hashlib.sha256("".join(lines).encode()).hexdigest()
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def set_attr(obj: h5py.HLObject, name: str, value: Any) -> None:
    """Store ``value`` as attribute ``name``: str as UTF-8 str, lists of str as string arrays.

    ``None`` is skipped; paths become str; dicts become JSON strings; an empty list becomes an
    empty string array; numbers and numeric sequences are stored as they are.
    """
    import h5py

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
    from landscape_cli.results import typed as t

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
    import h5py

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
        raise LandscapeError(f"cannot open results file {p}: {_one_line(exc)}") from exc
    with f:
        try:
            _check_schema(f, p)
            typed.walk(f)  # no soft, external or looping links: a reader never leaves the file
            yield f
        except (OSError, KeyError, RuntimeError, ValueError, TypeError) as exc:  # h5py, damaged
            raise LandscapeError(
                f"results file {p} is damaged ({_one_line(exc)}); move it away or choose "
                "another file"
            ) from exc


class ResultsWriteError(LandscapeError):
    """Writing a results file failed for a reason outside the file's content.

    Writing a results file failed for a reason outside the file's content (disk full, a
    folder that vanished, permissions): the caller may save its result elsewhere.
    """


def check_folder(
    folder: str | os.PathLike[str], what: str = "output", target: Path | None = None
) -> None:
    """Refuse early a folder that cannot be created or written.

    The nearest existing ancestor must be a folder this process may write into (or ``folder``
    itself, if it exists). ``target`` is the file the message names (default: the folder).
    """
    p = Path(target) if target is not None else Path(folder)
    probe = Path(folder)
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    probe = probe if str(probe) else Path(".")
    if probe.exists() and not probe.is_dir():
        raise LandscapeError(
            f"cannot write the {what} {p}: {probe} is a file, not a folder; choose another path"
        )
    if not os.access(probe, os.W_OK | os.X_OK):
        raise LandscapeError(f"cannot write the {what} {p}: folder {probe} is not writable")


def check_output_file(path: str | os.PathLike[str], what: str = "output file") -> None:
    """Refuse early an output file path that cannot be written.

    Refuse early an output file path that cannot be written (a folder, or in a folder that
    cannot be created or written).
    """
    p = Path(path)
    if p.is_dir():
        raise LandscapeError(f"the {what} {p} is a folder; give a file path")
    check_folder(p.parent if str(p.parent) else Path("."), what, p)


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
    import h5py

    p = Path(path)
    check_output_file(p, "results file")
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
    import h5py

    def visit(name: str, obj: Any) -> None:
        attrs_of(obj)
        if isinstance(obj, h5py.Dataset):
            obj[()]

    try:
        attrs_of(f)
        f.visititems(visit)
    except (OSError, RuntimeError, KeyError, ValueError, TypeError) as exc:
        raise LandscapeError(
            f"results file {path} is damaged ({_one_line(exc)}); move it away or choose "
            "another `out`"
        ) from exc


def check_groups(f: h5py.File) -> None:
    """Read every group landscape knows through its typed reader; the first bad value raises.

    The root attributes, ``/hessian``, ``/audit`` (and ``/audit/hessian``) and every scan: run
    before computing, so that nothing read from the file after computing can fail.
    """
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


def settings_mismatch(stored: Mapping[str, Any] | None, wanted: Mapping[str, Any]) -> list[str]:
    """The options that differ between a group's stored ``settings`` and ``wanted``.

    The options that differ between a group's stored ``settings`` and ``wanted`` (as
    ``"key stored vs wanted"``); empty when they agree or the group records none (older files).
    """
    if not stored:
        return []
    out = []
    for key in sorted(set(stored) | set(wanted)):
        a, b = stored.get(key), wanted.get(key)
        if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
            same = float(a) == float(b)
        else:
            same = a == b
        if not same:
            out.append(f"{key} {a!r} vs {b!r}")
    return out


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


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``<path>.lock`` (a no-op where ``fcntl`` is missing)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - non-POSIX
        yield
        return
    lock_path = path.with_name(path.name + ".lock")
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


# --------------------------------------------------------------------------------------------------
# writing


def update_file(
    path: str | os.PathLike[str],
    root: Mapping[str, Any],
    mutate: Callable[[h5py.File], None],
    *,
    drop_foreign: bool = False,
) -> Path:
    """Change a results file atomically under its lock, keeping every group ``mutate`` leaves alone.

    Under an exclusive lock on ``<path>.lock``: copy the existing file (if any) into a temporary
    file beside it, call ``mutate(f)`` on that open, writable copy (it deletes and recreates the
    groups it owns), set the root attributes (``schema``, ``schema_version``, ``tool_version``,
    then every non-None item of ``root``), flush, fsync and ``os.replace`` the copy over ``path``.

    A results file describes one checkpoint: when the existing file's root ``checkpoint_sha256``
    differs from ``root["checkpoint_sha256"]``, ``LandscapeError`` is raised, unless
    ``drop_foreign``, in which case none of the existing file's groups are kept.

    If ``mutate`` raises, the original file is left byte-identical and the temporary file is
    removed. An existing file that is not HDF5 or lacks this schema raises ``LandscapeError`` and
    is not touched. Missing parent folders are created. Returns ``path`` as a Path.
    """
    import h5py

    target = Path(path)
    folder = target.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ResultsWriteError(f"cannot create folder {folder}: {_one_line(exc)}") from exc
    with _locked(target):
        # Every writer holds the lock while its temporary file exists, so any temporary file
        # found now was left by a writer that was killed: remove it.
        for stale in folder.glob(f".{target.name}.*.tmp"):
            with contextlib.suppress(OSError):
                stale.unlink()
        exists = target.exists()
        if exists and not (target.is_file() and h5py.is_hdf5(target)):
            raise LandscapeError(
                f"{target} exists and is not an HDF5 file; refusing to overwrite it"
            )
        tmp = _new_temp(target)
        try:
            with h5py.File(tmp, "w") as out:
                if exists:
                    _copy_existing(target, out, root.get("checkpoint_sha256"), drop_foreign)
                mutate(out)
                _set_root(out, root)
                out.flush()
            _replace(tmp, target, exists)
        except BaseException as exc:
            with contextlib.suppress(OSError):
                tmp.unlink()
            if isinstance(exc, OSError):
                raise ResultsWriteError(
                    f"cannot write results file {target}: {_one_line(exc)}"
                ) from exc
            raise
        _fsync_dir(folder)
    return target


def _new_temp(target: Path) -> Path:
    """A fresh, empty temporary file beside ``target`` (call with the lock held)."""
    tmp = target.parent / f".{target.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    except OSError as exc:
        raise ResultsWriteError(f"cannot write results file {target}: {_one_line(exc)}") from exc
    os.close(fd)
    return tmp


def _copy_existing(
    target: Path, out: h5py.File, checkpoint_sha256: str | None, drop_foreign: bool
) -> None:
    """Copy ``target``'s root attributes and objects into ``out``.

    Refuse a file without this schema, or one of another checkpoint (whose content is dropped with
    ``drop_foreign``).
    """
    import h5py

    try:
        src = h5py.File(target, "r")
    except OSError as exc:
        raise LandscapeError(f"cannot open results file {target}: {_one_line(exc)}") from exc
    with src:
        _check_schema(src, target)
        other = _foreign(src, checkpoint_sha256)
        if other and not drop_foreign:
            raise LandscapeError(_foreign_message(target, other))
        if not other:
            for key in src.attrs:
                dtype = src.attrs.get_id(key).dtype
                out.attrs.create(key, data=src.attrs[key], dtype=dtype)
            for name in src:
                src.copy(src[name], out, name=name)


def _set_root(out: h5py.File, root: Mapping[str, Any]) -> None:
    """The root attributes: schema, schema version, tool version, then ``root``'s (not None)."""
    from landscape_cli import __version__

    set_attr(out, "schema", SCHEMA)
    out.attrs["schema_version"] = np.int64(SCHEMA_VERSION)
    set_attr(out, "tool_version", __version__)
    for key, value in root.items():
        if key not in ("schema", "schema_version", "tool_version"):
            set_attr(out, key, value)


def _replace(tmp: Path, target: Path, exists: bool) -> None:
    """Fsync the finished ``tmp`` and move it over ``target``, keeping ``target``'s mode."""
    fd = os.open(tmp, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    if exists:  # keep the file's mode (set only now: a read-only copy cannot be written)
        with contextlib.suppress(OSError):
            os.chmod(tmp, target.stat().st_mode & 0o7777)
    os.replace(tmp, target)


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
    import h5py

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


def rescue_path(path: str | os.PathLike[str]) -> Path:
    """A fresh file name for saving a finished result whose write to ``path`` failed.

    A fresh file name beside ``path`` (else in the working or temporary folder) for saving a
    finished result whose write to ``path`` failed.
    """
    import tempfile

    p = Path(path)
    for folder in (p.parent, Path.cwd(), Path(tempfile.gettempdir())):
        try:
            fd, name = tempfile.mkstemp(prefix=f"{p.stem}.rescued-", suffix=".h5", dir=folder)
        except OSError:
            continue
        os.close(fd)
        os.unlink(name)
        return Path(name)
    raise LandscapeError(f"cannot write results file {p}, nor any rescue copy")


def write_or_rescue(
    path: str | os.PathLike[str],
    write: Callable[[Path], Path],
) -> Path:
    """Run ``write(path)``, falling back to a fresh file.

    If that fails for a reason outside the file (:class:`ResultsWriteError`), ``write`` a fresh file
    beside it and raise one line naming where the result went.
    """
    try:
        return write(Path(path))
    except ResultsWriteError as exc:
        rescue = rescue_path(path)
        try:
            write(rescue)
        except ResultsWriteError:
            raise exc from None
        raise LandscapeError(f"{exc}; the finished result was saved to {rescue} instead") from exc
