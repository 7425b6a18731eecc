"""The one exception type that the command layer turns into a one-line ``error: ...`` message."""


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
