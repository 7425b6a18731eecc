"""Fault injection (issue 22): every command that writes, against every way its run can end badly.

The matrix is {hessian, scan, audit, train} × {SIGTERM, SIGINT, a second SIGINT during the
cleanup, SIGKILL; a disk that is full before the run or fills up during it; a concurrent writer
with the same or other options; a symlink planted at the per-user temporary folder}. Every cell
starts from a folder holding the checkpoint and an earlier complete result, and asserts:

- the earlier complete file is byte-identical (for ``scan``, which stores its points in the file as
  it computes them, the earlier groups are);
- the new result is written, or rescued and readable, or refused;
- no temporary, lock, journal, probe or empty file is left (a scan's journal that keeps points
  the full disk could not take is the exception, and the same command then stores them);
- stderr holds exactly one ``error:`` line (after the progress lines), the last, with the
  documented exit code: 2 for errors, 130 for SIGINT, 143 for SIGTERM; a run that ends well has
  none.

Signals are sent in-process at a seeded random unit of work (an HVP, a scan point, a training
step, an audit measure): the handlers are the ones the CLI installs. SIGKILL, a real SIGTERM and a
real double Ctrl-C are sent to subprocesses. The disk is a small tmpfs where the tests can mount
one (as root), else a disk simulated in the one writer every output goes through
(``landscape_cli.files._write_all``).
"""

from __future__ import annotations

import contextlib
import errno
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from cases import FAST, runner

from landscape_cli import files
from landscape_cli.commands import _common, _threads, app
from landscape_cli.results import read_hessian, read_scan
from landscape_cli.training import TrainConfig

COMMANDS = ["hessian", "scan", "audit", "train"]
MLP = ["--model", "mlp", "--model-option", "hidden=[4]"]
#: Units of work (progress advances) each command's run takes: signals land before the last.
#: Phases of each command's run (the progress display's): another writer comes between two.
PHASES = {"hessian": 3, "scan": 1, "audit": 4, "train": 2}


def args_of(command: str, folder: Path) -> list[str]:
    """The command line of ``command``'s run in ``folder`` (the checkpoint is ``ck.pt`` there)."""
    ck, out = str(folder / "ck.pt"), str(folder / "r.h5")
    if command == "hessian":
        return ["hessian", ck, "--out", out, *FAST, "--top-k", "2", "--trace-probes", "4",
                "--density-probes", "2", "--lanczos-steps", "8"]  # fmt: skip
    if command == "scan":
        return ["scan", ck, "--out", out, "--points", "9", "--samples", "32",
                "--fold-every", "1000"]  # fmt: skip
    if command == "audit":  # writes ck.h5 beside the checkpoint
        return ["audit", ck, *FAST, "--top-k", "1", "--trace-probes", "2", "--density-probes", "0"]
    return ["train", *MLP, "--epochs", "2", "--save-every", "1", "--out", str(folder / "run.pt")]


def target_of(command: str, folder: Path) -> Path:
    """The file ``command``'s run writes (and where its earlier complete result is)."""
    return folder / {"audit": "ck.h5", "train": "run.pt"}.get(command, "r.h5")


@pytest.fixture(scope="module")
def earlier(tmp_path_factory, trained_checkpoint):
    """The checkpoint, and for each command the bytes of an earlier complete result."""
    folder = tmp_path_factory.mktemp("earlier")
    ck = trained_checkpoint(TrainConfig(model="mlp", model_options={"hidden": [4]}, epochs=1))
    shutil.copyfile(ck, folder / "ck.pt")
    made = {"ck.pt": (folder / "ck.pt").read_bytes()}
    for command in COMMANDS:
        args = args_of(command, folder)
        if command == "scan":  # another scan, complete, in the file the run adds its scan to
            args = [*args[:4], "--points", "3", "--samples", "32", "--name", "early"]
        ok(runner.invoke(app, args))
        made[command] = target_of(command, folder).read_bytes()
    return made


@pytest.fixture(scope="module")
def units(earlier, tmp_path_factory) -> dict[str, int]:
    """The units of work (progress updates) of each command's run, counted on a run of it."""
    counted = {}
    for command in COMMANDS:
        folder = tmp_path_factory.mktemp(f"units-{command}")
        setup(folder, earlier, command, result=False)
        seen = {"n": 0}
        rebalance = _threads.rebalance

        def unit(seen=seen, rebalance=rebalance) -> None:
            seen["n"] += 1
            rebalance()

        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(_threads, "rebalance", unit)
            ok(runner.invoke(app, args_of(command, folder)))
        counted[command] = seen["n"]
    return counted


def setup(folder: Path, earlier: dict[str, bytes], command: str, result: bool = True) -> Path:
    """``folder`` with the checkpoint and (``result``) ``command``'s earlier result.

    Returns ``command``'s target.
    """
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "ck.pt").write_bytes(earlier["ck.pt"])
    target = target_of(command, folder)
    if result:
        target.write_bytes(earlier[command])
    return target


# -- what every cell asserts ---------------------------------------------------------------------


def ok(result) -> None:
    """A run that ended well: exit 0, no error line, no traceback."""
    assert result.exit_code == 0, result.output
    assert "error:" not in result.stderr and "Traceback" not in result.output


def one_error(result, code: int) -> str:
    """Exit ``code``, no traceback, and exactly one ``error:`` line on stderr: the last one."""
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    lines = result.stderr.splitlines()
    errors = [line for line in lines if line.startswith("error: ")]
    others = [line for line in lines if not line.startswith("error: ")]
    assert len(errors) == 1 and lines[-1] == errors[0], result.stderr
    assert all(line.startswith(("[", "note: ")) for line in others), result.stderr  # progress
    return errors[0]


def leftovers(folder: Path, allow: tuple[str, ...] = ()) -> list[str]:
    """Temporary, lock, journal and probe files, and empty files, in ``folder``."""
    bad = []
    for path in folder.iterdir():
        name = path.name
        if name in allow or name == "fill" or path.is_dir():
            continue
        if (
            name.endswith((".tmp", ".lock", ".journal"))
            or name.startswith(".landscape-probe")
            or path.stat().st_size == 0
        ):
            bad.append(name)
    return bad


def scan_groups(path: Path) -> dict[str, bytes]:
    """Every dataset of ``path`` but ``/scan/1d-random`` (the run's own), as bytes."""
    out = {}
    with h5py.File(path, "r") as f:

        def visit(name, obj):
            if isinstance(obj, h5py.Dataset) and not name.startswith("scan/1d-random"):
                out[name] = np.asarray(obj[()]).tobytes()

        f.visititems(visit)
    return out


def earlier_kept(command: str, target: Path, earlier: dict[str, bytes]) -> None:
    """The earlier complete result is intact: byte-identical, or (scan) its groups are."""
    if command == "scan":
        import tempfile

        with tempfile.TemporaryDirectory() as folder:  # not beside it: that disk may be full
            before = Path(folder) / "before.h5"
            before.write_bytes(earlier["scan"])
            assert scan_groups(target) == scan_groups(before)
    else:
        assert target.read_bytes() == earlier[command]


def readable(command: str, path: Path) -> None:
    """``path`` reads back as ``command``'s product."""
    if command == "train":
        ck = torch.load(path, weights_only=True)
        assert ck["format"] == "landscape-checkpoint" and ck["train"]["epoch"] >= 1
    elif command == "scan":
        assert read_scan(path, "1d-random").loss.shape == (9,)
    elif command == "audit":
        with h5py.File(path, "r") as f:
            assert "audit" in f and "lambda_max" in f["audit"].attrs
    else:
        assert len(read_hessian(path)["eigenvalues"]) == 2


# -- signals at a random unit of work, in-process ----------------------------------------------


@contextlib.contextmanager
def signals_at(monkeypatch, at: int, signals: list[int]):
    """Send ``signals[0]`` at unit of work ``at``; any next one at the cleanup's first step.

    The cleanup's first step is the first output written, or the progress display closed, after
    the first signal (so a second Ctrl-C lands while the partial result is being saved).
    """
    state = {"units": 0, "rest": list(signals)}
    rebalance = _threads.rebalance
    write_atomic = files.write_atomic
    close = _common.PlainProgress.close

    def again() -> None:
        if state["rest"] and len(state["rest"]) < len(signals):
            os.kill(os.getpid(), state["rest"].pop(0))

    def unit() -> None:
        state["units"] += 1
        if state["units"] == at and state["rest"]:
            os.kill(os.getpid(), state["rest"].pop(0))
        rebalance()

    def write(*args, **kwargs):
        again()
        return write_atomic(*args, **kwargs)

    def closing(self, exc_type=None):
        again()
        return close(self, exc_type)

    monkeypatch.setattr(_threads, "rebalance", unit)
    monkeypatch.setattr(files, "write_atomic", write)
    monkeypatch.setattr(_common.PlainProgress, "close", closing)
    yield state


SIGNAL_CELLS = {
    "SIGTERM": ([signal.SIGTERM], 143),
    "SIGINT": ([signal.SIGINT], 130),
    "double-SIGINT": ([signal.SIGINT, signal.SIGINT], 130),
}


@pytest.mark.parametrize("fault", list(SIGNAL_CELLS))
@pytest.mark.parametrize("command", COMMANDS)
def test_signals_keep_the_earlier_result_and_leave_nothing(
    command, fault, earlier, units, tmp_path, monkeypatch
):
    sent, code = SIGNAL_CELLS[fault]
    target = setup(tmp_path, earlier, command)
    at = random.Random(f"{command}-{fault}").randint(1, units[command] - 1)
    with signals_at(monkeypatch, at, sent) as state:
        result = runner.invoke(app, args_of(command, tmp_path))
    assert not state["rest"]  # every signal was sent
    line = one_error(result, code)
    assert line.startswith("error: " + ("terminated" if code == 143 else "interrupted"))
    assert not leftovers(tmp_path)
    if command == "train":  # the last checkpoint written stays: the earlier one, or epoch 1's
        if target.read_bytes() != earlier["train"]:
            readable("train", target)
            readable("train", tmp_path / "run-epoch1.pt")
        return
    earlier_kept(command, target, earlier)
    if command == "hessian":  # a complete /hessian is never replaced by a partial one
        partial = list(tmp_path.glob("r.partial-*.h5"))
        assert len(partial) <= 1
        if partial:
            assert str(partial[0]) in line and read_hessian(partial[0])["attrs"]["partial"]
    if command == "scan":  # the points computed before the signal are in the file
        assert int(np.sum(~np.isnan(read_scan(target, "1d-random").loss))) == at


# -- a disk that is full, or fills up during the run ---------------------------------------------


class Disk:
    """A small disk at ``path``: a 512 KiB tmpfs where the test may mount one, else simulated.

    Simulated: the free space that :func:`landscape_cli.files.free_bytes` reports and that
    :func:`landscape_cli.files._write_all` (every byte of every output) may use is a budget.
    """

    SIZE = 512 * 1024

    def __init__(self, path: Path, monkeypatch, simulate: bool = False) -> None:
        self.path = path
        path.mkdir()
        mount = ["mount", "-t", "tmpfs", "-o", f"size={self.SIZE}", "tmpfs", str(path)]
        self.mounted = (
            not simulate
            and hasattr(os, "geteuid")
            and os.geteuid() == 0
            and shutil.which("mount") is not None
            and subprocess.run(mount, capture_output=True).returncode == 0
        )
        self.budget: int | None = None
        if not self.mounted:
            self._simulate(monkeypatch)

    def _simulate(self, monkeypatch) -> None:
        free_bytes, write_all = files.free_bytes, files._write_all
        root = str(self.path)

        def free(path):
            inside = os.path.abspath(path).startswith(root)
            return self.budget if inside and self.budget is not None else free_bytes(path)

        def write(fd, data):
            inside = os.readlink(f"/proc/self/fd/{fd}").startswith(root)
            if inside and self.budget is not None:
                if len(data) > self.budget:
                    write_all(fd, data[: self.budget])
                    self.budget = 0
                    raise OSError(errno.ENOSPC, "No space left on device")
                self.budget -= len(data)
            return write_all(fd, data)

        monkeypatch.setattr(files, "free_bytes", free)
        monkeypatch.setattr(files, "_write_all", write)

    def leave(self, nbytes: int) -> None:
        """Fill the disk up to ``nbytes`` free."""
        if not self.mounted:
            self.budget = nbytes
            return
        st = os.statvfs(self.path)
        fill = max(0, st.f_bavail * st.f_frsize - nbytes)
        with open(self.path / "fill", "ab") as fh:
            fh.write(b"\0" * fill)

    def close(self) -> None:
        if self.mounted:
            subprocess.run(["umount", "-l", str(self.path)], capture_output=True)


@pytest.fixture
def disk(tmp_path, monkeypatch, request):
    d = Disk(tmp_path / "disk", monkeypatch, simulate=getattr(request, "param", "") == "simulated")
    try:
        yield d
    finally:
        d.close()


@pytest.mark.parametrize(("disk", "free_kib"), [("tmpfs", 0), ("simulated", 12)], indirect=["disk"])
@pytest.mark.parametrize("command", COMMANDS)
def test_a_full_disk_is_refused_before_any_work(command, free_kib, earlier, disk, tmp_path):
    target = setup(disk.path, earlier, command)
    disk.leave(free_kib * 1024)
    result = runner.invoke(app, args_of(command, disk.path))
    line = one_error(result, 2)
    assert "not enough free space" in line and "[" not in result.stderr  # no work started
    earlier_kept(command, target, earlier)
    assert not leftovers(disk.path)


@pytest.mark.parametrize("free_kib", [0, 8, 40, "8-unseen"])
@pytest.mark.parametrize("command", COMMANDS)
def test_a_disk_that_fills_up_during_the_run(
    command, free_kib, earlier, units, disk, tmp_path, monkeypatch
):
    """Someone fills the disk while the work runs: the result is written or rescued, never lost.

    ``8-unseen``: 8 KiB are left, but the file system reports plenty (quotas, network disks), so
    the write itself runs out of space half-way.
    """
    if free_kib == "8-unseen":
        free_kib = 8
        real_free = files.free_bytes
        monkeypatch.setattr(files, "free_bytes", lambda path: 1 << 30 if real_free(path) else None)
    target = setup(disk.path, earlier, command)
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    most = 11 if command == "train" else units[command] - 1  # train: before its first save
    at = random.Random(f"{command}-{free_kib}").randint(1, most)
    rebalance = _threads.rebalance
    units = {"n": 0}

    def unit() -> None:
        units["n"] += 1
        if units["n"] == at:
            disk.leave(free_kib * 1024)
        rebalance()

    monkeypatch.setattr(_threads, "rebalance", unit)
    result = runner.invoke(app, args_of(command, disk.path))
    if result.exit_code == 0:  # it fitted: the new result is written
        readable(command, target)
        assert not leftovers(disk.path)
        return
    line = one_error(result, 2)
    assert "No space left on device" in line
    if command == "scan":  # the journal keeps the points; the same command stores them later
        journal = [p for p in disk.path.iterdir() if p.name.endswith(".journal")]
        assert str(journal[0]) in line and len(journal) == 1
        earlier_kept(command, target, earlier)
        assert not leftovers(disk.path, allow=(journal[0].name,))
        (disk.path / "fill").unlink(missing_ok=True)
        disk.budget = None
        ok(runner.invoke(app, args_of(command, disk.path)))
        readable(command, target)
        assert not leftovers(disk.path)
        return
    earlier_kept(command, target, earlier)
    rescued = list(cwd.iterdir())  # the output's folder is full: the working folder took it
    assert len(rescued) == 1 and str(rescued[0]) in line and ".rescued-" in rescued[0].name
    readable(command, rescued[0])
    assert not leftovers(disk.path) and not leftovers(cwd)


# -- a concurrent writer -------------------------------------------------------------------------


def _other_writer(command: str, folder: Path, same: bool):
    """A second writer of ``command``'s target, run to completion (library calls).

    With other options it replaces the earlier result (``overwrite``), as a user who means to.
    """
    from landscape_cli.audit import AuditSettings
    from landscape_cli.hessian import HessianSettings
    from landscape_cli.jobs import ScanOptions, Source, audit_job, hessian_job, scan_job
    from landscape_cli.training import train

    ck, source = folder / "ck.pt", Source(samples=32, batch_size=32)
    if command == "hessian":
        s = dict(top_k=2 if same else 1, trace_probes=4, density_probes=2, lanczos_steps=8)
        hessian_job(
            ck, HessianSettings(**s), source=source, out=folder / "r.h5", overwrite=not same
        )
    elif command == "scan":  # the same scan is refused at once; another one goes into the file
        options = ScanOptions(points=9, fold_every=1000, name=None if same else "other")
        scan_job(ck, options, source=Source(samples=32, batch_size=512), out=folder / "r.h5")
    elif command == "audit":
        audit_job([ck], AuditSettings(top_k=1 if same else 2, trace_probes=2, density_probes=0),
                  source=source, overwrite=not same)  # fmt: skip
    else:
        config = TrainConfig(model="mlp", model_options={"hidden": [4]}, epochs=2)
        config = config if same else TrainConfig(**{**config.__dict__, "lr": 0.002})
        train(config, out=folder / "run.pt", overwrite=not same)


@pytest.mark.parametrize("same", [True, False], ids=["same-options", "other-options"])
@pytest.mark.parametrize("command", COMMANDS)
def test_a_concurrent_writer(command, same, earlier, tmp_path, monkeypatch):
    """Another run writes the same file while this one works: nothing vanishes silently."""
    from landscape_cli.errors import LandscapeError

    target = setup(tmp_path, earlier, command)
    at = random.Random(f"{command}-{same}").randint(1, PHASES[command])
    phase = _common.PlainProgress.phase
    seen: dict[str, object] = {"n": 0}

    def next_phase(self, *args, **kwargs) -> None:  # between two phases of this run's work
        seen["n"] += 1
        if seen["n"] == at:
            try:
                _other_writer(command, tmp_path, same)
            except LandscapeError as exc:
                seen["refused"] = str(exc)
            seen["after"] = target.read_bytes()
        phase(self, *args, **kwargs)

    monkeypatch.setattr(_common.PlainProgress, "phase", next_phase)
    result = runner.invoke(app, args_of(command, tmp_path))
    if command == "scan":  # one run per scan at a time; other scans share the file
        assert ("in use by another process" in seen.get("refused", "")) is same
        ok(result)
        readable("scan", target)
        names = {"early", "1d-random"} | (set() if same else {"other"})
        with h5py.File(target, "r") as f:
            assert set(f["scan"]) == names
    elif same:  # the same options: the later result replaces the other one
        assert "refused" not in seen
        ok(result)
        readable(command, target)
    else:  # other options: the other run's file stays, this run's result is rescued
        assert "refused" not in seen
        line = one_error(result, 2)
        assert "meanwhile" in line and target.read_bytes() == seen["after"]
        rescued = list(tmp_path.glob("*.rescued-*"))
        assert len(rescued) == 1 and str(rescued[0]) in line
        readable(command, rescued[0])
    assert not leftovers(tmp_path)


# -- a symlink planted at the per-user temporary folder -----------------------------------------


@pytest.mark.parametrize("command", COMMANDS)
def test_a_symlinked_temp_entry_is_neither_followed_nor_emptied(
    command, earlier, tmp_path, monkeypatch
):
    """``$TMPDIR/landscape-cpu-<uid>`` links to someone's folder: every file there stays."""
    import tempfile

    work = tmp_path / "work"
    setup(work, earlier, command)
    shared, victim = tmp_path / "T", tmp_path / "V"
    shared.mkdir()
    victim.mkdir()
    (victim / "thesis.tex").write_text("x")
    (victim / "12345").write_text("")  # named as a CPU-share file
    (shared / f"landscape-cpu-{os.getuid()}").symlink_to(victim)
    monkeypatch.setenv("TMPDIR", str(shared))
    monkeypatch.setattr(tempfile, "tempdir", None)
    monkeypatch.setattr(_threads, "_state", dict(_threads._state))
    threads = torch.get_num_threads()
    try:
        _threads.start(environ={})
        ok(runner.invoke(app, args_of(command, work)))
    finally:
        share = _threads._state["share"]
        if share is not None:
            share.close()
        torch.set_num_threads(threads)
    assert sorted(p.name for p in victim.iterdir()) == ["12345", "thesis.tex"]
    assert (victim / "thesis.tex").read_text() == "x"
    assert sorted(p.name for p in shared.iterdir()) == [f"landscape-cpu-{os.getuid()}"]
    readable(command, target_of(command, work))
    assert not leftovers(work)


# -- real signals to real processes --------------------------------------------------------------


def _spawn(args: list[str], cwd: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
    def default_sigint() -> None:  # a background job of a non-interactive shell ignores it
        signal.signal(signal.SIGINT, signal.SIG_DFL)

    return subprocess.Popen(
        [sys.executable, "-m", "landscape_cli", *args],
        cwd=cwd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=env or {**os.environ, "OMP_NUM_THREADS": "1"},
        preexec_fn=default_sigint,
    )


def _wait_for_work(proc: subprocess.Popen, deadline: float) -> str:
    """Read stderr until the first progress line (the work started); returns what was read."""
    seen = ""
    while time.monotonic() < deadline and proc.poll() is None:
        line = proc.stderr.readline()
        seen += line
        if line.startswith("["):
            break
    return seen


@pytest.mark.slow
def test_real_signals_kill_term_and_a_double_ctrl_c(earlier, tmp_path):
    """In parallel: SIGKILL each command at a random moment of its work (then the same command
    completes and leaves nothing), SIGTERM a scan, Ctrl-C a Hessian twice, ``--version`` beside a
    planted symlink."""
    rng = random.Random(22)
    runs = {}
    for command in COMMANDS:
        folder = tmp_path / f"kill-{command}"
        setup(folder, earlier, command)
        runs[f"kill-{command}"] = (command, folder, [signal.SIGKILL])
    long_scan = ["--points", "201", "--samples", "1024"]  # long enough to be caught mid-way
    term = tmp_path / "term"
    setup(term, earlier, "scan")
    runs["term-scan"] = ("scan", term, [signal.SIGTERM])
    double = tmp_path / "double"
    setup(double, earlier, "hessian", result=False)  # its options differ from the earlier run's
    runs["double-hessian"] = ("hessian", double, [signal.SIGINT, signal.SIGINT])
    procs = {}
    for key, (command, folder, _) in runs.items():
        args = args_of(command, folder)
        if key == "term-scan":
            args = [*args[:4], *long_scan]
        if key == "double-hessian":
            args = [*args[:4], "--samples", "1024", "--density-probes", "10"]
        procs[key] = _spawn(args, folder)
    shared, victim = tmp_path / "T", tmp_path / "V"
    shared.mkdir()
    victim.mkdir()
    (victim / "thesis.tex").write_text("x")
    (shared / f"landscape-cpu-{os.getuid()}").symlink_to(victim)
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    version = subprocess.run(
        [sys.executable, "-m", "landscape_cli", "--version"],
        env={**env, "TMPDIR": str(shared)},
        capture_output=True,
        text=True,
    )
    assert version.returncode == 0 and version.stdout.startswith("landscape ")
    assert [p.name for p in victim.iterdir()] == ["thesis.tex"]

    deadline = time.monotonic() + 240
    delays = {key: rng.uniform(0.0, 0.2) for key in procs}

    def drive(key: str) -> tuple[int, str]:  # each process signalled as soon as its work starts
        proc, (_, _, sent) = procs[key], runs[key]
        seen = _wait_for_work(proc, deadline)
        time.sleep(delays[key])
        for signum in sent:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signum)
            time.sleep(0.05)
        code = proc.wait(timeout=max(1.0, deadline - time.monotonic()))
        return code, seen + proc.stderr.read()

    with ThreadPoolExecutor(len(procs)) as pool:
        outcome = dict(zip(procs, pool.map(drive, procs), strict=True))
    for key, (code, err) in outcome.items():
        command, folder, sent = runs[key]
        target = target_of(command, folder)
        assert "Traceback" not in err, err
        if sent == [signal.SIGKILL]:
            assert code in (-signal.SIGKILL, 0), err  # killed, or done before the kill came
            # the file is the earlier one or a complete new one, never torn; the same command
            # then runs to the end and cleans up after the killed one
            if command == "scan":
                earlier_kept(command, target, earlier)
            elif target.read_bytes() != earlier[command]:
                readable(command, target)
            ok(runner.invoke(app, args_of(command, folder)))
            readable(command, target)
            assert not leftovers(folder), key
            continue
        errors = [line for line in err.splitlines() if line.startswith("error: ")]
        if code == 0:  # it finished before the signal came
            assert not errors
            continue
        expected = 143 if sent == [signal.SIGTERM] else 130
        assert code == expected and len(errors) == 1 and err.splitlines()[-1] == errors[0], err
        assert not leftovers(folder), key
        if command == "scan":  # the points computed before SIGTERM were folded into the file
            earlier_kept(command, target, earlier)
            assert errors[0] == "error: terminated"
            assert np.sum(~np.isnan(read_scan(target, "1d-random").loss)) > 0
        elif target.exists():  # what the Hessian run finished before Ctrl-C, marked partial
            assert str(target) in errors[0] and read_hessian(target)["attrs"]["partial"]
