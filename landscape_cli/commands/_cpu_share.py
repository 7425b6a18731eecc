"""Share the CPUs fairly among the ``landscape`` processes that run at once on one machine.

torch's OpenMP threads spin while they wait for work. Alone, that spinning is what makes two
threads faster than one on small kernels; next to another busy process it steals the cores that
process needs, and both crawl (two identical ``hessian`` runs on two cores: 4.1× one alone,
benchmarks/RESULTS.md). Sleeping instead (``OMP_WAIT_POLICY=PASSIVE``) avoids the collapse but
makes a run alone 1.7× slower on the digits CNN. So each process keeps torch's spinning threads
and takes ``max(1, cpus // P)`` of them, ``P`` being the number of ``landscape`` processes alive
on the machine: together they never ask for more threads than there are CPUs.

Each process holds an exclusive ``flock`` on a file named after its PID in a per-user folder of the
temporary directory for as long as it lives, and removes it when it leaves (:meth:`CpuShare.close`,
run at exit). A file whose lock can be taken belongs to a process that is gone (killed): it is not
counted, and not removed either, since this process did not create it. The folder is a
:class:`~landscape_cli.files.PrivateFolder` (mode 0700, owner and type checked, no symlink
followed); one that fails those checks means no sharing, never a file touched elsewhere. The count
is read again while the work runs (:meth:`CpuShare.threads` is cheap), so a run that started alone
gives up cores when a second one starts, and takes them back when it ends. Standard library only;
nothing here imports torch or prints.
"""

from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path

from landscape_cli.errors import LandscapeError
from landscape_cli.files import PrivateFolder

try:
    import fcntl
except ImportError:  # pragma: no cover - non-POSIX: no sharing, every process takes all CPUs
    fcntl = None  # type: ignore[assignment]


def default_folder() -> Path:
    """The per-user folder in the temporary directory where CPU shares are recorded."""
    uid = os.getuid() if hasattr(os, "getuid") else 0
    return Path(tempfile.gettempdir()) / f"landscape-cpu-{uid}"


def usable_cpus() -> int:
    """The CPUs this process may run on (its affinity mask where the OS has one)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


class CpuShare:
    """This process's place among the live ``landscape`` processes of the machine.

    Args:
        cpus: the CPUs to share.
        folder: where the processes' lock files live (default: :func:`default_folder`).
        name: this process's file name (default: its PID).
    """

    def __init__(self, cpus: int, folder: Path | None = None, name: str | None = None) -> None:
        self.cpus = max(1, int(cpus))
        self.folder = Path(folder) if folder is not None else default_folder()
        self.name = name or str(os.getpid())
        self._fd: int | None = None
        self._dir: PrivateFolder | None = None
        if fcntl is None:
            return
        try:
            self._dir = PrivateFolder(self.folder)
        except (LandscapeError, OSError):  # a planted link, another user's folder: no sharing
            return
        try:
            # Lock under a temporary name, then rename: a peer never sees an unlocked new file
            # (which it would take for a dead process's).
            tmp = f".{self.name}.new"
            fd = self._dir.open(tmp, os.O_RDWR | os.O_CREAT, 0o600)
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            self._dir.replace(tmp, self.name)
            self._fd = fd
        except OSError:  # an unwritable temporary folder: no sharing, nothing breaks
            self._fd = None

    def peers(self) -> int:
        """The live ``landscape`` processes on the machine, this one included."""
        if self._fd is None or self._dir is None:
            return 1
        live = 1
        try:
            names = [n for n in self._dir.names() if not n.startswith(".")]
        except OSError:
            return 1
        for name in names:
            if name == self.name:
                continue
            try:
                fd = self._dir.open(name, os.O_RDONLY | os.O_NONBLOCK)
            except OSError:
                continue  # removed meanwhile, or a link: not a peer
            try:
                if not stat.S_ISREG(os.fstat(fd).st_mode):
                    continue  # not a share file
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                live += 1  # its owner holds the lock: alive
            else:
                fcntl.flock(fd, fcntl.LOCK_UN)  # its owner is gone (its file is not ours)
            finally:
                os.close(fd)
        return live

    def threads(self) -> int:
        """This process's fair share: ``max(1, cpus // live processes)`` threads."""
        return max(1, self.cpus // self.peers())

    def close(self) -> None:
        """Leave the share: remove this process's own file and close the folder."""
        if self._fd is not None and self._dir is not None:
            self._dir.remove(self.name)
            os.close(self._fd)
            self._fd = None
        if self._dir is not None:
            self._dir.close()
            self._dir = None
