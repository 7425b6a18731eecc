"""Resolve ``module:attr`` specs (``--model``, ``--dataset``) to callables, and call factories.

A spec names an importable module and an attribute in it, separated by one colon:
``mymodels:build`` or ``pkg.sub.mod:Factory`` (the attribute may itself be dotted, e.g.
``mod:Class.create``). The module is imported with :func:`importlib.import_module`; when its
top-level package is not importable and the current working directory is not on ``sys.path``
(the usual case for an installed console script), the working directory is appended to
``sys.path`` and the import is tried once more, so a ``mymodels.py`` beside the user's shell
works as it would with ``python -m``.

Factories are called with keyword arguments they may ignore: :func:`call_factory` passes only
those that the factory's signature names, or all of them when it takes ``**kwargs``.

Every failure is a :class:`~landscape_cli.errors.LandscapeError` with a one-line message. This
module imports only the standard library, so it is cheap to import from the command layer.
"""

from __future__ import annotations

import importlib
import inspect
import os
import sys
from collections.abc import Callable
from types import ModuleType
from typing import Any

from landscape_cli.errors import LandscapeError, one_line

__all__ = [
    "call_factory",
    "check_file_spec",
    "check_plain",
    "is_spec",
    "resolve_spec",
    "split_spec",
]

#: Spec prefixes that name a built-in loader rather than a module to import, per kind of spec.
_BUILTIN_PREFIXES = {"model": ("torchvision", "timm"), "dataset": ("imagefolder",)}


def _describe_exception(exc: BaseException) -> str:
    message = one_line(str(exc))
    if isinstance(exc, ModuleNotFoundError) and message:
        return message  # "No module named 'foo'" says it all
    name = type(exc).__name__
    return f"{name}: {message}" if message else name


def is_spec(text: str) -> bool:
    """Whether ``text`` looks like a ``module:attr`` spec rather than a registry name."""
    return ":" in text


def split_spec(spec: str, what: str) -> tuple[str, str]:
    """Split ``module:attr`` into its two parts, checking that both are well formed.

    ``what`` names the parameter the spec came from (``model``), for the error message.
    """
    module_name, sep, attr_path = spec.partition(":")
    module_name, attr_path = module_name.strip(), attr_path.strip()
    parts_ok = all(p.isidentifier() for p in module_name.split(".")) and all(
        p.isidentifier() for p in attr_path.split(".")
    )
    if not sep or ":" in attr_path or not module_name or not attr_path or not parts_ok:
        raise LandscapeError(
            f"invalid `{what}` spec {spec!r}: expected module:attribute, "
            "e.g. mypackage.models:build (module importable from the current folder or sys.path)"
        )
    return module_name, attr_path


def _cwd_on_path() -> bool:
    cwd = os.path.abspath(os.getcwd())
    for entry in sys.path:
        try:
            if os.path.abspath(entry or os.curdir) == cwd:
                return True
        except (TypeError, ValueError):  # pragma: no cover - exotic sys.path entries
            continue
    return False


def _import_module(module_name: str, spec: str, what: str) -> ModuleType:
    def fail(exc: BaseException) -> LandscapeError:
        return LandscapeError(
            f"cannot import module {module_name!r} for `{what}={spec!r}`: "
            f"{_describe_exception(exc)}"
        )

    top_level = module_name.split(".")[0]
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name != top_level or _cwd_on_path():
            raise fail(exc) from exc
        first_error: BaseException = exc
    except Exception as exc:  # user code may raise anything while importing
        raise fail(exc) from exc
    # The top-level package was not found: retry with the working directory on sys.path.
    sys.path.append(os.getcwd())
    importlib.invalidate_caches()
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        sys.path.remove(os.getcwd())
        raise fail(first_error if exc.name == top_level else exc) from exc
    except Exception as exc:
        raise fail(exc) from exc


def resolve_spec(spec: str, what: str) -> Callable[..., Any]:
    """Import ``module`` and return the callable ``attr`` named by ``spec`` (``module:attr``).

    ``what`` names the parameter the spec came from (``model``, ``dataset``) and appears in the
    error messages, in backticks with the spec (:class:`~landscape_cli.errors.LandscapeError`),
    for example::

        cannot import module 'foo' for `model='foo:bar'`: No module named 'foo'
        module 'mymodels' has no attribute 'biuld' (`model='mymodels:biuld'`)
        `model='mymodels:WIDTH'` is not callable (it is an int)
    """
    module_name, attr_path = split_spec(spec, what)
    obj: Any = _import_module(module_name, spec, what)
    owner = module_name
    for part in attr_path.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            kind = "module" if owner == module_name else "object"
            raise LandscapeError(
                f"{kind} {owner!r} has no attribute {part!r} (`{what}={spec!r}`)"
            ) from None
        owner = f"{owner}.{part}" if owner != module_name else f"{module_name}:{part}"
    if not callable(obj):
        article = "an" if type(obj).__name__[:1].lower() in "aeiou" else "a"
        raise LandscapeError(
            f"`{what}={spec!r}` is not callable (it is {article} {type(obj).__name__})"
        )
    return obj


def _factory_name(fn: Callable[..., Any]) -> str:
    module = getattr(fn, "__module__", None)
    name = getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None) or repr(fn)
    return f"{module}:{name}" if module else str(name)


def call_factory(fn: Callable[..., Any], /, **kwargs: Any) -> Any:
    """Call ``fn`` with those of ``kwargs`` that its signature accepts.

    If ``fn`` takes ``**kwargs`` it receives all of them; otherwise only the keyword arguments
    whose names appear among its parameters (positional-or-keyword or keyword-only). When the
    signature cannot be inspected (some builtins), all keyword arguments are passed.

    Raises :class:`LandscapeError` when ``fn`` has a required parameter that ``kwargs`` does not
    supply, and wraps any exception raised by ``fn`` itself in a one-line
    :class:`LandscapeError` (the original is chained as ``__cause__``). A ``LandscapeError``
    raised by ``fn`` passes through unchanged.
    """
    name = _factory_name(fn)
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):
        signature = None

    if signature is None:
        accepted = dict(kwargs)
    else:
        params = signature.parameters.values()
        if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
            accepted = dict(kwargs)
        else:
            by_keyword = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
            names = {p.name for p in params if p.kind in by_keyword}
            accepted = {k: v for k, v in kwargs.items() if k in names}
        missing = [
            p.name
            for p in params
            if p.default is inspect.Parameter.empty
            and p.kind not in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
            and p.name not in accepted
        ]
        if missing:
            offered = ", ".join(kwargs) or "none"
            raise LandscapeError(
                f"{name} requires argument(s) {', '.join(repr(m) for m in missing)} that landscape "
                f"does not provide (it passes keyword arguments: {offered})"
            )
    try:
        return fn(**accepted)
    except LandscapeError:
        raise
    except Exception as exc:  # the user's factory may raise anything
        raise LandscapeError(f"{name} failed: {_describe_exception(exc)}") from exc


def check_file_spec(
    spec: Any, kind: str, source: str, *, trust: bool = False, given: tuple[str | None, ...] = ()
) -> str:
    """Check a ``kind`` ("model" or "dataset") spec read from the file ``source`` before use.

    A spec stored in a file may name only the built-in registries (a name without a colon,
    ``torchvision:NAME`` and ``timm:NAME`` for models, ``imagefolder:PATH`` for datasets). A
    ``module:attr`` spec would import and call code chosen by whoever wrote the file, so it
    passes only with ``trust`` or when the user gave the very same spec
    on the command line (one of ``given``). Nothing is imported here. Returns the spec, stripped.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise LandscapeError(f"{source} records an invalid {kind} spec {spec!r}")
    text = spec.strip()
    if ":" not in text:
        return text
    prefix = text.partition(":")[0].strip().lower()
    if prefix in _BUILTIN_PREFIXES[kind]:
        return text
    if trust or text in {g.strip() for g in given if isinstance(g, str)}:
        return text
    raise LandscapeError(
        f"{source} names the {kind} factory {one_line(text)!r}, which would import and run code "
        f"chosen by whoever wrote the file; pass `{kind}={one_line(text)!r}` yourself, or "
        "`trust=True` if you trust where the file came from"
    )


_PLAIN_SCALARS = (bool, int, float, str, type(None))


def check_plain(value: Any, what: str, source: str) -> Any:
    """Check that ``value`` read from ``source`` is plain data.

    Numbers, strings, booleans, None, and lists/tuples/dicts (string keys) of them. Returns it
    unchanged.
    """

    def offending(v: Any, where: str, depth: int) -> tuple[str, Any] | None:
        """The first value under ``v`` that is not plain data, with where it sits."""
        if depth > 16:
            return where, v
        if isinstance(v, _PLAIN_SCALARS):
            return None
        if isinstance(v, (list, tuple)):
            for i, x in enumerate(v):
                found = offending(x, f"{where}[{i}]", depth + 1)
                if found is not None:
                    return found
            return None
        if isinstance(v, dict):
            for k, x in v.items():
                if not isinstance(k, str):
                    return f"{where} key", k
                found = offending(x, f"{where}.{k}" if where else k, depth + 1)
                if found is not None:
                    return found
            return None
        return where, v

    found = offending(value, "", 0)
    if found is not None:
        where, bad = found
        at = f" at {where}" if where else ""
        raise LandscapeError(
            f"{source}: {what} holds a value{at} that is not plain data "
            f"({type(bad).__name__}); only numbers, strings, booleans and lists or dicts of "
            "them are accepted from a file"
        )
    return value
