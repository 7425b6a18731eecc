"""The command layer's contract: fast help, version, and one-line errors with exit code 2."""

from __future__ import annotations

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
