"""torch's CPU threads for the console script: a fair share of the machine's CPUs.

:func:`start` runs before torch is imported; :func:`rebalance` runs on the progress callbacks of
long work (rate-limited), so a run gives up threads when another ``landscape`` process starts and
takes them back when it ends (see :mod:`landscape_cli.commands._cpu_share`). A user's own
``OMP_NUM_THREADS`` / ``MKL_NUM_THREADS`` or ``landscape --threads N`` fixes the count instead.
"""

from __future__ import annotations

import atexit
import os
import sys
import time
from typing import Any

from landscape_cli.commands._cpu_share import CpuShare, usable_cpus

_THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")
_EVERY = 2.0  # seconds between two looks at the other processes

_state: dict[str, Any] = {"share": None, "threads": None, "checked": 0.0}


def start(environ: dict[str, str] | None = None, folder=None) -> dict[str, str]:
    """Join the CPU share unless the user fixed the thread count.

    Set ``OMP_NUM_THREADS`` to this process's share (before torch is imported, so torch starts with
    it). Returns what was set.
    """
    env = os.environ if environ is None else environ
    if any(k in env for k in _THREAD_VARS):
        return {}
    share = CpuShare(usable_cpus(), folder)
    atexit.register(share.close)  # this process's file goes with it
    threads = share.threads()
    _state.update(share=share, threads=threads, checked=time.monotonic())
    env["OMP_NUM_THREADS"] = str(threads)
    return {"OMP_NUM_THREADS": str(threads)}


def fix(threads: int) -> None:
    """``--threads N``: this many threads, whatever else runs (leaves the share)."""
    share = _state["share"]
    if share is not None:
        share.close()
    _state.update(share=None, threads=threads)
    os.environ["OMP_NUM_THREADS"] = str(threads)
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(threads)


def rebalance() -> None:
    """Take this process's current share of the CPUs (at most every ``_EVERY`` seconds)."""
    share = _state["share"]
    now = time.monotonic()
    if share is None or now - _state["checked"] < _EVERY or "torch" not in sys.modules:
        return
    _state["checked"] = now
    threads = share.threads()
    if threads != _state["threads"]:
        sys.modules["torch"].set_num_threads(threads)
        _state["threads"] = threads
