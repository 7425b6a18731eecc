"""The command layer's contract: fast help, version, and one-line errors with exit code 2."""

from __future__ import annotations

import os
import subprocess
import sys

from typer.testing import CliRunner

from landscape_cli import __version__
from landscape_cli.commands import app

runner = CliRunner()


def test_version():
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.stdout.strip() == f"landscape {__version__}"


def test_help_lists_usage():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    assert "Usage" in result.stdout


def test_unknown_option_is_one_line_exit_2():
    result = runner.invoke(app, ["--no-such-option"])
    assert result.exit_code == 2
    assert result.stderr.startswith("error: ")
    assert result.stderr.count("\n") == 1
    assert "Traceback" not in result.output


def test_help_does_not_import_heavy_modules():
    code = (
        "import sys\n"
        "from landscape_cli.commands import app\n"
        "from typer.testing import CliRunner\n"
        "r = CliRunner().invoke(app, ['--help'])\n"
        "assert r.exit_code == 0, r.output\n"
        "mods = ('torch', 'h5py', 'matplotlib', 'scipy', 'sklearn')\n"
        "heavy = [m for m in mods if m in sys.modules]\n"
        "print(','.join(heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_python_dash_m_entry_point():
    out = subprocess.run(
        [sys.executable, "-m", "landscape_cli", "--version"], capture_output=True, text=True
    )
    assert out.returncode == 0 and out.stdout.strip() == f"landscape {__version__}"


# -- OpenMP defaults (issue 12: no collapse when the machine is shared) -------------------------


def test_openmp_defaults_and_user_settings_win(monkeypatch):
    import os

    from landscape_cli.commands._app import configure_openmp

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0}, raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 4)
    env: dict[str, str] = {}
    assert configure_openmp(env) == {"OMP_WAIT_POLICY": "PASSIVE", "OMP_NUM_THREADS": "1"}
    assert env["OMP_WAIT_POLICY"] == "PASSIVE"
    mine = {"GOMP_SPINCOUNT": "300000", "OMP_NUM_THREADS": "3"}
    assert configure_openmp(mine) == {} and mine == {
        "GOMP_SPINCOUNT": "300000",
        "OMP_NUM_THREADS": "3",
    }
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3}, raising=False)
    assert configure_openmp({}) == {"OMP_WAIT_POLICY": "PASSIVE"}  # all CPUs: torch's default


def test_openmp_defaults_reach_torch_when_set_before_import():
    """Set before torch is imported, the thread count follows the CPUs the process may use."""
    code = (
        "import os; os.sched_setaffinity(0, {min(os.sched_getaffinity(0))});"
        "from landscape_cli.commands._app import configure_openmp; configure_openmp();"
        "import torch; print(torch.get_num_threads(), os.environ['OMP_WAIT_POLICY'])"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OMP_", "GOMP_", "MKL_"))}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["1", "PASSIVE"]


def test_threads_option_sets_torch_threads(tmp_path):
    import torch

    before = torch.get_num_threads()
    try:
        result = runner.invoke(app, ["--threads", "2", "hessian", str(tmp_path / "x.pt")])
        assert result.exit_code == 2 and torch.get_num_threads() == 2
        bad = runner.invoke(app, ["--threads", "0", "hessian", str(tmp_path / "x.pt")])
        assert bad.exit_code == 2 and "--threads" in bad.stderr
    finally:
        torch.set_num_threads(before)
