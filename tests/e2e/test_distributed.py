"""torchrun with 2 CPU processes (Gloo) against the single-process run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from landscape_cli.jobs.scan_journal import journal_path, read_journal
from landscape_cli.results import read_hessian, read_root, read_scan
from landscape_cli.training import TrainConfig

pytestmark = pytest.mark.slow
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def torchrun_cmd(*args: str) -> list[str]:
    """``torchrun --standalone --nproc-per-node 2 -m landscape_cli ARGS``."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    return [*cmd, "-m", "landscape_cli", *args]


def torchrun(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    cmd = torchrun_cmd(*args)
    return subprocess.run(cmd, capture_output=True, text=True, env=ENV, check=check, timeout=300)


def single(*args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "landscape_cli", *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=ENV, check=True, timeout=300)


#: The checkpoint of the ``ckpt`` fixture (tests/conftest.py).
CKPT = TrainConfig(epochs=2)


@pytest.mark.parametrize("curvature", ["hessian", "ggn", "fisher"])
def test_hessian_two_processes_equal_one(ckpt, tmp_path, curvature):
    args = ["hessian", str(ckpt), "--samples", "300", "--batch-size", "50", "--top-k", "3"]
    args += ["--curvature", curvature]
    args += ["--trace-probes", "16", "--density-probes", "2", "--lanczos-steps", "12"]
    one, two = tmp_path / "one.h5", tmp_path / "two.h5"
    single(*args, "--out", str(one))
    result = torchrun(*args, "--out", str(two), "--json")
    assert result.stdout.count("{") >= 1 and result.stdout.strip().startswith("{")  # rank 0 only
    a, b = read_hessian(one), read_hessian(two)
    np.testing.assert_allclose(b["eigenvalues"], a["eigenvalues"], rtol=1e-6)
    np.testing.assert_allclose(b["trace_samples"], a["trace_samples"], rtol=1e-6)
    np.testing.assert_allclose(b["density"]["nodes"], a["density"]["nodes"], rtol=1e-6, atol=1e-9)
    assert b["attrs"]["samples"] == 300 and b["attrs"]["hvp_count"] == a["attrs"]["hvp_count"]
    assert a["attrs"]["curvature"] == b["attrs"]["curvature"] == curvature


def test_scan_two_processes_equal_one_and_resume_with_one(ckpt, tmp_path):
    args = ["scan", str(ckpt), "--dim", "2", "--points", "9", "--ypoints", "7", "--samples", "256"]
    one, two = tmp_path / "one.h5", tmp_path / "two.h5"
    single(*args, "--out", str(one))
    torchrun(*args, "--out", str(two))
    np.testing.assert_array_equal(read_scan(two)["loss"], read_scan(one)["loss"])
    np.testing.assert_array_equal(read_scan(two)["accuracy"], read_scan(one)["accuracy"])

    # Interrupt a 2-process run (SIGKILL to the whole launcher group), finish with 1 process.
    killed = tmp_path / "killed.h5"
    journal = journal_path(killed, "2d-random")
    cmd = torchrun_cmd(*args, "--out", str(killed))
    proc = subprocess.Popen(
        cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=ENV, start_new_session=True
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if len(read_journal(journal)) >= 10:
            break
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    done = read_scan(killed)["loss"] if killed.exists() else None
    assert done is None or np.isnan(done).any()  # it really was interrupted
    single(*args, "--out", str(killed))
    np.testing.assert_array_equal(read_scan(killed)["loss"], read_scan(one)["loss"])


def test_sample_sharded_points_equal_one_process(ckpt, tmp_path):
    # One point and two ranks: the point's samples are split over the ranks.
    args = ["scan", str(ckpt), "--points", "1", "--range", "0", "0", "--samples", "300"]
    one, two = tmp_path / "one.h5", tmp_path / "two.h5"
    single(*args, "--out", str(one))
    torchrun(*args, "--out", str(two))
    np.testing.assert_allclose(read_scan(two)["loss"], read_scan(one)["loss"], rtol=1e-6)


def test_a_failing_rank_gives_a_clear_error_and_a_valid_file(ckpt, tmp_path, monkeypatch):
    module = tmp_path / "flaky_model.py"
    module.write_text(
        "import os\n"
        "import torch\n"
        "class Flaky(torch.nn.Module):\n"
        "    def __init__(self, input_shape, num_classes):\n"
        "        super().__init__()\n"
        "        self.lin = torch.nn.Linear(64, num_classes)\n"
        "        self.calls = 0\n"
        "    def forward(self, x):\n"
        "        self.calls += 1\n"
        "        if os.environ.get('RANK') == '1' and self.calls > 30:\n"
        "            raise RuntimeError('simulated failure on rank 1')\n"
        "        return self.lin(x.flatten(1))\n"
        "def build(input_shape, num_classes):\n"
        "    return Flaky(input_shape, num_classes)\n"
    )
    import torch

    torch.save(torch.nn.Linear(64, 10).state_dict(), tmp_path / "lin.pt")
    sd = torch.load(tmp_path / "lin.pt", weights_only=True)
    torch.save({f"lin.{k}": v for k, v in sd.items()}, tmp_path / "flaky.pt")
    out = tmp_path / "flaky.h5"
    env = {**ENV, "PYTHONPATH": f"{tmp_path}{os.pathsep}{ENV.get('PYTHONPATH', '')}"}
    cmd = torchrun_cmd(
        "hessian",
        str(tmp_path / "flaky.pt"),
        "--model",
        "flaky_model:build",
        "--dataset",
        "digits",
        "--samples",
        "200",
        "--batch-size",
        "50",
        "--out",
        str(out),
        "--no-cache-graphs",
    )
    result = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode != 0
    errors = [ln for ln in result.stderr.splitlines() if ln.startswith("error: ")]
    assert any("rank 1" in ln and "simulated failure" in ln for ln in errors), result.stderr
    if out.exists():  # whatever was written is a valid results file
        assert read_root(out)["schema"] == "landscape-results"
