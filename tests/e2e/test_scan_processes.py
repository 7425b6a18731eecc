"""Scans as real processes: killed with SIGKILL at random moments, then resumed, a plain 2-D scan
and a trajectory scan each equal the uninterrupted run; and two identical scans started at once
lose no point."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from landscape_cli.jobs.scan_journal import journal_path, read_journal
from landscape_cli.results import read_scan
from landscape_cli.training import TrainConfig, train


@pytest.mark.slow
def test_sigkill_at_random_moments_then_resume_equals_uninterrupted(tmp_path):
    ckpt = tmp_path / "m.pt"
    train(TrainConfig(epochs=1), out=ckpt)
    args = [
        sys.executable,
        "-m",
        "landscape_cli",
        "scan",
        str(ckpt),
        "--dim",
        "2",
        "--points",
        "13",
        "--ypoints",
        "11",
        "--samples",
        "512",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    ref = tmp_path / "ref.h5"
    subprocess.run([*args, "--out", str(ref)], check=True, capture_output=True, env=env)
    out = tmp_path / "killed.h5"
    journal = journal_path(out, "2d-random")
    total = 13 * 11

    def done() -> int:
        stored = 0
        if out.exists():  # the file must stay readable whenever the process dies
            stored = int(np.sum(~np.isnan(read_scan(out, "2d-random")["loss"])))
        return stored + len(read_journal(journal))  # its points (the header is not one)

    rng = random.Random(0)
    seen = []
    for attempt in range(5):
        # Odd attempts fold every point into the HDF5 file, so kills also land mid-rewrite.
        fold = ["--fold-every", "0"] if attempt % 2 else []
        proc = subprocess.Popen(
            [*args, "--out", str(out), *fold],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=env,
        )
        target = done() + rng.randint(1, 20)
        deadline = time.monotonic() + 60
        while proc.poll() is None and done() < target and time.monotonic() < deadline:
            time.sleep(rng.uniform(0.0, 0.05))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        seen.append(done())
    assert 0 < seen[-1] < total  # killed mid-scan every time, with progress kept
    assert seen == sorted(seen)  # nothing computed was ever lost
    subprocess.run([*args, "--out", str(out)], check=True, capture_output=True, env=env)
    a, b = read_scan(out, "2d-random"), read_scan(ref, "2d-random")
    np.testing.assert_array_equal(a["loss"], b["loss"])
    np.testing.assert_array_equal(a["accuracy"], b["accuracy"])
    assert not list(tmp_path.glob("*.journal")) and not list(tmp_path.glob(".*.tmp"))


@pytest.mark.slow
def test_sigkill_then_resume_equals_uninterrupted(run, tmp_path):
    args = [sys.executable, "-m", "landscape_cli", "scan", str(run / "mlp.pt"), "--direction",
            "pca", "--trajectory", str(run / "snap-*-mlp.pt"), "--points", "31", "--ypoints",
            "25", "--samples", "0"]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    ref = tmp_path / "ref.h5"
    subprocess.run([*args, "--out", str(ref)], check=True, capture_output=True, env=env)
    out = tmp_path / "killed.h5"
    journal = journal_path(out, "2d-pca")
    total = 31 * 25

    def done() -> int:
        stored = 0
        if out.exists():  # readable whenever the process dies, the trajectory already there
            scan = read_scan(out, "2d-pca")
            assert scan.trajectory is not None and len(scan.trajectory["x"]) == 4
            stored = int(np.sum(~np.isnan(scan.loss)))
        lines = journal.read_text().count("\n") if journal.exists() else 0
        return stored + lines

    rng = random.Random(0)
    seen = []
    for attempt in range(3):
        fold = ["--fold-every", "0"] if attempt % 2 else []
        proc = subprocess.Popen([*args, "--out", str(out), *fold], stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, env=env)  # fmt: skip
        target = done() + rng.randint(1, 12)
        deadline = time.monotonic() + 120
        while proc.poll() is None and done() < target and time.monotonic() < deadline:
            time.sleep(rng.uniform(0.0, 0.05))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        seen.append(done())
    assert 0 < seen[-1] < total and seen == sorted(seen)
    subprocess.run([*args, "--out", str(out)], check=True, capture_output=True, env=env)
    a, b = read_scan(out, "2d-pca"), read_scan(ref, "2d-pca")
    np.testing.assert_array_equal(a.loss, b.loss)
    np.testing.assert_array_equal(a.accuracy, b.accuracy)
    for key in ("x", "y", "loss", "residual"):
        np.testing.assert_array_equal(a.trajectory[key], b.trajectory[key])
    assert not list(tmp_path.glob("*.journal"))


@pytest.mark.slow
def test_two_identical_scans_at_once_lose_no_point(ckpt, tmp_path):
    import subprocess
    import sys

    from landscape_cli.results import read_scan

    out = tmp_path / "r.h5"
    cmd = [sys.executable, "-m", "landscape_cli", "scan", str(ckpt), "--out", str(out)]
    cmd += ["--dim", "2", "--points", "15", "--samples", "256", "--fold-every", "0.05"]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)]
    procs.append(subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    results = [(p.wait(timeout=300), p.stderr.read()) for p in procs]
    for code, err in results:
        assert code in (0, 2), err
        if code == 2:
            assert "in use by another process" in err.splitlines()[-1]
    assert any(code == 0 for code, _ in results)
    assert not np.isnan(read_scan(out, "2d-random")["loss"]).any()
