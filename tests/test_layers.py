"""The library's layers (issue 14.5): scans compute points and plots draw, neither writes files
nor computes in the other's place."""

from __future__ import annotations

import subprocess
import sys


def _loaded_after(imports: str, watched: tuple[str, ...]) -> list[str]:
    code = f"import sys\n{imports}\nprint(','.join(m for m in {watched!r} if m in sys.modules))\n"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return [m for m in out.stdout.strip().split(",") if m]


def test_scan_package_imports_no_results_code():
    # the results file, its journal and resuming are the job layer's (landscape_cli.scan_store)
    imports = "import landscape_cli.scan, landscape_cli.scan.grid, landscape_cli.scan.directions"
    watched = ("landscape_cli.results", "h5py", "landscape_cli.scan_store")
    assert _loaded_after(imports, watched) == []


def test_plotting_imports_no_simulation():
    # Fig. 2's optimizer runs live in landscape_cli.fig2_simulation; plotting only draws them
    imports = "import landscape_cli.plotting, landscape_cli.plotting.fig2"
    watched = ("landscape_cli.fig2_simulation", "dualadam", "torch", "landscape_cli.results")
    assert _loaded_after(imports, watched) == []
