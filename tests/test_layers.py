"""The library's layers (issues 14.5 and 25): scans compute points and plots draw, neither writes
files nor computes in the other's place; the jobs (landscape_cli.jobs) sit above the domain
packages and below the commands, the only ones to import typer or rich."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import landscape_cli

PACKAGE = Path(landscape_cli.__file__).parent


def _loaded_after(imports: str, watched: tuple[str, ...]) -> list[str]:
    code = f"import sys\n{imports}\nprint(','.join(m for m in {watched!r} if m in sys.modules))\n"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return [m for m in out.stdout.strip().split(",") if m]


def test_scan_package_imports_no_results_code():
    # the results file, its journal and resuming are the job layer's (jobs.scan_journal)
    imports = "import landscape_cli.scan, landscape_cli.scan.grid, landscape_cli.scan.directions"
    watched = ("landscape_cli.results", "h5py", "landscape_cli.jobs.scan_journal")
    assert _loaded_after(imports, watched) == []


def test_plotting_imports_no_simulation():
    # Fig. 2's optimizer runs live in landscape_cli.jobs.fig2_simulation; plotting only draws them
    imports = "import landscape_cli.plotting, landscape_cli.plotting.optimizer_trajectories"
    watched = (
        "landscape_cli.jobs",
        "landscape_cli.jobs.fig2_simulation",
        "dualadam",
        "torch",
        "landscape_cli.results",
    )
    assert _loaded_after(imports, watched) == []


def _imports_of(path: Path, *, typing_only: bool = True) -> set[str]:
    """Every module the file ``path`` imports, anywhere in it.

    Without ``typing_only``, the imports under ``if TYPE_CHECKING:`` (annotations only) are left
    out.
    """
    tree = ast.parse(path.read_text())
    skipped: set[int] = set()
    if not typing_only:
        for node in ast.walk(tree):
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                skipped.update(id(inner) for stmt in node.body for inner in ast.walk(stmt))
    found = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
    return found


def _imported_modules(folder: str) -> set[str]:
    """Every ``landscape_cli`` module that the files of ``folder`` import, anywhere in them."""
    found = set()
    for path in (PACKAGE / folder).rglob("*.py"):
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


def _layer_files(*above: str) -> list[Path]:
    """The package's files outside the folders ``above`` (the layers above a layer)."""
    return [
        path
        for path in sorted(PACKAGE.rglob("*.py"))
        if path.relative_to(PACKAGE).parts[0] not in above
    ]


def test_no_lower_layer_imports_the_jobs():
    # hessian/, scan/, results/, plotting/, models/, data/, audit, training, batches, losses,
    # workload and the rest run under the jobs and never call them; an annotation may name a job's
    # type (plotting draws the Fig2Simulation of jobs.fig2_simulation) without importing it
    offenders = {
        str(path.relative_to(PACKAGE)): sorted(found)
        for path in _layer_files("jobs", "commands", "__main__.py")
        if (
            found := {
                m
                for m in _imports_of(path, typing_only=False)
                if m == "landscape_cli.jobs" or m.startswith("landscape_cli.jobs.")
            }
        )
    }
    assert offenders == {}


def test_only_the_commands_import_typer_or_rich():
    offenders = {
        str(path.relative_to(PACKAGE)): sorted(found)
        for path in _layer_files("commands")
        if (
            found := {m for m in _imports_of(path) if m.split(".")[0] in ("typer", "rich", "click")}
        )
    }
    assert offenders == {}
