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


def _imported_modules(folder: str) -> set[str]:
    """Every ``landscape_cli`` module that the files of ``folder`` import, anywhere in them."""
    import ast
    from pathlib import Path

    import landscape_cli

    found = set()
    for path in (Path(landscape_cli.__file__).parent / folder).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("landscape_cli"):
                found.update(
                    node.module if node.module != "landscape_cli" else f"landscape_cli.{a.name}"
                    for a in node.names
                )
            elif isinstance(node, ast.Import):
                found.update(a.name for a in node.names if a.name.startswith("landscape_cli"))
    return found


def test_results_package_imports_no_model_loader():
    # checkpoint hashes are checkpoints.sha256 (the job layer's); results reads and writes files
    allowed = {"errors", "files", "resources", "hessian.types", "__version__"}
    imported = {m.removeprefix("landscape_cli.") for m in _imported_modules("results")}
    assert {m for m in imported if not m.startswith("results")} <= allowed, sorted(imported)
