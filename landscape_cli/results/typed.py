"""Typed readers: every value read from a results file is checked here before anyone uses it.

A results file is input like any other: a copy from elsewhere, an edit in HDFView, a file of a
newer or older landscape. Every attribute and dataset a reader takes goes through one of these
functions, which check its type, shape, dtype and finiteness and return a plain Python value or
a numpy array; anything else raises one :class:`~landscape_cli.errors.LandscapeError` line that
names the file, the object and what was expected::

    results file r.h5: attribute 'samples' of /hessian is 'abc' (a string), expected an integer;
    move the file away or choose another file

A reader declares a group's attributes as a table ``{name: kind}`` and reads them with
:func:`attrs`, so adding a field is one line; datasets are read with :func:`array` (an array of
a given rank and dtype) or :func:`scalar` (a 0-d dataset), subgroups with :func:`group`.
:func:`walk` opens every object of a file with links refused (soft and external links, and an
object linked under two names, which a results file never holds).

The kinds: :data:`INT`, :data:`COUNT` (an integer >= 0), :data:`FLOAT` (any number, NaN
included), :data:`FINITE`, :data:`SPREAD` (a number >= 0, NaN or infinity included),
:data:`BOOL`, :data:`STR`, :data:`STRS` (a list of strings), :data:`JSON` (JSON text of an
object, returned as a dict; :data:`JSON_TEXT` returns the checked text), :data:`NUMBERS` (a 1-D
array of numbers) and :data:`PLAIN` (any attribute whose value is plain data, returned as
:func:`~landscape_cli.results.store.plain` returns it).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import h5py
import numpy as np

from landscape_cli.errors import LandscapeError

__all__ = [
    "BOOL",
    "COUNT",
    "FINITE",
    "FLOAT",
    "INT",
    "JSON",
    "JSON_TEXT",
    "MISSING",
    "NUMBERS",
    "PLAIN",
    "SPREAD",
    "STR",
    "STRS",
    "BadResults",
    "Kind",
    "array",
    "attr",
    "attrs",
    "dataset",
    "fail",
    "group",
    "scalar",
    "walk",
]


class BadResults(LandscapeError):
    """A value in a results file is not what landscape writes there (one line, named)."""


class _Missing:
    def __repr__(self) -> str:
        return "MISSING"


#: The default of a value that must be present.
MISSING: Any = _Missing()


class _Bad(Exception):
    """A value that does not fit its kind (caught and turned into :class:`BadResults`)."""


def _file(obj: h5py.HLObject) -> str:
    try:
        return str(obj.file.filename)
    except Exception:  # pragma: no cover - a closed or anonymous file
        return "(unknown)"


def _path(obj: h5py.HLObject, key: str | None = None) -> str:
    name = obj.name or "/"
    if key is None:
        return name
    return f"{name.rstrip('/')}/{key}"


def fail(obj: h5py.HLObject, what: str, found: str, expected: str) -> BadResults:
    """The one-line error for ``what`` (in ``obj``'s file) that is ``found``, not ``expected``."""
    return BadResults(
        f"results file {_file(obj)}: {what} {found}, expected {expected}; it was not written "
        "by this landscape or was edited: move the file away or choose another file"
    )


def _shown(value: Any) -> str:
    """``value`` as the error line shows it: short, with its type."""
    if isinstance(value, np.ndarray):
        return f"an array of shape {value.shape} and dtype {value.dtype}"
    if isinstance(value, (bytes, str)):
        text = value.decode("utf-8", "replace") if isinstance(value, bytes) else value
        text = text if len(text) <= 40 else text[:37] + "..."
        return f"{text!r} (a string)"
    if isinstance(value, (bool, np.bool_)):
        return f"{bool(value)} (a boolean)"
    if isinstance(value, (int, float, np.integer, np.floating)):
        return f"{value.item() if isinstance(value, np.generic) else value!r} (a number)"
    return f"a value of type {type(value).__name__}"


@dataclass(frozen=True)
class Kind:
    """What one attribute must hold: its description and the check that converts it.

    ``convert`` takes the value h5py returns and gives the plain value, or raises :class:`_Bad`.
    """

    expected: str
    convert: Callable[[Any], Any]


def _scalar_value(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        if value.ndim != 0:
            raise _Bad
        value = value[()]
    return value


def _to_int(value: Any) -> int:
    value = _scalar_value(value)
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise _Bad
    return int(value)


def _to_count(value: Any) -> int:
    out = _to_int(value)
    if out < 0:
        raise _Bad
    return out


def _to_float(value: Any) -> float:
    value = _scalar_value(value)
    if isinstance(value, (bool, np.bool_)) or not isinstance(
        value, (int, float, np.integer, np.floating)
    ):
        raise _Bad
    return float(value)


def _to_spread(value: Any) -> float:
    out = _to_float(value)
    if out < 0:  # NaN and +inf pass: an uncertainty that could not be estimated
        raise _Bad
    return out


def _to_finite(value: Any) -> float:
    out = _to_float(value)
    if not math.isfinite(out):
        raise _Bad
    return out


def _to_bool(value: Any) -> bool:
    value = _scalar_value(value)
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)) and int(value) in (0, 1):
        return bool(value)
    raise _Bad


def _to_str(value: Any) -> str:
    value = _scalar_value(value)
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            raise _Bad from None
    if not isinstance(value, str):
        raise _Bad
    return value


def _to_strs(value: Any) -> list[str]:
    if isinstance(value, (str, bytes)):
        raise _Bad
    if not isinstance(value, np.ndarray) or value.ndim != 1:
        raise _Bad
    if value.size == 0:
        return []
    if value.dtype.kind not in "OSU":
        raise _Bad
    return [_to_str(v) for v in value.tolist()]


def _to_json(value: Any) -> dict[str, Any]:
    text = _to_str(value)
    try:
        out = json.loads(text)
    except (ValueError, RecursionError):
        raise _Bad from None
    if not isinstance(out, dict):
        raise _Bad
    return out


def _to_numbers(value: Any) -> np.ndarray:
    if not isinstance(value, np.ndarray) or value.ndim != 1 or value.dtype.kind not in "iuf":
        raise _Bad
    return value.astype(np.float64)


def _to_plain(value: Any) -> Any:
    # lazy: import cycle with results.store (it imports typed)
    from landscape_cli.results.store import plain

    if isinstance(value, np.ndarray):
        if value.dtype.kind in "OSU":
            return _to_strs(value) if value.ndim == 1 else _bad()
        if value.dtype.kind not in "biuf":
            raise _Bad
        return value
    if isinstance(value, (str, bytes)):
        return _to_str(value)
    if isinstance(value, (bool, int, float, np.bool_, np.integer, np.floating)):
        return plain(value)
    raise _Bad


def _bad() -> Any:
    raise _Bad


INT = Kind("an integer", _to_int)
COUNT = Kind("an integer >= 0", _to_count)
FLOAT = Kind("a number", _to_float)
FINITE = Kind("a finite number", _to_finite)
#: A standard error, a residual, a width: a number >= 0 (NaN or infinity when not estimable).
SPREAD = Kind("a number >= 0 (or NaN)", _to_spread)
BOOL = Kind("a boolean", _to_bool)
STR = Kind("a string", _to_str)
STRS = Kind("a 1-D array of strings", _to_strs)
JSON = Kind("JSON text of an object", _to_json)
#: JSON text of an object, checked, returned as the text itself.
JSON_TEXT = Kind("JSON text of an object", lambda value: (_to_json(value), _to_str(value))[1])
NUMBERS = Kind("a 1-D array of numbers", _to_numbers)
PLAIN = Kind("a number, a boolean, a string, or an array of numbers or strings", _to_plain)


def _raw_attr(obj: h5py.HLObject, key: str) -> Any:
    # HDF5's own read errors (a damaged file) propagate: open_read names the file damaged
    return obj.attrs[key]


def attr(obj: h5py.HLObject, key: str, kind: Kind, default: Any = MISSING) -> Any:
    """The attribute ``key`` of ``obj`` as ``kind``; ``default`` when absent (else an error)."""
    if key not in obj.attrs:
        if default is MISSING:
            raise fail(obj, f"attribute {key!r} of {_path(obj)}", "is missing", kind.expected)
        return default
    value = _raw_attr(obj, key)
    try:
        return kind.convert(value)
    except _Bad:
        raise fail(
            obj, f"attribute {key!r} of {_path(obj)}", f"is {_shown(value)}", kind.expected
        ) from None


def attrs(obj: h5py.HLObject, kinds: Mapping[str, Kind], *, others: bool = False) -> dict[str, Any]:
    """The attributes of ``obj`` named in ``kinds``, each read as its kind (absent ones left out).

    With ``others``, every other attribute is read too, as :data:`PLAIN`.
    """
    out = {key: attr(obj, key, kind) for key, kind in kinds.items() if key in obj.attrs}
    if others:
        for key in obj.attrs:
            if key not in kinds:
                out[key] = attr(obj, key, PLAIN)
    return out


def _member(g: h5py.Group, key: str) -> Any:
    # HDF5's own read errors (a damaged file) propagate: open_read names the file damaged
    return g[key]


def group(g: h5py.Group, key: str, default: Any = MISSING) -> Any:
    """The subgroup ``key`` of ``g``; ``default`` when absent (else an error)."""
    if key not in g:
        if default is MISSING:
            raise fail(g, _path(g, key), "is missing", "a group")
        return default
    obj = _member(g, key)
    if not isinstance(obj, h5py.Group):
        raise fail(g, _path(g, key), "is a dataset", "a group")
    return obj


def _dataset(g: h5py.Group, key: str, expected: str) -> Any:
    obj = _member(g, key)
    if not isinstance(obj, h5py.Dataset):
        raise fail(g, _path(g, key), "is a group", expected)
    return obj


def dataset(g: h5py.Group, key: str) -> h5py.Dataset:
    """The dataset ``key`` of ``g`` itself (for its attributes); it must exist."""
    if key not in g:
        raise fail(g, _path(g, key), "is missing", "a dataset")
    return _dataset(g, key, "a dataset")


_DTYPES = {"f": "floating-point", "b": "boolean", "n": "numeric"}


def _values(g: h5py.Group, key: str, obj: Any, expected: str) -> np.ndarray:
    return np.asarray(obj[()])  # a read error (a damaged file) propagates to open_read


def array(
    g: h5py.Group,
    key: str,
    *,
    ndim: int | tuple[int, ...] = 1,
    dtype: str = "f",
    finite: bool = False,
    shape: tuple[int | None, ...] | None = None,
    default: Any = MISSING,
) -> Any:
    """The dataset ``key`` of ``g`` as a numpy array, checked; ``default`` when absent.

    ``ndim`` is the rank (or the ranks) allowed; ``dtype`` ``"f"`` a floating-point array
    (returned in its stored precision), ``"b"`` a boolean one, ``"n"`` any real numbers
    (integers returned as float64);
    ``finite`` refuses NaN and infinities; ``shape`` fixes the length of each axis (None: any).
    """
    ranks = (ndim,) if isinstance(ndim, int) else tuple(ndim)
    rank_text = " or ".join(f"{r}-D" for r in ranks) if len(ranks) <= 3 else f"{min(ranks)}-D+"
    expected = f"a {rank_text} {_DTYPES[dtype]} dataset"
    if shape is not None:
        axes = ", ".join("n" if s is None else str(s) for s in shape)
        expected += f" of shape ({axes}{',' if len(shape) == 1 else ''})"
    if finite:
        expected += " of finite values"
    if key not in g:
        if default is MISSING:
            raise fail(g, _path(g, key), "is missing", expected)
        return default
    obj = _dataset(g, key, expected)
    kind = obj.dtype.kind
    ok_kind = {"f": kind == "f", "b": kind == "b", "n": kind in "iuf"}[dtype]
    if not ok_kind:
        raise fail(g, _path(g, key), f"has dtype {obj.dtype}", expected)
    if obj.ndim not in ranks:
        raise fail(g, _path(g, key), f"has shape {obj.shape}", expected)
    if shape is not None and any(
        want is not None and got != want for got, want in zip(obj.shape, shape, strict=False)
    ):
        raise fail(g, _path(g, key), f"has shape {obj.shape}", expected)
    values = _values(g, key, obj, expected)
    if values.dtype.kind in "iu":  # integers read as numbers: float64
        values = values.astype(np.float64)
    if finite and not np.isfinite(values).all():
        raise fail(g, _path(g, key), "holds NaN or infinite values", expected)
    return values


def scalar(g: h5py.Group, key: str, *, finite: bool = False, default: Any = MISSING) -> Any:
    """The 0-d numeric dataset ``key`` of ``g`` as a float; ``default`` when absent."""
    values = array(g, key, ndim=0, dtype="n", finite=finite, default=default)
    return values if values is default else float(values)


def walk(f: h5py.File) -> None:
    """Open every object of ``f`` by its links, refusing what a results file never holds.

    Soft links, external links (which would open another file, or loop), user-defined links,
    an object linked under two names (a cycle), and objects that are neither groups nor
    datasets each raise :class:`BadResults` naming the link. Only link metadata is read; HDF5's
    own read errors (a damaged file) propagate as they are.
    """
    seen: set[int] = set()

    def visit(g: h5py.Group, depth: int) -> None:
        if depth > 64:
            raise fail(g, _path(g), "is nested more than 64 groups deep", "a results file")
        for name in list(g):  # HDF5's read errors propagate: open_read names the file damaged
            where = _path(g, name)
            link = g.get(name, getlink=True)
            if isinstance(link, h5py.SoftLink):
                raise fail(g, where, f"is a soft link to {link.path!r}", "no links")
            if isinstance(link, h5py.ExternalLink):
                raise fail(
                    g,
                    where,
                    f"is an external link to {link.path!r} in {link.filename!r}",
                    "no links",
                )
            if not isinstance(link, h5py.HardLink):
                raise fail(g, where, "is a user-defined link", "no links")
            obj = _member(g, name)
            key = hash(obj.id)
            if key in seen:
                raise fail(g, where, "is a second name of an object already linked", "no links")
            seen.add(key)
            if isinstance(obj, h5py.Group):
                visit(obj, depth + 1)
            elif not isinstance(obj, h5py.Dataset):
                raise fail(g, where, f"is a {type(obj).__name__}", "a group or a dataset")

    seen.add(hash(f["/"].id))
    visit(f, 0)
