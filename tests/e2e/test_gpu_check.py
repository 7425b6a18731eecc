"""benchmarks/gpu_check.sh (issue 26.1): the prepared GPU check, rehearsed on the CPU so that it
cannot rot while no GPU is around. ``--cpu`` runs every section with small sizes; the equality
checks then compare the CPU with itself, so they must agree exactly."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "gpu_check.sh"


def _run(args: list[str], out: Path, timeout: float) -> subprocess.CompletedProcess:
    env = {**os.environ, "LANDSCAPE_PYTHON": sys.executable, "OUT": str(out)}
    return subprocess.run(
        ["bash", str(SCRIPT), *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.mark.slow
def test_cpu_rehearsal_runs_every_section(tmp_path: Path) -> None:
    res = _run(["--cpu"], tmp_path, timeout=900)
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-4000:]
    payload = json.loads((tmp_path / "gpu_check.json").read_text(encoding="utf-8"))
    rows = payload["rows"]
    by = {}
    for row in rows:
        by.setdefault(row["section"], []).append(row)
    assert set(by) == {
        "environment",
        "pytest -m cuda",
        "equality: digits CNN",
        "equality: CIFAR ResNet-18 width 4",
        "batched products",
        "landscape hessian",
        "language model",
        "total",
    }
    assert not [r for r in rows if r["verdict"].startswith("FAIL")]
    assert by["pytest -m cuda"][0]["verdict"].startswith("skipped: needs CUDA")
    for name in ("equality: digits CNN", "equality: CIFAR ResNet-18 width 4"):
        checks = {r["check"].split(" (")[0]: r for r in by[name]}
        for what in ("HVP ‖Δ‖/‖Hv‖", "trace", "gradient ‖Δ‖/‖g‖", "DualAdam step from the same"):
            hits = [r for k, r in checks.items() if k.startswith(what)]
            assert hits and hits[0]["verdict"] == "ok", (name, what)
            assert hits[0]["value"].startswith("0.0e+00"), hits[0]  # the CPU against itself
        assert any(k.startswith("top-5") and r["verdict"] == "ok" for k, r in checks.items())
        assert any(k.startswith("1-D scan") and r["verdict"] == "ok" for k, r in checks.items())
    columns = {r["check"].split(", ")[-1] for r in by["batched products"]}
    assert {"1 (matvec)", "4 (matmat)", "8 (matmat)", "16 (matmat)"} <= columns
    e2e = [r for r in by["landscape hessian"] if "samples" in r["check"]]
    assert e2e and "HVPs" in e2e[0]["value"], by["landscape hessian"]
    lm = by["language model"][0]["verdict"]
    assert lm in ("info", "skipped: no causal-LM support"), by["language model"]
    text = (tmp_path / "gpu_check.txt").read_text(encoding="utf-8")
    assert text.startswith("landscape GPU check, CPU rehearsal (--cpu)")
    assert "all checks passed" in res.stdout


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA machine runs the real check")
def test_without_cuda_the_gpu_check_says_so(tmp_path: Path) -> None:
    res = _run([], tmp_path, timeout=120)
    assert res.returncode == 2
    assert res.stderr.strip().splitlines()[-1] == (
        "error: no CUDA device here; run with --cpu for the CPU rehearsal"
    )
