"""Library messages rendered for the terminal: backticked parameters become command-line flags.

Library code (everything outside ``landscape_cli/commands/``) names its own parameters in its
:class:`~landscape_cli.errors.LandscapeError` messages and notes, in backticks: `` `epochs` `` for
a parameter, `` `loss='mse'` `` for a suggested setting. :func:`cli_message` rewrites each such
reference to the flag a command-line user types:

- `` `name` `` -> ``--name`` (underscores become hyphens);
- `` `name=True` `` -> ``--name``; `` `name=False` `` -> ``--no-name``, only for the names in
  :data:`NEGATABLE` (library messages word the others so that they need no ``False``);
- `` `name='x'` `` / `` `name=10` `` -> ``--name x`` / ``--name 10``;
- `` `name={'k': 10}` `` -> ``--name k=10`` (one flag per key), `` `name=('a', 'b')` `` ->
  ``--name a --name b`` (repeatable options).

:data:`FLAGS` maps the library names whose flag is not the mechanical one (``trust`` ->
``--trust-checkpoint``); any other name takes the mechanical rule. A backticked text is a
parameter reference exactly when it is a Python identifier, optionally followed by ``=`` and a
Python literal (a string, number, bool, dict, tuple or list); anything else in backticks (a shell
command such as `` `landscape hessian --per-layer` ``, an expression, a ``False`` for a flag
without a ``--no-`` form) is left as it is, backticks included.
"""

from __future__ import annotations

import ast
import re
import shlex

#: Library parameter -> command-line flag, where the flag is not the mechanical ``--name``.
FLAGS = {
    "trust": "--trust-checkpoint",
    "root": "--data-root",
    "model_options": "--model-option",
    "text_columns": "--text-column",
    "targets": "--to",
    "xrange": "--range",
}

#: Parameters whose flag has a ``--no-`` form (``name=False`` renders as ``--no-name``).
NEGATABLE = frozenset({"log", "cache_graphs"})

_BACKTICKED = re.compile(r"`([^`]+)`")
_REFERENCE = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)(?:=(.+))?", re.DOTALL)


def flag(name: str) -> str:
    """The command-line flag of library parameter ``name`` (``batch_size`` -> ``--batch-size``)."""
    return FLAGS.get(name, "--" + name.replace("_", "-"))


def _word(value: object) -> str:
    """A value as the shell word a user types after a flag."""
    text = value if isinstance(value, str) else repr(value)
    return shlex.quote(text) if text else "''"


def _render(reference: str) -> str | None:
    """The flag text of one backticked ``reference``, or ``None`` when it is not a parameter."""
    match = _REFERENCE.fullmatch(reference)
    if match is None:
        return None
    name, literal = match.groups()
    option = flag(name)
    if literal is None:
        return option
    try:
        value = ast.literal_eval(literal)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return None
    if value is True:
        return option
    if value is False:
        return "--no-" + option[2:] if name in NEGATABLE else None
    if isinstance(value, dict) and value:
        return " ".join(f"{option} {_word(f'{k}={v}')}" for k, v in value.items())
    if isinstance(value, (tuple, list)) and value:
        return " ".join(f"{option} {_word(v)}" for v in value)
    if isinstance(value, (str, int, float)):
        return f"{option} {_word(value)}"
    return None


def cli_message(text: str) -> str:
    """``text`` with each backticked parameter reference written as its command-line flag.

    >>> cli_message("`epochs` must be >= 1, got 0; pass `trust=True` or `loss='mse'`")
    '--epochs must be >= 1, got 0; pass --trust-checkpoint or --loss mse'
    """

    def replace(match: re.Match[str]) -> str:
        rendered = _render(match.group(1))
        return match.group(0) if rendered is None else rendered

    return _BACKTICKED.sub(replace, str(text))
