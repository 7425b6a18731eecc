"""The one exception type that the command layer turns into a one-line ``error: ...`` message.

Also the two helpers every module uses to word such a line: :func:`one_line` (an exception's
message on one line) and :func:`check_choice` (the "must be one of" check).
"""

from __future__ import annotations

from collections.abc import Collection


class LandscapeError(Exception):
    """A user-facing error: bad input, a missing file, an incompatible checkpoint.

    The message is a single line that says what is wrong and, where it can, what to do about it.
    The CLI prints it as ``error: <message>`` on stderr and exits with code 2; library callers get
    an ordinary exception.

    Library messages (and the notes the library passes to ``on_note`` callbacks) name the
    problem in the library's own terms, never a command-line flag: a parameter of the function or
    dataclass that takes it appears in backticks, `` `epochs` ``, and a suggested setting as that
    parameter with a Python literal, `` `loss='mse'` ``, `` `trust=True` ``,
    `` `model_options={'num_classes': 10}` `` ("`epochs` must be >= 1, got 0"). The command layer
    renders each such reference as its flag (``--epochs``, ``--loss mse``, ``--trust-checkpoint``,
    ``--model-option num_classes=10``; :mod:`landscape_cli.commands._errors`). Only an identifier,
    optionally with ``=`` and a literal, is a reference: other backticked text (a shell command)
    is shown as it is. Suggest ``False`` only for a flag with a ``--no-`` form; word the rest
    ("drop `log`").
    """


class Interrupted(LandscapeError):
    """The user interrupted a run (Ctrl-C); the message says what was kept and where.

    The CLI prints it as ``error: interrupted: <message>`` and exits with code 130.
    """


def one_line(exc: BaseException | str) -> str:
    """``exc``'s message on one line (newlines and runs of spaces collapsed).

    An exception with an empty message gives its type's name (``KeyError``); a string gives
    itself, collapsed (empty stays empty).
    """
    text = " ".join(str(exc).split())
    if text or isinstance(exc, str):
        return text
    return type(exc).__name__


def check_choice(
    name: str, value: object, choices: Collection[object], *, one_of: bool = False
) -> None:
    """Refuse ``value`` unless it is one of ``choices``: one :class:`LandscapeError` line.

    The line names the parameter in backticks, the choices and the value given:
    `` `loss` must be ce or mse, got 'hinge' `` (``one_of=True``, for a list that may grow:
    `` `engine` must be one of lanczos, pyhessian, got 'arpack' ``).
    """
    if value in choices:
        return
    names = [str(c) for c in choices]
    if one_of or len(names) < 2:
        listed = "one of " + ", ".join(names)
    else:
        listed = ", ".join(names[:-1]) + " or " + names[-1]
    raise LandscapeError(f"`{name}` must be {listed}, got {value!r}")
