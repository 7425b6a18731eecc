"""Progress of a real ``landscape hessian`` process whose stderr is a pipe: the first line at
once, and a line again every 10 s."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import threading
import time

import pytest

from landscape_cli.training import TrainConfig

#: The checkpoint of the ``ckpt`` fixture (tests/conftest.py).
CKPT = TrainConfig(model="mlp", model_options={"hidden": [16]}, epochs=1)


@pytest.mark.slow
def test_redirected_stderr_shows_progress_lines_while_the_command_runs(ckpt, tmp_path):
    """A real ``landscape hessian`` with stderr in a pipe (as under SLURM or nohup): its first
    progress line comes within 15 s, while the command is still running, and a long phase
    prints a line again after the default 10 s, with the time left.

    The 15 s count from when Python has imported torch (timed here just before, as a bare
    ``python -c "import torch"``): on a loaded two-core machine that import alone can take
    longer than the whole budget, and it is not what this test is about."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    t0 = time.monotonic()
    subprocess.run([sys.executable, "-c", "import torch"], check=True, env=env)
    startup = time.monotonic() - t0

    ck = tmp_path / "long.pt"
    shutil.copyfile(ckpt, ck)
    cmd = [sys.executable, "-m", "landscape_cli", "hessian", str(ck), "--samples", "256"]
    cmd += ["--top-k", "0", "--trace-method", "hutchinson", "--trace-probes", "1000000"]
    cmd += ["--trace-rtol", "0", "--density-probes", "0", "--device", "cpu"]
    t0 = time.monotonic()
    proc = subprocess.Popen(
        cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=tmp_path, env=env
    )
    seen: list[tuple[float, str, bool]] = []  # (seconds since start, line, still running)

    def read() -> None:
        for line in proc.stderr:
            seen.append((time.monotonic() - t0, line.rstrip("\n"), proc.poll() is None))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    periodic = re.compile(
        r"^\[hessian\] trace: (\d+)/1000000 HVPs \(at most\), "
        r"(\d\d):(\d\d) elapsed, ~[\d:]+ left$"
    )
    try:
        deadline = t0 + startup + 60
        while time.monotonic() < deadline and proc.poll() is None:
            if any(periodic.match(line) for _, line, _ in seen):
                break
            time.sleep(0.2)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        reader.join(timeout=10)
    lines = [line for _, line, _ in seen]
    progress = [(t, line, alive) for t, line, alive in seen if line.startswith("[hessian] ")]
    assert progress, lines
    first_t, first, alive = progress[0]
    assert first == "[hessian] trace: 0/1000000 HVPs (at most), 00:00 elapsed", lines
    assert alive and first_t - startup < 15.0, (first_t, startup)
    again = [m for m in map(periodic.match, lines) if m]
    assert again, lines
    done, minutes, seconds = (int(g) for g in again[0].groups())
    assert 0 < done < 1000000 and 60 * minutes + seconds >= 10  # not before 10 s
