"""The memory guard (landscape_cli.resources): an estimate past the memory names the option to
lower and the size, and a command refuses it before computing anything."""

from __future__ import annotations

import pytest
from cases import FAST, one_error_line, runner

from landscape_cli import resources
from landscape_cli.commands import app
from landscape_cli.errors import LandscapeError
from landscape_cli.hessian import HessianSettings


def test_memory_guard_names_the_option_and_the_size(monkeypatch):
    monkeypatch.setenv("LANDSCAPE_MEMORY_LIMIT", str(10 * 1024**2))
    settings = HessianSettings(top_k=5, max_steps=1000, trace_probes=0, density_probes=0)
    needs = resources.hessian_bytes(settings, 100_000)
    assert needs["Lanczos basis"][0] >= 1001 * 100_000 * 8
    with pytest.raises(LandscapeError, match=r"lower `max_steps`"):
        resources.require(needs)
    resources.require(resources.hessian_bytes(HessianSettings(max_steps=10), 1000))
    with pytest.raises(LandscapeError, match="lower `points`"):
        resources.require(resources.scan_bytes(10**6))


def test_hessian_refuses_a_density_past_memory_before_computing(ckpt, tmp_path, monkeypatch):
    monkeypatch.setenv("LANDSCAPE_MEMORY_LIMIT", str(1024**2))
    out = tmp_path / "r.h5"
    args = ["hessian", str(ckpt), "--out", str(out), *FAST, "--top-k", "1"]
    result = runner.invoke(app, [*args, "--density-probes", "1000"])
    assert "lower --density-probes" in one_error_line(result)
    assert not out.exists()
