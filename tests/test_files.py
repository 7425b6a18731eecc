"""The rules of ``landscape_cli.files`` (issue 22), each on the commands that the rule protects.

Outputs checked before any work (name lengths with every derived name, folders, types, space),
temporary files of exactly one target, lock files that do not outlive their run, the private CPU
folder, inputs that are not regular files, scan journals that belong to one scan, the snapshots
and default paths of ``train``, rescues that are read back, and the modes of new and rewritten
files.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import threading

import h5py
import numpy as np
import pytest
import torch
from cases import FAST, HFAST, one_error_line, runner

from landscape_cli import files
from landscape_cli.checkpoints import save_checkpoint
from landscape_cli.commands import app
from landscape_cli.errors import LandscapeError
from landscape_cli.results import read_scan, update_file
from landscape_cli.training import TrainConfig, config_tag, default_output

MLP = ["--model", "mlp", "--model-option", "hidden=[4]"]


def _nothing_made(folder, before: set[str]) -> None:
    assert {p.name for p in folder.iterdir()} == before


# -- checked before any work ---------------------------------------------------------------------


def test_every_output_path_is_refused_before_any_work(ckpt, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    shutil.copyfile(ckpt, tmp_path / "ck.pt")
    (tmp_path / "rep-fig5.png").mkdir()
    os.mkfifo(tmp_path / "fifo.h5")
    before = {p.name for p in tmp_path.iterdir()}
    long = "a" * 232 + ".h5"  # 235 bytes: valid, but its temporary and rescue names are not
    cases = [
        (["hessian", "ck.pt", *HFAST, "--out", long], "choose a name of at most"),
        (["scan", "ck.pt", "--points", "3", "--samples", "32", "--out", long], "at most"),
        (["train", *MLP, "--epochs", "1", "--out", "b" * 236 + ".pt"], "at most"),
        (["audit", "ck.pt", *HFAST[:4], "--report", "r" * 247 + ".md"], "at most"),
        (["audit", "ck.pt", *HFAST[:4], "--report", "rep.md"], "rep-fig5.png is a folder"),
        (["audit", "ck.pt", *HFAST[:4], "--report", "/proc/r.md"], "does not take new files"),
        (["hessian", "ck.pt", *HFAST, "--out", "ck.pt/x.h5"], "is a file, not a folder"),
        (["hessian", "ck.pt", *HFAST, "--out", "fifo.h5", "--overwrite"], "is a FIFO"),
        (["train", *MLP, "--out", "fifo.h5", "--overwrite"], "is a FIFO"),
        (["plot", "--figure", "fig2", "--out", "c" * 250 + ".png"], "at most"),
    ]
    for args, expected in cases:
        result = runner.invoke(app, args)
        assert expected in one_error_line(result), args
        assert "[" not in result.stderr  # refused before the first phase of work
        _nothing_made(tmp_path, before)


@pytest.mark.skipif(os.geteuid() != 0, reason="mknod needs root")
def test_a_device_is_never_replaced_even_with_overwrite(tmp_path):
    dev = tmp_path / "null"
    os.mknod(dev, 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    args = ["train", *MLP, "--epochs", "1", "--out", str(dev), "--overwrite"]
    assert "is a device" in one_error_line(runner.invoke(app, args))
    assert stat.S_ISCHR(os.lstat(dev).st_mode)
    with pytest.raises(files.WriteError, match="is a device"):  # the writer refuses it too
        files.write_atomic(dev, b"x")
    assert stat.S_ISCHR(os.lstat(dev).st_mode)


def test_inputs_that_are_fifos_are_refused_not_waited_on(ckpt, tmp_path):
    fifo = tmp_path / "in.pt"
    os.mkfifo(fifo)
    cases = [
        ["hessian", str(fifo), *HFAST],
        ["train", "--resume", str(fifo)],
        ["scan", str(ckpt), "--to", str(fifo), "--points", "3", "--samples", "32",
         "--out", str(tmp_path / "s.h5")],
    ]  # fmt: skip
    for args in cases:
        assert "is a FIFO, not a regular file" in one_error_line(runner.invoke(app, args))


def test_a_scan_into_a_new_folder_creates_it(ckpt, tmp_path):
    out = tmp_path / "new" / "deeper" / "x.h5"
    args = ["scan", str(ckpt), "--points", "3", "--samples", "32", "--out", str(out)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert read_scan(out).loss.shape == (3,)
    assert sorted(p.name for p in out.parent.iterdir()) == ["x.h5"]  # no journal, no lock


def test_free_space_is_checked_before_the_work(ckpt, tmp_path, monkeypatch):
    monkeypatch.setattr(files, "free_bytes", lambda path: 20 * 1024)
    args = ["hessian", str(ckpt), *FAST, "--top-k", "2", "--density-probes", "2", "--out"]
    line = one_error_line(runner.invoke(app, [*args, str(tmp_path / "r.h5")]))
    assert "not enough free space for the results file" in line and "20.0 KiB is free" in line
    assert not list(tmp_path.iterdir())


# -- temporary files, rescues, locks -------------------------------------------------------------


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_a_writer_removes_only_stale_temporary_files_of_exactly_its_target(tmp_path):
    target = tmp_path / "r.h5"
    dead, live = _dead_pid(), os.getppid()
    mine = tmp_path / f".r.h5.{dead}.0123abcd.tmp"  # r.h5's, its writer gone
    alive = tmp_path / f".r.h5.{live}.0123abcd.tmp"  # r.h5's, its writer alive
    other = tmp_path / f".r.h5.x.h5.{dead}.0123abcd.tmp"  # r.h5.x.h5's, not r.h5's
    similar = tmp_path / ".r.h5.notes.tmp"  # not a landscape temporary file at all
    for path in (mine, alive, other, similar):
        path.write_bytes(b"data")
    update_file(target, {}, lambda f: f.create_group("a"))
    assert not mine.exists() and alive.exists() and other.exists() and similar.exists()
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith(".")) == ["r.h5"]


def test_a_rescue_goes_to_the_first_place_that_takes_it_and_is_read_back(tmp_path, monkeypatch):
    out_dir, cwd = tmp_path / "out", tmp_path / "cwd"
    out_dir.mkdir()
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    real = files._write_all

    def full(fd, data):  # the output's folder is full
        if os.readlink(f"/proc/self/fd/{fd}").startswith(str(out_dir)):
            raise OSError(28, "No space left on device")
        return real(fd, data)

    monkeypatch.setattr(files, "_write_all", full)
    old = os.umask(0o027)
    try:
        with pytest.raises(LandscapeError) as info:
            files.save(out_dir / "run.pt", b"weights", what="checkpoint", product="the model")
    finally:
        os.umask(old)
    (rescued,) = list(cwd.iterdir())
    assert str(info.value).endswith(f"the model was saved to {rescued} instead")
    assert "No space left on device" in str(info.value) and rescued.read_bytes() == b"weights"
    assert stat.S_IMODE(rescued.stat().st_mode) == 0o640  # 0o666 less the umask
    assert not list(out_dir.iterdir())  # no temporary or empty file left where it failed

    def corrupt(fd, data):  # a copy that does not read back as written is not named
        full(fd, data)
        return real(fd, bytes(len(data)))

    monkeypatch.setattr(files, "_write_all", corrupt)
    with pytest.raises(LandscapeError, match="no rescue copy"):
        files.save(out_dir / "x.pt", b"weights")
    assert [p.name for p in cwd.iterdir()] == [rescued.name] and not list(out_dir.iterdir())


def test_locks_leave_no_file_and_exclude_each_other(tmp_path):
    target = tmp_path / "r.h5"
    inside, order = [0], []

    def writer(name: str) -> None:
        for _ in range(15):
            with files.locked(target):
                inside[0] += 1
                assert inside[0] == 1  # nobody else holds it
                order.append(name)
                inside[0] -= 1

    threads = [threading.Thread(target=writer, args=(n,)) for n in "abc"]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(order) == 45 and not list(tmp_path.iterdir())
    (tmp_path / "r.h5.lock").write_text("someone's notes")  # not a lock file of ours
    with files.locked(target):
        pass
    assert (tmp_path / "r.h5.lock").read_text() == "someone's notes"
    (tmp_path / "r.h5.lock").unlink()
    (tmp_path / "r.h5.lock").symlink_to(tmp_path / "victim")
    with pytest.raises(LandscapeError), files.locked(target):
        pass
    assert not (tmp_path / "victim").exists()


def test_concurrent_writers_of_one_file_keep_every_group_and_leave_no_lock(tmp_path):
    out = tmp_path / "r.h5"
    code = (
        "import sys; from landscape_cli.results import update_file\n"
        "for i in range(6):\n"
        "    update_file(sys.argv[1], {}, lambda f: f.create_group(f'{sys.argv[2]}{i}'))\n"
    )
    procs = [
        subprocess.Popen([sys.executable, "-c", code, str(out), name]) for name in ("a", "b", "c")
    ]
    assert all(p.wait(timeout=120) == 0 for p in procs)
    with h5py.File(out, "r") as f:
        assert sorted(f) == sorted(f"{n}{i}" for n in "abc" for i in range(6))
    assert [p.name for p in tmp_path.iterdir()] == ["r.h5"]


def test_train_saves_the_trained_model_beside_a_checkpoint_it_cannot_write(tmp_path, monkeypatch):
    out = tmp_path / "run.pt"
    real = files._write_all

    def disk_full(fd, data):  # the temporary file of run.pt, and only it, finds the disk full
        if os.readlink(f"/proc/self/fd/{fd}").startswith(str(tmp_path / ".run.pt.")):
            raise OSError(28, "No space left on device")
        return real(fd, data)

    monkeypatch.setattr(files, "_write_all", disk_full)
    args = ["train", "--model", "mlp", "--model-option", "hidden=[4]", "--epochs", "1"]
    result = runner.invoke(app, [*args, "--out", str(out)])
    assert result.exit_code == 2 and "Traceback" not in result.output
    last = result.stderr.splitlines()[-1]
    rescued = next(tmp_path.glob("run.rescued-*.pt"))
    assert "No space left" in last and str(rescued) in last and not out.exists()
    ck = torch.load(rescued, weights_only=True)
    assert ck["format"] == "landscape-checkpoint" and ck["train"]["epoch"] == 1


# -- file modes -----------------------------------------------------------------------------------


@pytest.mark.parametrize("mask", [0o022, 0o077, 0o002])
def test_checkpoint_mode_honours_the_umask(tmp_path, mask):
    old = os.umask(mask)
    try:
        path = save_checkpoint(tmp_path / "c.pt", {"x": torch.ones(1)})
        fresh = update_file(tmp_path / "r.h5", {}, lambda f: None)
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~mask
    assert stat.S_IMODE(fresh.stat().st_mode) == 0o666 & ~mask


def test_rewriting_a_read_only_results_file_keeps_its_mode(tmp_path, monkeypatch):
    # Writing the copy first and setting the mode last: a read-only mode copied to the
    # temporary file up front made it unwritable for any user but root.
    out = tmp_path / "r.h5"
    update_file(out, {}, lambda f: f.create_group("a"))
    os.chmod(out, 0o444)
    calls = []
    real = os.chmod

    def spy(path, mode, *a, **kw):
        calls.append((str(path), mode, h5py.is_hdf5(path)))
        return real(path, mode, *a, **kw)

    monkeypatch.setattr(os, "chmod", spy)
    update_file(out, {}, lambda f: f.create_group("b"))
    assert stat.S_IMODE(out.stat().st_mode) == 0o444
    assert calls and all(is_h5 for _, _, is_h5 in calls)  # mode set on a finished file
    with h5py.File(out) as f:
        assert sorted(f) == ["a", "b"]


# -- the private CPU-share folder ----------------------------------------------------------------


def test_the_private_folder_refuses_links_and_other_users_folders(tmp_path):
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "thesis.tex").write_text("x")
    link = tmp_path / "landscape-cpu-link"
    link.symlink_to(victim)
    with pytest.raises(LandscapeError, match="not a folder of this user"):
        files.PrivateFolder(link)
    assert [p.name for p in victim.iterdir()] == ["thesis.tex"]
    made = files.PrivateFolder(tmp_path / "mine")
    assert stat.S_IMODE(os.lstat(tmp_path / "mine").st_mode) == 0o700
    made.close()
    os.chmod(tmp_path / "mine", 0o777)  # our own, opened to others: closed again
    files.PrivateFolder(tmp_path / "mine").close()
    assert stat.S_IMODE(os.lstat(tmp_path / "mine").st_mode) == 0o700
    if os.geteuid() == 0:
        theirs = tmp_path / "theirs"
        theirs.mkdir(mode=0o700)
        os.chown(theirs, 65534, 65534)
        with pytest.raises(LandscapeError, match="not a folder of this user"):
            files.PrivateFolder(theirs)


# -- scan journals -------------------------------------------------------------------------------


def test_a_journal_belongs_to_exactly_one_scan(ckpt, tmp_path):
    from landscape_cli.jobs.scan_journal import HEADER, journal_path

    out = tmp_path / "r.h5"
    assert journal_path(out, "x y") != journal_path(out, "x_y")
    base = ["scan", str(ckpt), "--points", "5", "--samples", "32", "--out", str(out)]
    first = runner.invoke(app, [*base, "--name", "x_y", "--json"])
    assert first.exit_code == 0, first.output
    reference = json.loads(first.stdout)["loss"]
    # a journal of another scan lands at x_y's journal path (a copied folder, a hash clash):
    # its points are never folded, whatever their indices
    journal = journal_path(out, "y_x")
    other = {"name": "x y", "shape": [5], "x": "0", "y": None, "directions": "0"}
    journal.write_text(HEADER + json.dumps(other) + "\n0 0 72.5 0.1\n900 0 60.4 0.1\n")
    again = runner.invoke(app, [*base, "--name", "y_x"])
    line = one_error_line(again)
    assert "belongs to another scan" in line and str(journal) in line
    assert journal.read_text().count("\n") == 3  # left as it was
    journal.unlink()
    # this scan's own journal from a killed run: folded, and lines off its grid are skipped
    ok = runner.invoke(app, [*base, "--name", "y_x", "--json"])
    assert ok.exit_code == 0, ok.output
    from landscape_cli.results import scan_identity

    ident = scan_identity(read_scan(out, "y_x", directions=True))
    own = journal_path(out, "y_x")
    own.write_text(HEADER + json.dumps(ident) + "\n2 0 1.5 0.5\n7 0 9.0 0.0\n3 4 9.0 0.0\n")
    done = json.loads(runner.invoke(app, [*base, "--name", "y_x", "--json"]).stdout)
    assert done["loss"][2] == 1.5 and not own.exists()
    assert np.allclose(read_scan(out, "x_y").loss, reference)  # the other scan is untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.h5"]


# -- train: snapshots, default paths, concurrent runs --------------------------------------------


def test_snapshots_get_the_checks_of_out_before_training(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "run-epoch1.pt").write_text("not a checkpoint")
    args = ["train", *MLP, "--epochs", "2", "--save-every", "1", "--out", "run.pt"]
    line = one_error_line(runner.invoke(app, args))
    assert "run-epoch1.pt" in line and "not a landscape checkpoint of this run" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run-epoch1.pt"]
    other = ["train", *MLP, "--epochs", "2", "--lr", "0.002", "--out", "other.pt"]
    assert runner.invoke(app, other).exit_code == 0
    (tmp_path / "run-epoch1.pt").unlink()
    shutil.copyfile(tmp_path / "other.pt", tmp_path / "run-epoch2.pt")  # another run's
    line = one_error_line(runner.invoke(app, args))
    assert "run-epoch2.pt" in line
    assert (tmp_path / "run-epoch2.pt").read_bytes() == (tmp_path / "other.pt").read_bytes()
    assert runner.invoke(app, [*args, "--overwrite"]).exit_code == 0
    snap = torch.load(tmp_path / "run-epoch2.pt", weights_only=True)
    assert snap["train"]["epoch"] == 2 and snap["train"]["config"]["lr"] is None


def test_default_checkpoint_paths_differ_for_different_configurations(tmp_path, monkeypatch):
    adam = TrainConfig()
    assert str(default_output(adam)) == "checkpoints/cnn-digits-adam-s0.pt"
    assert default_output(TrainConfig(epochs=5)) == default_output(adam)  # resumable: same file
    variants = [
        TrainConfig(lr=1e-2),
        TrainConfig(lr=1e-2, warmup_steps=12500),  # the README's matched baseline
        TrainConfig(warmup_steps=12500),
        TrainConfig(model_options={"width": 8}),
        TrainConfig(model_options={"width": 16}),
        TrainConfig(batch_size=64),
    ]
    names = {default_output(c) for c in variants} | {default_output(adam)}
    assert len(names) == len(variants) + 1
    assert config_tag(TrainConfig(lr=1e-2)) == config_tag(TrainConfig(lr=0.01, epochs=3))
    # a different configuration given the same path is refused, epochs included
    monkeypatch.chdir(tmp_path)
    base = ["train", *MLP, "--epochs", "1", "--out", "m.pt"]
    assert runner.invoke(app, base).exit_code == 0
    assert runner.invoke(app, base).exit_code == 0  # the same run again
    for extra in (["--lr", "0.01"], ["--warmup-steps", "3"], ["--epochs", "2"]):
        assert "not a landscape checkpoint of this run" in one_error_line(
            runner.invoke(app, [*base, *extra])
        )
    resumed = runner.invoke(app, ["train", "--resume", "m.pt", "--epochs", "2"])
    assert resumed.exit_code == 0, resumed.output


# -- large results files, and signals during a write ---------------------------------------------


def test_a_file_too_large_for_memory_is_rewritten_on_disk_with_the_same_rules(
    tmp_path, monkeypatch
):
    from landscape_cli.results import ResultsConflict, expect_absent, list_groups, store

    monkeypatch.setattr(store, "_memory_limit", lambda: 0)  # every existing file counts as large
    out = tmp_path / "r.h5"
    update_file(out, {}, lambda f: f.create_dataset("a", data=np.arange(10.0)))
    update_file(out, {}, lambda f: f.create_group("b"))
    assert list_groups(out) == ["b"] and sorted(p.name for p in tmp_path.iterdir()) == ["r.h5"]
    before = out.read_bytes()
    with pytest.raises(ResultsConflict, match="meanwhile"):  # a check under the lock, on disk too
        update_file(out, {}, lambda f: f.create_group("c"), check=expect_absent("b", "stop"))
    assert out.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["r.h5"]
    monkeypatch.setattr(files, "free_bytes", lambda path: 4096)  # and its space is checked first
    with pytest.raises(files.WriteError, match="No space left on device"):
        update_file(out, {}, lambda f: f.create_group("c"))
    assert out.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["r.h5"]


def test_a_signal_during_the_write_of_a_finished_result_waits_for_it(tmp_path):
    import signal

    from landscape_cli import interrupts

    restore = interrupts.install()
    try:
        with pytest.raises(interrupts.Terminated), interrupts.deferred():
            os.kill(os.getpid(), signal.SIGTERM)
            files.write_atomic(tmp_path / "done.bin", b"finished")  # not cut short
        assert (tmp_path / "done.bin").read_bytes() == b"finished"
        assert interrupts.received() == signal.SIGTERM and interrupts.exit_code() == 143
        os.kill(os.getpid(), signal.SIGINT)  # a second signal: ignored while the cleanup runs
        assert interrupts.word() == "terminated"
    finally:
        restore()
