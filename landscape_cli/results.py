"""The results file: one HDF5 file per checkpoint, written atomically under a file lock.

This is the only module of the project that imports ``h5py``. Every other module hands it frozen
dataclasses (or a ``mutate`` callback) and reads back plain Python and numpy values.

Schema (``schema="landscape-results"``, ``schema_version=1``)::

    /                       attrs: schema, schema_version, tool_version, checkpoint,
                                   checkpoint_sha256, label, model, dataset
                                   (+ any provenance the caller passes: argv, torch_version,
                                   cuda_version, ...; None values are not written)
    /hessian                attrs: samples, batch_size, seed, device, hvp_count, seconds,
                                   dtype, loss, split, bn_mode, num_params, loss_value, grad_norm,
                                   skipped_params (1-D array of str, possibly empty),
                                   partial (True only on a run cut short by Ctrl-C)
                                   when the top-k Lanczos ran: lambda_min, lambda_min_residual,
                                   lanczos_top_steps, lanczos_top_hvp_count, tol,
                                   lanczos_basis_dtype, lanczos_orthogonality
      eigenvalues           (k,) float64, algebraically descending
      residuals             (k,) float64, ||Hv - λv|| of each pair
      converged             (k,) bool, residual <= tol·|λ|
      eigenvectors/<param>  (k, *param.shape) float32, one per parameter, named by the parameter's
                            name (dots kept); group attr param_names (array of str) gives their
                            order in the flattened vector
      trace                 scalar float64; attrs: stderr, probes, method, ci95_low, ci95_high,
                            hvp_count, converged, rtol, note
      trace_samples         (n,) float64, one estimate per probe
      density/grid          (g,) float64
      density/density       (g,) float64, integrates to 1 over the grid
      density/nodes         (probes, steps) float64, Ritz values per probe
      density/weights       (probes, steps) float64, quadrature weights per probe
                            density attrs: sigma, lanczos_steps, probes, hvp_count, tol,
                            achieved_tol, max_probes, krylov_start
      per_layer/<param>     empty group per parameter; attrs: lambda_max, lambda_max_residual,
                            trace, trace_stderr, numel
    /scan/<name>            written by the scan module through :func:`update_file`

Datasets and groups of a part that was not computed (``report.top``/``trace``/``density`` None, no
per-layer entries, eigenvectors not kept) are absent, and so are their attributes. Strings are
variable-length UTF-8 ``str``, never bytes; lists of strings are 1-D string arrays. Groups that hold
per-parameter members are created with ``track_order=True``, so iteration follows the model's
parameter order.

Writes (:func:`update_file`, and :func:`write_hessian` on top of it) take an exclusive
``fcntl.flock`` on the sidecar ``<file>.lock`` (left in place: removing it would race), copy the
existing file's objects and root attributes into a temporary file in the same folder, let the caller
change that copy, refresh the root attributes, fsync, and ``os.replace`` it over the target. A crash
leaves either the old or the new file, never a torn one; concurrent writers adding different groups
never lose each other's groups. An existing file that is not HDF5, or is HDF5 without this schema,
is refused with :class:`~landscape_cli.errors.LandscapeError` and left untouched.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from landscape_cli.errors import LandscapeError

if TYPE_CHECKING:
    import h5py

    from landscape_cli.hessian.types import HessianReport

SCHEMA = "landscape-results"
SCHEMA_VERSION = 1

__all__ = [
    "SCHEMA",
    "SCHEMA_VERSION",
    "check_target",
    "list_groups",
    "read_audit",
    "read_hessian",
    "read_root",
    "read_scan",
    "scan_attrs",
    "scan_names",
    "set_scan_points",
    "sha256_file",
    "update_file",
    "write_audit",
    "write_hessian",
    "write_scan",
]


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


def _set_attr(obj: h5py.HLObject, name: str, value: Any) -> None:
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


def _plain(value: Any) -> Any:
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


def _attrs(obj: h5py.HLObject) -> dict[str, Any]:
    return {key: _plain(obj.attrs[key]) for key in obj.attrs}


def _check_schema(f: h5py.File, path: Path) -> None:
    schema = _plain(f.attrs.get("schema"))
    if schema != SCHEMA:
        raise LandscapeError(
            f"{path} is an HDF5 file but not a landscape results file "
            f"(schema attribute {schema!r}); choose another --out"
        )
    version = _plain(f.attrs.get("schema_version"))
    if not isinstance(version, int) or version > SCHEMA_VERSION:
        raise LandscapeError(
            f"{path} has results schema version {version!r}; this landscape reads up to "
            f"{SCHEMA_VERSION} (upgrade landscape or choose another --out)"
        )


@contextlib.contextmanager
def _open_read(path: str | os.PathLike[str]) -> Iterator[h5py.File]:
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
            yield f
        except (OSError, KeyError, RuntimeError) as exc:  # h5py on a damaged file
            raise LandscapeError(
                f"results file {p} is damaged ({_one_line(exc)}); move it away or choose "
                "another file"
            ) from exc


class ResultsWriteError(LandscapeError):
    """Writing a results file failed for a reason outside the file's content (disk full, a
    folder that vanished, permissions): the caller may save its result elsewhere."""


def check_folder(
    folder: str | os.PathLike[str], what: str = "output", target: Path | None = None
) -> None:
    """Refuse early a folder that cannot be created or written: the nearest existing ancestor
    must be a folder this process may write into (or ``folder`` itself, if it exists).
    ``target`` is the file the message names (default: the folder)."""
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
    """Refuse early an output file path that cannot be written (a folder, or in a folder that
    cannot be created or written)."""
    p = Path(path)
    if p.is_dir():
        raise LandscapeError(f"the {what} {p} is a folder; give a file path")
    check_folder(p.parent if str(p.parent) else Path("."), what, p)


def check_target(
    path: str | os.PathLike[str],
    checkpoint_sha256: str | None = None,
    *,
    drop_foreign: bool = False,
    way_out: str = "pass --out FILE to keep them apart, or --overwrite to drop them",
) -> None:
    """Refuse early (before any computing) a ``--out`` that :func:`update_file` would refuse or
    fail on: a path whose folder cannot be written, an existing file that is not HDF5, an HDF5
    file without this schema, one whose groups cannot all be read (a damaged file), or (given
    ``checkpoint_sha256``, unless ``drop_foreign``) a results file of another checkpoint."""
    import h5py

    p = Path(path)
    check_output_file(p, "results file")
    if not p.exists():
        return
    if not (p.is_file() and h5py.is_hdf5(p)):
        raise LandscapeError(f"{p} exists and is not an HDF5 file; refusing to overwrite it")
    with _open_read(p) as f:
        _read_everything(f, p)
        other = _foreign(f, checkpoint_sha256)
        if other and not drop_foreign:
            raise LandscapeError(_foreign_message(p, other, way_out))


def _read_everything(f: h5py.File, path: Path) -> None:
    """Open every object of ``f`` and read its attributes and data: :func:`update_file` copies
    them all, so a damaged one must be found before any computing, not after."""
    import h5py

    def visit(name: str, obj: Any) -> None:
        _attrs(obj)
        if isinstance(obj, h5py.Dataset):
            obj[()]

    try:
        _attrs(f)
        f.visititems(visit)
    except (OSError, RuntimeError, KeyError, ValueError) as exc:
        raise LandscapeError(
            f"results file {path} is damaged ({_one_line(exc)}); move it away or choose "
            "another --out"
        ) from exc


def _foreign(f: h5py.File, checkpoint_sha256: str | None) -> str | None:
    """The checkpoint file named by ``f``'s root when its SHA-256 is not ``checkpoint_sha256``."""
    if not checkpoint_sha256:
        return None
    stored = _plain(f.attrs.get("checkpoint_sha256"))
    if not stored or stored == checkpoint_sha256:
        return None
    return str(_plain(f.attrs.get("checkpoint", "")) or "another checkpoint") + f" ({stored[:12]})"


def _foreign_message(
    path: Path,
    other: str,
    way_out: str = "pass --out FILE to keep them apart, or --overwrite to drop them",
) -> str:
    return f"{path} holds the results of {other}, a different checkpoint; {way_out}"


def settings_mismatch(stored: Mapping[str, Any] | None, wanted: Mapping[str, Any]) -> list[str]:
    """The options that differ between a group's stored ``settings`` and ``wanted`` (as
    ``"key stored vs wanted"``); empty when they agree or the group records none (older files)."""
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
    """The ``settings`` (a JSON attribute) of ``group`` in ``path``; ``{}`` for a group that
    records none, None when the file or the group does not exist."""
    p = Path(path)
    if not p.exists():
        return None
    with _open_read(p) as f:
        if group not in f:
            return None
        raw = _plain(f[group].attrs.get("settings"))
        return json.loads(raw) if raw else {}


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
    differs from ``root["checkpoint_sha256"]``, :class:`~landscape_cli.errors.LandscapeError` is
    raised (see :func:`foreign_checkpoint`), unless ``drop_foreign``, in which case none of the
    existing file's groups are kept.

    If ``mutate`` raises, the original file is left byte-identical and the temporary file is
    removed. An existing file that is not HDF5 or lacks this schema raises
    :class:`~landscape_cli.errors.LandscapeError` and is not touched. Missing parent folders are
    created. Returns ``path`` as a Path.
    """
    import h5py

    from landscape_cli import __version__

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
        tmp = folder / f".{target.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except OSError as exc:
            raise ResultsWriteError(
                f"cannot write results file {target}: {_one_line(exc)}"
            ) from exc
        os.close(fd)
        try:
            with h5py.File(tmp, "w") as out:
                if exists:
                    try:
                        src = h5py.File(target, "r")
                    except OSError as exc:
                        raise LandscapeError(
                            f"cannot open results file {target}: {_one_line(exc)}"
                        ) from exc
                    with src:
                        _check_schema(src, target)
                        other = _foreign(src, root.get("checkpoint_sha256"))
                        if other and not drop_foreign:
                            raise LandscapeError(_foreign_message(target, other))
                        if not other:
                            for key in src.attrs:
                                dtype = src.attrs.get_id(key).dtype
                                out.attrs.create(key, data=src.attrs[key], dtype=dtype)
                            for name in src:
                                src.copy(src[name], out, name=name)
                mutate(out)
                _set_attr(out, "schema", SCHEMA)
                out.attrs["schema_version"] = np.int64(SCHEMA_VERSION)
                _set_attr(out, "tool_version", __version__)
                for key, value in root.items():
                    if key not in ("schema", "schema_version", "tool_version"):
                        _set_attr(out, key, value)
                out.flush()
            fd = os.open(tmp, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            if exists:  # keep the file's mode (set only now: a read-only copy cannot be written)
                with contextlib.suppress(OSError):
                    os.chmod(tmp, target.stat().st_mode & 0o7777)
            os.replace(tmp, target)
        except OSError as exc:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise ResultsWriteError(
                f"cannot write results file {target}: {_one_line(exc)}"
            ) from exc
        except BaseException:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise
        _fsync_dir(folder)
    return target


def _check_member_name(name: str) -> str:
    if not name or "/" in name or name in (".", ".."):
        raise ValueError(f"parameter name {name!r} cannot be an HDF5 member name")
    return name


def _write_hessian_group(
    f: h5py.File,
    report: HessianReport,
    at: str = "hessian",
    attrs: Mapping[str, Any] | None = None,
) -> None:
    if at in f:
        del f[at]
    g = f.create_group(at)
    for key, value in (attrs or {}).items():
        _set_attr(g, key, value)
    for key in ("samples", "batch_size", "seed", "hvp_count", "num_params"):
        g.attrs[key] = np.int64(getattr(report, key))
    for key in ("seconds", "loss_value", "grad_norm"):
        g.attrs[key] = np.float64(getattr(report, key))
    for key in ("device", "dtype", "loss", "split", "bn_mode"):
        _set_attr(g, key, str(getattr(report, key)))
    _set_attr(g, "skipped_params", list(report.skipped_params))

    top = report.top
    if top is not None:
        g.create_dataset("eigenvalues", data=np.asarray(top.eigenvalues, dtype=np.float64))
        g.create_dataset("residuals", data=np.asarray(top.residuals, dtype=np.float64))
        g.create_dataset("converged", data=np.asarray(top.converged, dtype=bool))
        g.attrs["lambda_min"] = np.float64(top.lambda_min)
        g.attrs["lambda_min_residual"] = np.float64(top.lambda_min_residual)
        g.attrs["lanczos_top_steps"] = np.int64(top.steps)
        g.attrs["lanczos_top_hvp_count"] = np.int64(top.hvp_count)
        g.attrs["tol"] = np.float64(top.tol)
        if top.basis_dtype:  # not with --engine pyhessian (no Krylov basis)
            _set_attr(g, "lanczos_basis_dtype", str(top.basis_dtype))
            g.attrs["lanczos_orthogonality"] = np.float64(top.orthogonality)
        if top.eigenvectors is not None:
            _write_eigenvectors(g, report, np.asarray(top.eigenvectors))

    tr = report.trace
    if tr is not None:
        d = g.create_dataset("trace", data=np.float64(tr.estimate))
        d.attrs["stderr"] = np.float64(tr.stderr)
        d.attrs["probes"] = np.int64(tr.probes)
        _set_attr(d, "method", str(tr.method))
        d.attrs["ci95_low"] = np.float64(tr.ci95[0])
        d.attrs["ci95_high"] = np.float64(tr.ci95[1])
        d.attrs["hvp_count"] = np.int64(tr.hvp_count)
        d.attrs["converged"] = np.bool_(tr.converged)
        d.attrs["rtol"] = np.float64(tr.rtol)
        _set_attr(d, "note", str(tr.note))
        g.create_dataset("trace_samples", data=np.asarray(tr.samples, dtype=np.float64))

    den = report.density
    if den is not None:
        dg = g.create_group("density")
        for key in ("grid", "density", "nodes", "weights"):
            dg.create_dataset(key, data=np.asarray(getattr(den, key), dtype=np.float64))
        dg.attrs["sigma"] = np.float64(den.sigma)
        dg.attrs["lanczos_steps"] = np.int64(den.lanczos_steps)
        dg.attrs["probes"] = np.int64(den.probes)
        dg.attrs["hvp_count"] = np.int64(den.hvp_count)
        dg.attrs["tol"] = np.float64(den.tol)  # W1 error / range asked for (0: fixed probes)
        dg.attrs["achieved_tol"] = np.float64(den.achieved_tol)  # estimated W1 error / range
        dg.attrs["max_probes"] = np.int64(den.max_probes)
        dg.attrs["krylov_start"] = np.bool_(den.krylov_start)

    if report.per_layer:
        pg = g.create_group("per_layer", track_order=True)
        for layer in report.per_layer:
            lg = pg.create_group(_check_member_name(layer.name))
            lg.attrs["lambda_max"] = np.float64(layer.lambda_max)
            lg.attrs["lambda_max_residual"] = np.float64(layer.lambda_max_residual)
            lg.attrs["trace"] = np.float64(layer.trace)
            lg.attrs["trace_stderr"] = np.float64(layer.trace_stderr)
            lg.attrs["numel"] = np.int64(layer.numel)


def _write_eigenvectors(g: h5py.Group, report: HessianReport, vectors: np.ndarray) -> None:
    names, shapes = report.param_names, report.param_shapes
    if len(names) != len(shapes):
        raise ValueError(f"{len(names)} param_names but {len(shapes)} param_shapes")
    if vectors.ndim != 2:
        raise ValueError(f"eigenvectors must be (k, n), got shape {vectors.shape}")
    sizes = [int(np.prod(shape, dtype=np.int64)) for shape in shapes]
    if sum(sizes) != vectors.shape[1]:
        raise ValueError(
            f"eigenvectors have {vectors.shape[1]} entries per vector but the parameter shapes "
            f"add up to {sum(sizes)}"
        )
    k = vectors.shape[0]
    eg = g.create_group("eigenvectors", track_order=True)
    _set_attr(eg, "param_names", list(names))
    offset = 0
    for name, shape, size in zip(names, shapes, sizes, strict=True):
        block = vectors[:, offset : offset + size].astype(np.float32, copy=False)
        eg.create_dataset(_check_member_name(name), data=block.reshape((k, *shape)))
        offset += size


def has_hessian(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` exists and holds a complete ``/hessian`` (not one marked partial)."""
    import h5py

    if not Path(path).exists():
        return False
    with _open_read(path) as f:
        g = f.get("hessian")
        return isinstance(g, h5py.Group) and not bool(_plain(g.attrs.get("partial", False)))


def write_hessian(
    path: str | os.PathLike[str],
    report: HessianReport,
    *,
    root: Mapping[str, Any],
    partial: bool = False,
    attrs: Mapping[str, Any] | None = None,
    drop_foreign: bool = False,
) -> Path:
    """Write ``report`` as the ``/hessian`` group of ``path``, replacing any earlier one.

    ``root`` supplies the root attributes (checkpoint, checkpoint_sha256, label, model, dataset,
    and any provenance such as argv, torch_version, cuda_version); None values are not written.
    ``attrs`` adds attributes to the group (checkpoint_sha256, samples_sha256, settings).
    Other groups of an existing file (scans) are kept. See :func:`update_file` for the guarantees.
    ``partial`` marks a result cut short by an interrupt (attribute ``partial=True``).
    """

    def mutate(f: h5py.File) -> None:
        _write_hessian_group(f, report, "hessian", attrs)
        if partial:
            f["hessian"].attrs["partial"] = np.bool_(True)

    return update_file(path, root, mutate, drop_foreign=drop_foreign)


# --------------------------------------------------------------------------------------------------
# reading


def read_root(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Return the root attributes of a results file as plain Python values."""
    with _open_read(path) as f:
        return _attrs(f)


def list_groups(path: str | os.PathLike[str]) -> list[str]:
    """Return the result groups of a file, sorted: e.g. ``["hessian", "scan/1d-random"]``.

    A top-level group with no attributes whose members are all groups (like ``/scan``) is a
    container: its children are listed as ``"<container>/<child>"`` instead of itself (an empty
    container is listed by its own name).
    """
    import h5py

    names: list[str] = []
    with _open_read(path) as f:
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


def read_hessian(path: str | os.PathLike[str], group: str = "hessian") -> dict[str, Any]:
    """Read ``/hessian`` (or another group of the same layout, such as ``audit/hessian``) back
    as plain Python and numpy values.

    Keys: ``attrs`` (all /hessian attributes; ``skipped_params`` a list of str), ``eigenvalues``,
    ``residuals``, ``converged`` (arrays or None), ``lambda_min``, ``lambda_min_residual`` (float or
    None), ``trace``, ``trace_stderr`` (float or None), ``trace_samples`` (array or None),
    ``method`` (str or None), ``trace_attrs`` (dict, empty when no trace), ``density`` (dict with
    grid, density, nodes, weights and the group's attributes, or None), ``per_layer``
    ({name: attrs}, in parameter order) and, only when eigenvectors were kept, ``eigenvectors``
    ({name: (k, *shape) float32 array}, in parameter order).
    """
    import h5py

    with _open_read(path) as f:
        if group not in f or not isinstance(f[group], h5py.Group):
            raise LandscapeError(
                f"{path} has no Hessian results; run `landscape hessian` on its checkpoint first"
            )
        g = f[group]
        attrs = _attrs(g)
        out: dict[str, Any] = {"attrs": attrs}
        for key in ("eigenvalues", "residuals", "converged"):
            out[key] = g[key][()] if key in g else None
        out["lambda_min"] = attrs.get("lambda_min")
        out["lambda_min_residual"] = attrs.get("lambda_min_residual")
        if "trace" in g:
            t = g["trace"]
            trace_attrs = _attrs(t)
            out["trace"] = float(t[()])
            out["trace_stderr"] = trace_attrs.get("stderr")
            out["method"] = trace_attrs.get("method")
            out["trace_attrs"] = trace_attrs
        else:
            out.update(trace=None, trace_stderr=None, method=None, trace_attrs={})
        out["trace_samples"] = g["trace_samples"][()] if "trace_samples" in g else None
        if "density" in g:
            dg = g["density"]
            density = {key: dg[key][()] for key in ("grid", "density", "nodes", "weights")}
            density.update(_attrs(dg))
            out["density"] = density
        else:
            out["density"] = None
        out["per_layer"] = (
            {name: _attrs(member) for name, member in g["per_layer"].items()}
            if "per_layer" in g
            else {}
        )
        if "eigenvectors" in g:
            eg = g["eigenvectors"]
            order = _plain(eg.attrs.get("param_names", np.array([], dtype=object)))
            order = [n for n in order if n in eg] + [n for n in eg if n not in order]
            out["eigenvectors"] = {name: eg[name][()] for name in order}
        return out


# -- scans ---------------------------------------------------------------------------------------


def scan_attrs(path: str | os.PathLike[str], name: str) -> dict[str, Any] | None:
    """The attributes of ``/scan/<name>``, or None when the file or the scan does not exist."""
    p = Path(path)
    if not p.exists():
        return None
    with _open_read(p) as f:
        key = f"scan/{name}"
        return _attrs(f[key]) if key in f else None


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
) -> Path:
    """Create (or replace) ``/scan/<name>``: coordinates, loss/accuracy grids, directions.

    ``directions`` maps an axis (``"x"``, ``"y"``) to ``{parameter name: array}``; each array is
    stored under ``directions/<axis>/<parameter name>``. ``loss``/``accuracy`` hold NaN where a
    point is not computed yet; for 2-D scans they are shaped (ny, nx).
    """

    def mutate(f: h5py.File) -> None:
        key = f"scan/{name}"
        if key in f:
            del f[key]
        g = f.require_group("scan").create_group(name)
        for k, v in attrs.items():
            _set_attr(g, k, v)
        g.create_dataset("x", data=np.asarray(x, dtype=np.float64))
        if y is not None:
            g.create_dataset("y", data=np.asarray(y, dtype=np.float64))
        g.create_dataset("loss", data=np.asarray(loss, dtype=np.float64))
        g.create_dataset("accuracy", data=np.asarray(accuracy, dtype=np.float64))
        dg = g.create_group("directions")
        for axis, params in directions.items():
            ag = dg.create_group(axis, track_order=True)
            for pname, arr in params.items():
                ag.create_dataset(_check_member_name(pname), data=np.asarray(arr))

    return update_file(path, root, mutate, drop_foreign=drop_foreign)


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

    return update_file(path, root, mutate)


def scan_names(path: str | os.PathLike[str]) -> list[str]:
    with _open_read(path) as f:
        return sorted(f["scan"]) if "scan" in f else []


def read_scan(
    path: str | os.PathLike[str], name: str | None = None, *, directions: bool = False
) -> dict[str, Any]:
    """Read ``/scan/<name>`` back: ``{name, dim, kind, x, y, loss, accuracy, attrs}``.

    ``y`` is None for 1-D scans; ``loss``/``accuracy`` are (nx,) or (ny, nx) with NaN where not yet
    computed. ``name`` may be omitted when the file holds exactly one scan. With ``directions``,
    ``directions`` maps each axis to ``{parameter name: array}`` (in parameter order).
    """
    with _open_read(path) as f:
        names = sorted(f["scan"]) if "scan" in f else []
        if not names:
            raise LandscapeError(
                f"{path} has no scans; run `landscape scan` on its checkpoint first"
            )
        if name is None:
            if len(names) > 1:
                raise LandscapeError(
                    f"{path} holds several scans ({', '.join(names)}); pass --name"
                )
            name = names[0]
        if name not in names:
            raise LandscapeError(f"{path} has no scan {name!r} (it has: {', '.join(names)})")
        g = f[f"scan/{name}"]
        attrs = _attrs(g)
        out: dict[str, Any] = {
            "name": name,
            "dim": int(attrs.get("dim", g["loss"].ndim)),
            "kind": attrs.get("kind"),
            "x": g["x"][()],
            "y": g["y"][()] if "y" in g else None,
            "loss": g["loss"][()],
            "accuracy": g["accuracy"][()],
            "attrs": attrs,
        }
        if directions:
            out["directions"] = {
                axis: {p: g[f"directions/{axis}/{p}"][()] for p in g[f"directions/{axis}"]}
                for axis in g["directions"]
            }
        return out


# -- audits --------------------------------------------------------------------------------------


def write_audit(
    path: str | os.PathLike[str],
    root: Mapping[str, Any],
    measures: Mapping[str, Any],
    *,
    hessian: HessianReport | None = None,
    attrs: Mapping[str, Any] | None = None,
    drop_foreign: bool = False,
) -> Path:
    """Create (or replace) ``/audit``: one attribute per audit measure (numbers, lists, str),
    plus ``attrs``; with ``hessian``, the audit's own Hessian measurements go to
    ``/audit/hessian`` (the layout of ``/hessian``; an existing ``/hessian`` is never touched)."""

    def mutate(f: h5py.File) -> None:
        if "audit" in f:
            del f["audit"]
        g = f.create_group("audit")
        for key, value in {**measures, **(attrs or {})}.items():
            if value is not None:
                _set_attr(g, key, value)
        if hessian is not None:
            _write_hessian_group(f, hessian, "audit/hessian")

    return update_file(path, root, mutate, drop_foreign=drop_foreign)


def read_audit(path: str | os.PathLike[str]) -> dict[str, Any]:
    with _open_read(path) as f:
        if "audit" not in f:
            raise LandscapeError(f"{path} has no audit; run `landscape audit` on its checkpoint")
        return _attrs(f["audit"])


def rescue_path(path: str | os.PathLike[str]) -> Path:
    """A fresh file name beside ``path`` (else in the working or temporary folder) for saving a
    finished result whose write to ``path`` failed."""
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
    """``write(path)``; if that fails for a reason outside the file (:class:`ResultsWriteError`),
    ``write`` a fresh file beside it and raise one line naming where the result went."""
    try:
        return write(Path(path))
    except ResultsWriteError as exc:
        rescue = rescue_path(path)
        try:
            write(rescue)
        except ResultsWriteError:
            raise exc from None
        raise LandscapeError(f"{exc}; the finished result was saved to {rescue} instead") from exc
