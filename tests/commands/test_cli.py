"""The command layer's contract: fast help, version, and one-line errors with exit code 2."""

from __future__ import annotations

import os
import subprocess
import sys

from cases import one_error_line, runner

from landscape_cli import __version__
from landscape_cli.commands import app


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
    one_error_line(result)
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


# -- CPU threads (issue 12: no collapse when the machine is shared) ----------------------------


def test_processes_share_the_cpus_and_a_dead_ones_place_is_freed(tmp_path):
    """Live processes each hold a lock; the count (and so each one's threads) follows them."""
    import fcntl

    from landscape_cli.commands._cpu_share import CpuShare

    a = CpuShare(4, tmp_path, name="a")
    assert a.peers() == 1 and a.threads() == 4
    b = CpuShare(4, tmp_path, name="b")
    c = CpuShare(4, tmp_path, name="c")
    assert a.peers() == b.peers() == 3 and a.threads() == 1  # 4 // 3
    c.close()
    assert a.threads() == 2 and b.threads() == 2
    stale = tmp_path / "12345"  # a process that died without cleaning up: nobody holds its lock
    stale.write_text("")
    assert a.peers() == 2 and stale.exists()  # not counted; not removed (a did not create it)
    held = os.open(tmp_path / "999", os.O_RDWR | os.O_CREAT)  # another live process
    fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
    try:
        assert a.peers() == 3
    finally:
        os.close(held)
    b.close()
    assert a.peers() == 1  # and the released one's file is gone
    a.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["12345", "999"]  # each removed its own


def test_thread_share_reaches_torch_and_user_settings_win(tmp_path):
    """Set before torch is imported, the share is torch's thread count; OMP_NUM_THREADS wins."""
    code = (
        "import os, sys; from landscape_cli.commands import _threads;"
        "from landscape_cli.commands._cpu_share import CpuShare;"
        f"other = CpuShare(2, {str(tmp_path)!r}, 'x');"
        f"print(_threads.start(folder={str(tmp_path)!r}));"
        "import torch; print(torch.get_num_threads())"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OMP_", "GOMP_", "MKL_"))}
    cmd = ["taskset", "-c", "0,1", sys.executable, "-c", code]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split("\n")[:2] == ["{'OMP_NUM_THREADS': '1'}", "1"]  # 2 CPUs, 2 processes
    env["OMP_NUM_THREADS"] = "2"
    out = subprocess.run(cmd, capture_output=True, text=True, env=env)
    assert out.stdout.split("\n")[:2] == ["{}", "2"]


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
