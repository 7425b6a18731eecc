"""SIGINT and SIGTERM stop a command the same way: Ctrl-C's way, once.

SIGTERM is what SLURM, Kubernetes and ``timeout`` send. While :func:`install`'s handlers are in
place (the command layer installs them for each command), the first SIGINT raises
``KeyboardInterrupt`` and the first SIGTERM raises :class:`Terminated`, a ``KeyboardInterrupt``
too, so every ``except KeyboardInterrupt`` that keeps partial work (a ``hessian`` marked partial,
a scan's folded points) and every cleanup (temporary files) runs for both. A second signal of
either kind while that cleanup runs is ignored (the first one sets both to ``SIG_IGN``, so that the
process's exit cannot be cut short either): the cleanup finishes, and the command exits with
``128 +`` the first signal's number (130 for SIGINT, 143 for SIGTERM; :func:`exit_code`).

:func:`deferred` holds a signal back while a finished product is written, and raises it when the
write is done. A signal ignored when the process started (``nohup``, a background job) stays
ignored. Standard library only.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Callable, Iterator
from typing import Any

__all__ = ["Terminated", "deferred", "exit_code", "install", "received", "word"]


class Terminated(KeyboardInterrupt):
    """SIGTERM (or another termination signal), raised where Ctrl-C raises KeyboardInterrupt.

    Args:
        signum: the signal's number.
    """

    def __init__(self, signum: int = signal.SIGTERM) -> None:
        super().__init__(signum)
        self.signum = signum


_SIGNALS = (signal.SIGINT, signal.SIGTERM)
_state: dict[str, Any] = {"first": None, "pending": None, "depth": 0, "installed": False}


def _raise(signum: int) -> None:
    _state["first"] = signum
    if _state["installed"]:  # from now on the kernel drops them: the cleanup and the exit finish
        for sig in _SIGNALS:  # (Python puts its own handlers back to the default at exit)
            with contextlib.suppress(ValueError, OSError):
                signal.signal(sig, signal.SIG_IGN)
    if signum == signal.SIGINT:
        raise KeyboardInterrupt
    raise Terminated(signum)


def _handler(signum: int, frame: Any) -> None:
    if _state["first"] is not None:
        return  # the first signal's cleanup is running: let it finish
    if _state["depth"] > 0:
        _state["pending"] = _state["pending"] or signum  # raised once the write is done
        return
    _raise(signum)


def install() -> Callable[[], None]:
    """Handle SIGINT and SIGTERM as above; returns the function that puts the old handlers back.

    A no-op outside the main thread, and when this module's handlers are already in place
    (the console script installs them once for the whole process).
    """
    if threading.current_thread() is not threading.main_thread() or _state["installed"]:
        return lambda: None
    _state.update(first=None, pending=None, depth=0, installed=True)
    saved: dict[int, Any] = {}
    for sig in _SIGNALS:
        current = signal.getsignal(sig)
        if current == signal.SIG_IGN:
            continue  # ignored by whoever started us: stays ignored
        saved[sig] = signal.SIG_DFL if current is None else current
        signal.signal(sig, _handler)

    def restore() -> None:
        for sig, handler in saved.items():
            signal.signal(sig, handler)
        _state["installed"] = False

    return restore


def received() -> int | None:
    """The first signal received since :func:`install` (None if none)."""
    return _state["first"]


def exit_code() -> int:
    """``128 +`` the first signal's number: 130 for SIGINT (also with none), 143 for SIGTERM."""
    return 128 + int(_state["first"] or signal.SIGINT)


def word() -> str:
    """How the command stopped: ``interrupted`` (SIGINT, Ctrl-C) or ``terminated`` (SIGTERM)."""
    first = _state["first"]
    return "interrupted" if first in (None, signal.SIGINT) else "terminated"


@contextlib.contextmanager
def deferred() -> Iterator[None]:
    """Hold SIGINT/SIGTERM back while the block runs; a signal that came is raised after it.

    For the writes of finished products, which a signal would otherwise cut short and lose.
    """
    _state["depth"] += 1
    try:
        yield
    finally:
        _state["depth"] -= 1
    pending = _state["pending"]
    if _state["depth"] == 0 and pending is not None and _state["first"] is None:
        _state["pending"] = None
        _raise(pending)
