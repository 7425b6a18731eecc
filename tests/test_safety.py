"""Guards that keep finished work and the machine safe: growing Lanczos basis, memory estimates,
the per-scan lock, file modes, and the scan's edge cases."""

from __future__ import annotations

import json
import os
import stat

import h5py
import numpy as np
import pytest
import torch
from cases import FAST, one_error_line, runner

from landscape_cli import resources
from landscape_cli.checkpoints import save_checkpoint
from landscape_cli.commands import app
from landscape_cli.errors import LandscapeError
from landscape_cli.hessian import HessianSettings
from landscape_cli.hessian import lanczos as lz
from landscape_cli.jobs.scan_journal import scan_lock
from landscape_cli.results import update_file


class _Diag:
    def __init__(self, d: torch.Tensor) -> None:
        self.d, self.n, self.device = d, d.numel(), torch.device("cpu")

    def matmat(self, v: torch.Tensor) -> torch.Tensor:
        return self.d[:, None] * v

    def matvec(self, v: torch.Tensor) -> torch.Tensor:
        return self.d * v


def test_lanczos_basis_is_reserved_once_and_holds_the_steps_taken(monkeypatch):
    # on the CPU the basis is one reservation (resident only where rows are stored:
    # tests/test_lanczos_kernel.py measures that), never copied to grow
    n = 3000
    d = torch.cat([torch.tensor([10.0, 9.0]), torch.linspace(0, 1, n - 2)]).double()
    rows: list[int] = []
    real = lz._rows

    def spy(count, width, dtype, device):
        rows.append(count)
        return real(count, width, dtype, device)

    monkeypatch.setattr(lz, "_rows", spy)
    result, basis = lz.lanczos_run(
        _Diag(d), 1, tol=1e-6, max_steps=n, generator=torch.Generator().manual_seed(0)
    )
    assert result.eigenvalues[0] == pytest.approx(10.0, rel=1e-6)
    assert result.steps < 200  # converged long before max_steps
    assert rows == [n]  # one reservation of the run's capacity, no growth copies
    assert basis.Q.shape == (result.steps, n)


def test_lanczos_growth_keeps_results_and_basis_through_restarts():
    # Two clusters of equal eigenvalues: the recurrence breaks down and restarts; the basis
    # must grow across restarts past its first 16 rows and stay orthonormal.
    d = torch.tensor([2.0] * 20 + [1.0] * 20).double()
    result, basis = lz.lanczos_run(
        _Diag(d), 25, tol=1e-8, max_steps=40, generator=torch.Generator().manual_seed(1)
    )
    assert result.steps > 16
    assert np.all(np.isclose(result.eigenvalues, 2.0) | np.isclose(result.eigenvalues, 1.0))
    q = basis.Q
    torch.testing.assert_close(q @ q.T, torch.eye(q.shape[0], dtype=q.dtype), atol=1e-10, rtol=0)


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


def test_second_writer_of_one_scan_is_refused_at_once(ckpt, tmp_path):
    out = tmp_path / "r.h5"
    with scan_lock(out, "1d-random"):
        result = runner.invoke(app, ["scan", str(ckpt), "--out", str(out), "--points", "3", *FAST])
    assert "in use by another process" in one_error_line(result)
    # once the first one is done, the same command runs (other scans are not blocked meanwhile)
    with scan_lock(out, "other"):
        ok = runner.invoke(app, ["scan", str(ckpt), "--out", str(out), "--points", "3", *FAST])
    assert ok.exit_code == 0, ok.output


def test_one_point_scan_is_the_checkpoint_and_nan_points_are_counted(ckpt, tmp_path):
    out = tmp_path / "r.h5"
    args = ["scan", str(ckpt), "--out", str(out), "--points", "1", *FAST, "--json"]
    data = json.loads(runner.invoke(app, args).stdout)
    assert data["x"] == [0.0] and data["nan_points"] == 0
    three = json.loads(
        runner.invoke(app, [*args[:5], "3", *FAST, "--json", "--name", "three"]).stdout
    )
    assert data["loss"][0] == three["loss"][1]  # the middle of -1, 0, 1 is the checkpoint
    table = runner.invoke(app, [*args[:5], "3", *FAST, "--name", "three"])
    assert "NaN points" in table.stdout and "0 of 3" in table.stdout


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


def test_a_scan_whose_fold_fails_keeps_every_point_in_its_journal(ckpt, tmp_path, monkeypatch):
    from landscape_cli.jobs import scan_journal
    from landscape_cli.jobs.scan_journal import journal_path, read_journal
    from landscape_cli.results import ResultsWriteError

    out = tmp_path / "r.h5"

    def disk_full(*args, **kwargs):
        raise ResultsWriteError(f"cannot write results file {out}: No space left on device")

    monkeypatch.setattr(scan_journal, "set_scan_points", disk_full)
    args = ["scan", str(ckpt), "--out", str(out), "--points", "5", *FAST]
    result = runner.invoke(app, args)
    journal = journal_path(out, "1d-random")
    assert result.exit_code == 2 and "Traceback" not in result.output
    last = result.stderr.splitlines()[-1]
    assert "No space left" in last and str(journal) in last
    assert len(read_journal(journal)) == 5
    monkeypatch.undo()
    again = runner.invoke(app, [*args, "--json"])  # the same command stores them
    assert again.exit_code == 0 and not np.isnan(json.loads(again.stdout)["loss"]).any()


def test_train_saves_the_trained_model_beside_a_checkpoint_it_cannot_write(tmp_path, monkeypatch):
    from landscape_cli import files

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


def test_a_stored_factory_spec_runs_when_the_user_allows_it(tmp_path, monkeypatch):
    import sys

    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    (tmp_path / "userfactory10.py").write_text(
        "from torch import nn\n"
        "def build(input_shape, num_classes, hidden=4):\n"
        "    n = 1\n"
        "    for d in input_shape:\n"
        "        n *= d\n"
        "    return nn.Sequential(nn.Flatten(), nn.Linear(n, hidden), nn.ReLU(),\n"
        "                         nn.Linear(hidden, num_classes))\n"
    )
    spec = "userfactory10:build"
    args = ["train", "--model", spec, "--epochs", "1", "--out", "u.pt", "--json"]
    assert runner.invoke(app, args).exit_code == 0  # given on the command line: allowed
    sys.modules.pop("userfactory10", None)
    hess = ["hessian", "u.pt", *FAST, "--top-k", "1", "--trace-probes", "0"]
    hess += ["--density-probes", "0"]
    refused = runner.invoke(app, hess)
    assert refused.exit_code == 2 and spec in refused.stderr and "userfactory10" not in sys.modules
    assert runner.invoke(app, [*hess, "--trust-checkpoint"]).exit_code == 0
    assert runner.invoke(app, [*hess, "--model", spec]).exit_code == 0
    resume = ["train", "--resume", "u.pt", "--epochs", "2", "--out", "v.pt"]
    assert runner.invoke(app, resume).exit_code == 2
    assert runner.invoke(app, [*resume, "--trust-checkpoint"]).exit_code == 0
    assert runner.invoke(app, [*resume, "--model", spec, "--out", "w.pt"]).exit_code == 0


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


def test_file_specs_pass_only_builtin_registries_unless_allowed():
    from landscape_cli.specs import check_file_spec, check_plain

    for spec, kind in [("cnn", "model"), ("torchvision:resnet18", "model"),
                       ("digits", "dataset"), ("imagefolder:/data/x", "dataset")]:  # fmt: skip
        assert check_file_spec(spec, kind, "f.pt") == spec
    for spec, kind in [("os:system", "model"), ("imagefolder:x", "model"),
                       ("torchvision:x", "dataset"), ("pkg.mod:make", "dataset")]:  # fmt: skip
        with pytest.raises(LandscapeError, match="`trust=True`"):
            check_file_spec(spec, kind, "f.pt")
        assert check_file_spec(spec, kind, "f.pt", trust=True) == spec
        assert check_file_spec(spec, kind, "f.pt", given=(None, f" {spec} ")) == spec
    for bad in (None, 3, "", ["cnn"]):
        with pytest.raises(LandscapeError, match="invalid"):
            check_file_spec(bad, "model", "f.pt")
    with pytest.raises(LandscapeError, match=r"at a\[1\]\.b"):
        check_plain({"a": [1, {"b": object()}]}, "kwargs", "f.pt")
    with pytest.raises(LandscapeError, match="key"):
        check_plain({1: 2}, "kwargs", "f.pt")
