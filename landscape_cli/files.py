"""The rules for every file landscape creates, and for the inputs it must read as regular files.

Every output (a results file and its temporary files, a rescue copy, a lock file, a scan journal, a
training checkpoint and its ``save_every`` snapshots, a partial result, an audit report and the
figure beside it, a plot, the demo folder) and the per-user CPU-share folder go through this
module, which owns these rules:

- **Checked before the first product** (:func:`check_output`, :func:`check_folder`): every name the
  output will use, the temporary, rescue and lock names derived from it included, fits the
  file-system's limit on a name (255 bytes) and on a path; the folder exists or can be created; it
  accepts a new file (tried by creating and removing one, which also catches ``/proc`` and
  read-only mounts, where root's ``access()`` says yes); an existing output is a regular file:
  folders, devices, FIFOs and sockets are refused, whatever ``overwrite`` says; and the disk has
  room for the estimated size (:func:`require_space`).
- **Atomic writes** (:func:`write_atomic`): into a temporary file beside the target, named
  ``.<name>.<pid>.<random>.tmp`` (created exclusively, never through a symlink), checked against
  the free space again once the exact size is known, flushed and fsynced, then renamed over the
  target (keeping an existing file's mode; a new file gets ``0o666`` less the umask). On any
  failure, or an interrupt, the temporary file is removed. Only temporary files of exactly this
  target whose owning process is gone are ever cleaned up (:func:`remove_stale_temps`).
- **Rescue** (:func:`rescue`, :func:`save`): a finished product whose write fails is written to a
  fresh ``<stem>.rescued-<random><suffix>`` in the first place that takes it among the output's
  folder, the working folder and the temporary folder, read back, and only then named.
- **Locks** (:func:`locked`): an exclusive ``flock`` on ``<name>.lock``; the lock file is removed
  on release by the process that created it, while it still holds the lock (a writer waiting on
  the removed file notices and locks the new one), so a clean exit leaves no lock file.
- **Private folders** (:class:`PrivateFolder`): created with mode 0700, opened without following
  a symlink, checked to be a folder owned by this user, and used only through its descriptor.
- **Inputs** (:func:`check_input`, :func:`read_regular`): a FIFO, device or socket given where a
  file is read is refused instead of blocking forever.

Standard library only: the console script imports it before anything else.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import secrets
import stat
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from landscape_cli.errors import LandscapeError, one_line

__all__ = [
    "NAME_MAX",
    "PATH_MAX",
    "PrivateFolder",
    "WriteError",
    "check_folder",
    "check_input",
    "check_output",
    "ensure_parent",
    "free_bytes",
    "human",
    "lock_path",
    "locked",
    "open_append",
    "read_regular",
    "remove_stale_temps",
    "require_space",
    "rescue",
    "rescue_bytes",
    "rescue_folders",
    "rescue_name",
    "save",
    "temp_name",
    "write_atomic",
]

#: Longest file name (bytes) where the file system does not say (``pathconf``).
NAME_MAX = 255
#: Longest path (bytes, with its terminating NUL) where the file system does not say.
PATH_MAX = 4096
#: Slack added to every free-space requirement made before the work (beside rounding each size up
#: to whole 4 KiB blocks): the file system's own metadata.
SPACE_SLACK = 8 * 1024

_PID_WIDTH = 10  # the widest process id (2**32 - 1)
_TOKEN = 8  # hex digits of the random part of a name
_TEMP_TAIL = re.compile(r"(\d+)\.[0-9a-f]{8}\.tmp")
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)


class WriteError(LandscapeError):
    """Writing an output failed for a reason outside its content.

    A full disk, a folder removed meanwhile, missing permissions, or a path that became a device:
    the product itself is fine, so the caller may save it elsewhere (:func:`rescue`).
    """


def human(nbytes: float) -> str:
    """``nbytes`` as a short human-readable size (1024-based)."""
    value = float(nbytes)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"  # pragma: no cover


def _reason(exc: BaseException) -> str:
    """An OSError as its plain reason (``No space left on device``), one line."""
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return one_line(exc)


# --------------------------------------------------------------------------------------------------
# names


def temp_name(target: Path, *, pid: int | None = None, token: str | None = None) -> Path:
    """The temporary file of ``target``: ``.<name>.<pid>.<random>.tmp`` in the same folder."""
    pid = os.getpid() if pid is None else pid
    token = token or secrets.token_hex(_TOKEN // 2)
    return target.with_name(f".{target.name}.{pid}.{token}.tmp")


def lock_path(target: Path) -> Path:
    """The lock file of ``target``: ``<name>.lock`` beside it."""
    return target.with_name(target.name + ".lock")


def rescue_name(target: Path, label: str = "rescued", token: str | None = None) -> str:
    """A fresh name for a copy of ``target``: ``<stem>.<label>-<random><suffix>``."""
    token = token or secrets.token_hex(_TOKEN // 2)
    return f"{target.stem}.{label}-{token}{target.suffix}"


def _derived_names(target: Path, lock: bool, extra: tuple[str, ...]) -> list[str]:
    """Every name writing ``target`` may create, at its longest."""
    widest = "f" * _TOKEN
    pid = 10**_PID_WIDTH - 1
    copy = target.with_name(rescue_name(target, token=widest))
    names = [target.name, temp_name(target, pid=pid, token=widest).name]
    names += [copy.name, temp_name(copy, pid=pid, token=widest).name]
    if lock:
        names += [lock_path(target).name, lock_path(copy).name]
    names += list(extra)
    return names


def _name_max(folder: Path) -> int:
    try:
        return int(os.pathconf(folder, "PC_NAME_MAX"))
    except (OSError, ValueError, AttributeError):
        return NAME_MAX


def _path_max(folder: Path) -> int:
    try:
        return int(os.pathconf(folder, "PC_PATH_MAX"))
    except (OSError, ValueError, AttributeError):
        return PATH_MAX


def _existing_ancestor(folder: Path) -> Path:
    """The nearest folder of ``folder``'s ancestry (itself included) that exists."""
    probe = folder if str(folder) else Path(".")
    while not os.path.lexists(probe):
        if probe.parent == probe:
            break
        probe = probe.parent
    return probe


# --------------------------------------------------------------------------------------------------
# checks before the work


def _kind(mode: int) -> str | None:
    """What a non-regular, non-folder file is (None for a regular file or a folder)."""
    if stat.S_ISREG(mode) or stat.S_ISDIR(mode):
        return None
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


def _refuse_special(path: Path, what: str) -> None:
    """Refuse an existing ``path`` that is a folder, a device, a FIFO or a socket."""
    try:
        st = os.stat(path)
    except OSError:
        return  # new (or a dangling link, which the rename replaces)
    if stat.S_ISDIR(st.st_mode):
        raise LandscapeError(f"the {what} {path} is a folder; give a file path")
    kind = _kind(st.st_mode)
    if kind is not None:
        raise LandscapeError(
            f"the {what} {path} is {kind}, not a regular file; landscape never replaces one, "
            "even with `overwrite=True`: choose another path"
        )


def _check_names(path: Path, what: str, lock: bool, extra: tuple[str, ...]) -> None:
    """Every derived name within the file system's limits (bytes, as the kernel counts)."""
    folder = path.parent if str(path.parent) else Path(".")
    anchor = _existing_ancestor(folder)
    limit = _name_max(anchor)
    parts = [p for p in folder.parts if p not in ("/", "")]
    for part in parts:
        if len(os.fsencode(part)) > limit:
            raise LandscapeError(
                f"cannot write the {what} {path}: the folder name {part[:40]!r}... is longer "
                f"than {limit} bytes"
            )
    names = _derived_names(path, lock, extra)
    longest = max(names, key=lambda n: len(os.fsencode(n)))
    size = len(os.fsencode(longest))
    if size > limit:
        own = len(os.fsencode(path.name))
        raise LandscapeError(
            f"cannot write the {what} {path}: its name is {own} bytes and the temporary, rescue "
            f"and lock files named after it need {size - own} more, past the {limit}-byte limit "
            f"on file names; choose a name of at most {limit - (size - own)} bytes"
        )
    full = len(os.fsencode(os.path.abspath(folder / longest)))
    if full >= _path_max(anchor):
        raise LandscapeError(
            f"cannot write the {what} {path}: its path, with the names landscape derives from "
            f"it, is {full} bytes, past the {_path_max(anchor)}-byte limit on paths"
        )


def _probe(folder: Path, what: str, path: Path) -> None:
    """Create and remove a file (a folder, if ``folder`` is yet to be made) to see that it works."""
    anchor = _existing_ancestor(folder)
    try:
        st = os.stat(anchor)
    except OSError as exc:
        raise LandscapeError(f"cannot write the {what} {path}: {anchor}: {_reason(exc)}") from None
    if not stat.S_ISDIR(st.st_mode):
        raise LandscapeError(
            f"cannot write the {what} {path}: {anchor} is a file, not a folder; choose another path"
        )
    name = f".landscape-probe.{os.getpid()}.{secrets.token_hex(4)}"
    probe = anchor / name
    try:
        if anchor == folder:
            fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW | _CLOEXEC, 0o600)
            os.close(fd)
            os.unlink(probe)
        else:  # the folder will be created: the nearest existing one must take a new folder
            os.mkdir(probe, 0o700)
            os.rmdir(probe)
    except OSError as exc:
        raise LandscapeError(
            f"cannot write the {what} {path}: folder {anchor} does not take new files "
            f"({_reason(exc)}); choose another path"
        ) from None


def check_output(
    path: str | os.PathLike[str],
    what: str = "output file",
    *,
    size: int = 0,
    lock: bool = False,
    extra_names: tuple[str, ...] = (),
) -> Path:
    """Refuse, before any work, an output path that landscape could not create or replace.

    Args:
        path: the file to write.
        what: what it is, for the message ("results file", "checkpoint", "report", ...).
        size: the bytes it will take (0: not checked): the disk must have that much free.
        lock: whether writing it takes its lock file (its name is checked too).
        extra_names: other names the output creates beside it (a scan journal and its lock).

    Returns:
        ``path`` as a Path.

    Raises:
        LandscapeError: a name or path too long, a folder that cannot be created or takes no new
            file, an existing folder, device, FIFO or socket at ``path``, or too little space.
    """
    p = Path(path)
    _refuse_special(p, what)
    folder = p.parent if str(p.parent) else Path(".")
    _check_names(p, what, lock, extra_names)
    _probe(folder, what, p)
    if size:
        require_space(p, size, what)
    return p


def check_folder(folder: str | os.PathLike[str], what: str = "output folder") -> Path:
    """Refuse early a folder that cannot be created, or that takes no new file."""
    f = Path(folder)
    try:
        st = os.stat(f)
    except OSError:
        st = None
    if st is not None and not stat.S_ISDIR(st.st_mode):
        raise LandscapeError(
            f"cannot write the {what} {f}: it exists and is not a folder; choose another path"
        )
    parts = [part for part in f.parts if part not in ("/", "")]
    limit = _name_max(_existing_ancestor(f))
    for part in parts:
        if len(os.fsencode(part)) > limit:
            raise LandscapeError(
                f"cannot write the {what} {f}: a folder name is longer than {limit} bytes"
            )
    _probe(f, what, f)
    return f


def free_bytes(path: str | os.PathLike[str]) -> int | None:
    """Bytes free for an unprivileged user on the disk that holds ``path`` (None: unknown)."""
    anchor = _existing_ancestor(Path(path))
    try:
        st = os.statvfs(anchor)
    except (OSError, AttributeError):
        return None
    return int(st.f_bavail) * int(st.f_frsize)


def require_space(path: str | os.PathLike[str], size: int, what: str = "output file") -> None:
    """Refuse (before the work) an output of about ``size`` bytes that its disk has no room for."""
    p = Path(path)
    free = free_bytes(p.parent if str(p.parent) else Path("."))
    need = _blocks(size) + SPACE_SLACK
    if free is not None and need > free:
        raise LandscapeError(
            f"not enough free space for the {what} {p}: it needs about {human(need)} and "
            f"{human(free)} is free there; free some space or choose another path"
        )


def check_input(path: str | os.PathLike[str], what: str = "input") -> None:
    """Refuse an input that is a FIFO, a device or a socket (reading one may never end)."""
    try:
        st = os.stat(path)
    except OSError:
        return  # missing: the caller says so in its own words
    kind = _kind(st.st_mode)
    if kind is not None:
        raise LandscapeError(f"the {what} {path} is {kind}, not a regular file")


def read_regular(path: str | os.PathLike[str]) -> bytes | None:
    """The bytes of a regular file, read without following a symlink (None if it is missing)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | _NOFOLLOW | _CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise LandscapeError(f"cannot read {path}: {_reason(exc)}") from None
    with os.fdopen(fd, "rb") as fh:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise LandscapeError(f"{path} is not a regular file")
        return fh.read()


def open_append(path: str | os.PathLike[str], what: str = "file") -> int:
    """A descriptor appending to a regular file, created if missing, never through a symlink."""
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | _NOFOLLOW | _CLOEXEC
    try:
        fd = os.open(path, flags, 0o666)
    except OSError as exc:
        raise WriteError(f"cannot write the {what} {path}: {_reason(exc)}") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise WriteError(f"cannot write the {what} {path}: it is not a regular file")
    return fd


# --------------------------------------------------------------------------------------------------
# writing


def ensure_parent(target: Path, what: str = "output file") -> None:
    """Create ``target``'s folder (and its parents) if missing."""
    folder = target.parent if str(target.parent) else Path(".")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise WriteError(
            f"cannot write the {what} {target}: cannot create folder {folder}: {_reason(exc)}"
        ) from None


def _alive(pid: int) -> bool:
    """Whether process ``pid`` exists (on this machine)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # another user's process: alive
        return True
    return True


def remove_stale_temps(target: Path) -> list[Path]:
    """Remove the temporary files of exactly ``target`` whose owning process is gone.

    Only names ``.<target name>.<pid>.<8 hex>.tmp`` count (so ``r.h5``'s writer never touches the
    temporary files of ``r.h5.x.h5``), only regular files, and never a live process's (this one's
    included). Returns what was removed.
    """
    folder = target.parent if str(target.parent) else Path(".")
    head = f".{target.name}."
    removed = []
    try:
        names = os.listdir(folder)
    except OSError:
        return removed
    for name in names:
        if not name.startswith(head):
            continue
        match = _TEMP_TAIL.fullmatch(name[len(head) :])
        if match is None:
            continue
        pid = int(match.group(1))
        if pid == os.getpid() or _alive(pid):
            continue
        path = folder / name
        with contextlib.suppress(OSError):
            if stat.S_ISREG(os.lstat(path).st_mode):
                os.unlink(path)
                removed.append(path)
    return removed


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY | _CLOEXEC)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def _blocks(nbytes: int) -> int:
    """The disk space ``nbytes`` take: whole 4 KiB blocks, and one more for the metadata."""
    return (int(nbytes) + 4095) // 4096 * 4096 + 4096


def _write_all(fd: int, data: memoryview) -> None:
    """Write every byte of ``data`` to ``fd`` (the one place bytes reach an output file)."""
    while data:
        n = os.write(fd, data[: 1 << 26])
        data = data[n:]


def write_atomic(
    target: str | os.PathLike[str],
    data: bytes | bytearray | memoryview | Callable[[Path], Any],
    *,
    what: str = "output file",
    size: int | None = None,
) -> Path:
    """Replace ``target`` with ``data`` atomically: a crash leaves the old file or the new one.

    ``data`` is the bytes to write, or a function that fills the temporary file at the path it
    is given (``size``, then, is the bytes it needs, checked against the free space). Missing
    folders are created. The temporary file is removed on any failure or interrupt. A target that
    is (or became meanwhile) a folder, device, FIFO or socket is not replaced.

    Raises:
        WriteError: the disk is full, the folder cannot be written, or the target cannot be
            replaced; nothing was changed and no temporary file is left.
    """
    target = Path(target)
    ensure_parent(target, what)
    folder = target.parent if str(target.parent) else Path(".")
    view = None if callable(data) else memoryview(data).cast("B")
    need = len(view) if view is not None else int(size or 0)
    free = free_bytes(folder)
    if free is not None and _blocks(need) > free:
        raise WriteError(
            f"cannot write the {what} {target}: No space left on device (it needs "
            f"{human(need)}, {human(free)} is free)"
        )
    try:
        _refuse_special(target, what)
    except LandscapeError as exc:
        raise WriteError(str(exc)) from None
    remove_stale_temps(target)
    tmp = temp_name(target)
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW | _CLOEXEC, 0o666)
    except OSError as exc:
        raise WriteError(f"cannot write the {what} {target}: {_reason(exc)}") from None
    try:
        try:
            if view is not None:
                _write_all(fd, view)
            else:
                data(tmp)  # type: ignore[operator]
            os.fsync(fd)  # the file's data, whichever descriptor wrote it
        finally:
            os.close(fd)
        try:
            _refuse_special(target, what)  # again: it may have become a device meanwhile
        except LandscapeError as exc:
            raise WriteError(str(exc)) from None
        with contextlib.suppress(OSError):  # a replaced file keeps its mode (set only now)
            old = os.stat(target)
            os.chmod(tmp, stat.S_IMODE(old.st_mode))
        os.replace(tmp, target)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(exc, OSError):
            raise WriteError(f"cannot write the {what} {target}: {_reason(exc)}") from None
        raise
    _fsync_dir(folder)
    return target


def rescue_folders(target: Path) -> list[Path]:
    """Where a rescue copy of ``target`` may go, in order: its folder, the working folder, temp."""
    places = []
    for folder in (target.parent, Path.cwd(), Path(tempfile.gettempdir())):
        folder = folder if str(folder) else Path(".")
        try:
            key = os.path.realpath(folder)
        except OSError:  # pragma: no cover
            continue
        if os.path.isdir(folder) and key not in [os.path.realpath(p) for p in places]:
            places.append(folder)
    return places


def rescue(
    target: str | os.PathLike[str],
    write_to: Callable[[Path], Any],
    *,
    what: str = "output file",
    verify: Callable[[Path], Any] | None = None,
    label: str = "rescued",
) -> Path:
    """Save a product that could not go to ``target`` in the first place that takes it.

    Tries a fresh ``<stem>.<label>-<random><suffix>`` in each of :func:`rescue_folders`:
    ``write_to(candidate)`` must write it atomically (raising :class:`WriteError` and leaving
    nothing on failure); the copy is then read back with ``verify`` (which raises if it is not
    what was written; a copy that fails is removed) and returned.

    Raises:
        WriteError: no place took it.
    """
    target = Path(target)
    tried = []
    for folder in rescue_folders(target):
        candidate = folder / rescue_name(target, label)
        if os.path.lexists(candidate):  # pragma: no cover - 32 random bits
            continue
        try:
            write_to(candidate)
        except WriteError:
            tried.append(str(folder))
            continue
        try:
            if os.path.getsize(candidate) == 0:
                raise WriteError(f"{candidate} is empty")
            if verify is not None:
                verify(candidate)
        except Exception:
            with contextlib.suppress(OSError):
                os.unlink(candidate)  # this process wrote it just now
            tried.append(str(folder))
            continue
        return candidate
    where = ", ".join(tried) or "no writable folder"
    raise WriteError(f"no rescue copy of the {what} could be written either (tried {where})")


def rescue_bytes(
    target: str | os.PathLike[str],
    data: bytes | bytearray | memoryview,
    *,
    what: str = "output file",
    verify: Callable[[Path], Any] | None = None,
) -> Path:
    """:func:`rescue` ``data``; each copy is read back, compared byte for byte, then verified."""

    def check(copy: Path) -> None:
        if not _same_bytes(copy, data):
            raise WriteError(f"{copy} does not read back as written")
        if verify is not None:
            verify(copy)

    return rescue(target, lambda p: write_atomic(p, data, what=what), what=what, verify=check)


def save(
    target: str | os.PathLike[str],
    data: bytes | bytearray | memoryview,
    *,
    what: str = "output file",
    product: str = "the result",
    verify: Callable[[Path], Any] | None = None,
) -> Path:
    """Write ``data`` to ``target`` atomically; if that fails, :func:`rescue_bytes` it, say where.

    Raises:
        LandscapeError: one line: why the write failed, and where ``product`` was saved instead
            (or that no copy could be saved).
    """
    target = Path(target)
    try:
        return write_atomic(target, data, what=what)
    except WriteError as exc:
        try:
            saved = rescue_bytes(target, data, what=what, verify=verify)
        except WriteError as again:
            raise LandscapeError(f"{exc}; {again}") from None
        raise LandscapeError(f"{exc}; {product} was saved to {saved} instead") from None


def _same_bytes(path: Path, data: bytes | bytearray | memoryview) -> bool:
    """Whether the file ``path`` holds exactly ``data`` (read back in 1 MiB chunks)."""
    view = memoryview(data).cast("B")
    offset = 0
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            if view[offset : offset + len(chunk)] != chunk:
                return False
            offset += len(chunk)
    return offset == len(view)


# --------------------------------------------------------------------------------------------------
# locks


@contextlib.contextmanager
def locked(
    target: str | os.PathLike[str],
    *,
    wait: bool = True,
    busy: Callable[[], LandscapeError] | None = None,
    what: str = "output file",
) -> Iterator[None]:
    """Hold an exclusive lock on ``<target>.lock`` (a no-op where ``fcntl`` is missing).

    The target's folder is created if missing. The lock file is created if missing (never
    through a symlink) and removed on release while still locked, if this process created it or
    it is empty (as one that a killed run left is; a non-empty file of that name is someone's data
    and stays). A process that waited on the removed file finds on waking that the name no longer
    leads to the file it locked, and locks the new one: at any time at most one process holds the
    lock on the file the name leads to. With ``wait=False`` a held lock raises ``busy()`` at once.
    """
    try:
        # lazy: under try (POSIX only)
        import fcntl
    except ImportError:  # pragma: no cover - non-POSIX
        yield
        return
    path = lock_path(Path(target))
    ensure_parent(path, what)
    flags = os.O_RDWR | _NOFOLLOW | _CLOEXEC
    while True:
        created = False
        try:
            fd = os.open(path, flags | os.O_CREAT | os.O_EXCL, 0o666)
            created = True
        except FileExistsError:
            try:
                fd = os.open(path, flags)
            except FileNotFoundError:  # removed meanwhile: try again
                continue
            except OSError as exc:
                raise WriteError(f"cannot use the lock file {path}: {_reason(exc)}") from None
        except OSError as exc:
            raise WriteError(
                f"cannot write the {what} {target}: cannot create its lock file {path}: "
                f"{_reason(exc)}"
            ) from None
        mine = os.fstat(fd)
        if not stat.S_ISREG(mine.st_mode):
            os.close(fd)
            raise WriteError(f"the lock file {path} is not a regular file; remove it")
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            os.close(fd)
            if busy is not None:
                raise busy() from None
            raise WriteError(f"{target} is locked by another process") from None
        except OSError as exc:
            if exc.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.EINVAL):
                os.close(fd)
                raise WriteError(f"cannot lock {path}: {_reason(exc)}") from None
            # a file system without locks: go on unlocked, as without fcntl
        try:
            now = os.stat(path, follow_symlinks=False)
        except FileNotFoundError:
            now = None
        if now is None or (now.st_ino, now.st_dev) != (mine.st_ino, mine.st_dev):
            os.close(fd)  # the holder before us removed it: lock the one the name leads to now
            continue
        break
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            if created or os.fstat(fd).st_size == 0:
                os.unlink(path)  # still locked: a waiter sees the name gone and starts over
        os.close(fd)


# --------------------------------------------------------------------------------------------------
# private folders


class PrivateFolder:
    """A per-user folder in the temporary directory, opened by a descriptor.

    Created with mode 0700 if missing; refused (:class:`LandscapeError`) if the name is a symlink,
    not a folder, or a folder of another user. Every file in it is opened relative to the
    descriptor without following symlinks, so swapping the folder for a link later changes
    nothing; nothing in it is removed but what this process created.

    Args:
        path: the folder.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        try:
            os.mkdir(self.path, 0o700)
        except FileExistsError:
            pass
        except OSError as exc:
            raise LandscapeError(f"cannot create {self.path}: {_reason(exc)}") from None
        flags = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | _NOFOLLOW | _CLOEXEC
        try:
            self.fd = os.open(self.path, flags)
        except OSError as exc:
            raise LandscapeError(
                f"{self.path} is not a folder of this user ({_reason(exc)}); not using it"
            ) from None
        st = os.fstat(self.fd)
        uid = os.getuid() if hasattr(os, "getuid") else st.st_uid
        if not stat.S_ISDIR(st.st_mode) or st.st_uid != uid:
            os.close(self.fd)
            raise LandscapeError(f"{self.path} is not a folder of this user; not using it")
        if stat.S_IMODE(st.st_mode) & 0o077:
            os.fchmod(self.fd, 0o700)  # our own folder, opened to others: close it

    def open(self, name: str, flags: int, mode: int = 0o600) -> int:
        """``os.open`` of ``name`` in the folder, never through a symlink."""
        return os.open(name, flags | _NOFOLLOW | _CLOEXEC, mode, dir_fd=self.fd)

    def replace(self, src: str, dst: str) -> None:
        """Rename ``src`` over ``dst``, both in the folder."""
        os.replace(src, dst, src_dir_fd=self.fd, dst_dir_fd=self.fd)

    def names(self) -> list[str]:
        """The names in the folder."""
        return os.listdir(self.fd)

    def remove(self, name: str) -> None:
        """Remove ``name`` (a file this process created) from the folder."""
        with contextlib.suppress(FileNotFoundError):
            os.unlink(name, dir_fd=self.fd)

    def close(self) -> None:
        """Close the folder's descriptor."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
