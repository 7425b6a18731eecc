"""The one exception type that the command layer turns into a one-line ``error: ...`` message."""


class LandscapeError(Exception):
    """A user-facing error: bad input, a missing file, an incompatible checkpoint.

    The message is a single line that says what is wrong and, where it can, what to do about it.
    The CLI prints it as ``error: <message>`` on stderr and exits with code 2; library callers get
    an ordinary exception.
    """


class Interrupted(LandscapeError):
    """The user interrupted a run (Ctrl-C); the message says what was kept and where.

    The CLI prints it as ``error: interrupted: <message>`` and exits with code 130.
    """
