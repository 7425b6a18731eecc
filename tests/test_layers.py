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


# -- what each part of the package imports (issue 25) -------------------------------------------


def _part(path: Path) -> str:
    """The part of the package ``path`` belongs to: its folder, or its own name at the top."""
    rel = path.relative_to(PACKAGE)
    return rel.parts[0] if len(rel.parts) > 1 else rel.stem


def _names(text: str) -> set[str]:
    return set(text.split())


#: The parts of ``landscape_cli`` (a folder, or a module at the top) that each part imports at run
#: time, anywhere in its files (imports inside functions included; ``if TYPE_CHECKING:`` ones and
#: ``landscape_cli.__version__`` aside). Read from the import graph as it is: a new import between
#: parts fails test_each_part_imports_only_the_listed_parts until it is listed here. Three imports
#: cross the layers upwards, each inside one function (a ``# lazy:`` comment says why):
#: models.hf -> checkpoints, resources -> hessian.lanczos and hessian.batching,
#: results -> hessian.types.
LAYERS: dict[str, set[str]] = {
    # base
    "errors": set(),
    "interrupts": set(),
    "distributed": set(),
    "precision": set(),
    "token_loss": set(),
    "devices": {"errors"},
    "extras": {"errors"},
    "files": {"errors"},
    "params": {"errors"},
    "specs": {"errors"},
    "resources": {"errors", "hessian"},
    # domain
    "batches": {"errors", "token_loss"},
    "losses": {"batches", "distributed", "errors", "token_loss"},
    "models": {"checkpoints", "errors", "extras", "specs"},
    "data": {"batches", "errors", "specs", "token_loss"},
    "hessian": {"batches", "distributed", "errors", "losses", "params", "token_loss"},
    "scan": {"batches", "distributed", "errors", "losses", "params"},
    "audit": {"batches", "errors", "hessian", "losses", "params", "scan"},
    "results": {"errors", "files", "hessian", "resources"},
    "checkpoints": {"errors", "files", "models", "resources", "specs"},
    "workload": _names("batches checkpoints data distributed errors extras models resources specs"),
    "training": _names(
        "batches checkpoints data devices errors files interrupts losses models resources specs"
    ),
    # figures: no torch, no results code at run time (results' types are annotations only)
    "plotting": {"errors", "files", "resources"},
    # jobs: the layers below
    "jobs": _names(
        "audit batches checkpoints data devices distributed errors files hessian interrupts losses"
        " models params plotting precision resources results scan training workload"
    ),
    # the CLI
    "commands": _names(
        "audit devices distributed errors files hessian interrupts jobs params plotting precision"
        " resources results training workload"
    ),
    "__main__": {"commands"},
    "__init__": set(),
}

#: The heavy or optional packages each part may import (anywhere in it); a part not named here
#: imports none of them. The standard library is free.
WATCHED = (
    "torch", "torchvision", "timm", "numpy", "scipy", "sklearn", "matplotlib", "h5py",
    "transformers", "datasets", "pandas", "safetensors", "pyhessian", "dualadam",
    "typer", "rich", "click",
)  # fmt: skip
PACKAGES: dict[str, set[str]] = {
    "devices": {"torch"},
    "distributed": {"torch"},
    "params": {"torch"},
    "precision": {"torch"},
    "token_loss": {"torch"},
    "resources": {"torch"},  # inside the functions that need it: resources imports no torch
    "batches": {"torch"},
    "losses": {"torch"},
    "models": {"torch", "torchvision", "transformers"},
    "data": {"torch", "torchvision", "numpy", "sklearn", "transformers", "datasets", "pandas"},
    "hessian": {"torch", "numpy", "scipy", "pyhessian"},
    "scan": {"torch", "numpy"},
    "audit": {"torch", "numpy"},
    "results": {"numpy", "h5py"},  # the only part that reads or writes HDF5
    "checkpoints": {"torch", "safetensors"},
    "workload": {"torch"},
    "training": {"torch", "dualadam"},
    "plotting": {"numpy", "matplotlib"},  # the only part that draws
    "jobs": {"torch", "numpy", "dualadam"},
    "commands": {"torch", "numpy", "typer", "rich", "click"},  # the only one with typer or rich
}


def _part_imports(path: Path) -> tuple[set[str], set[str]]:
    """The parts of the package, and the watched packages, that ``path`` imports at run time."""
    parts, packages = set(), set()
    for module in _imports_of(path, typing_only=False):
        names = module.split(".")
        if names[0] == "landscape_cli":
            if len(names) > 1 and names[1] != "__version__":
                parts.add(names[1])
        elif names[0] in WATCHED:
            packages.add(names[0])
    own = _part(path)
    return parts - {own}, packages


def test_each_part_imports_only_the_listed_parts():
    found: dict[str, set[str]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        found.setdefault(_part(path), set()).update(_part_imports(path)[0])
    assert set(found) == set(LAYERS), "a part of the package is missing from LAYERS (or gone)"
    offenders = {part: sorted(found[part] - LAYERS[part]) for part in found}
    assert {part: extra for part, extra in offenders.items() if extra} == {}


def test_each_part_imports_only_the_listed_packages():
    offenders = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        extra = _part_imports(path)[1] - PACKAGES.get(_part(path), set())
        if extra:
            offenders[str(path.relative_to(PACKAGE))] = sorted(extra)
    assert offenders == {}


# -- imports inside functions (issue 25) ---------------------------------------------------------

_OPTIONAL = "optional: a package of the hf extra, imported by the runs that need it"
_SLOW = "slow to import, and needed by few runs"
_CYCLE = "an import cycle at the module top"

#: The imports still written inside a function outside commands/ (where the heavy ones stay inside
#: so that ``landscape --help`` imports no torch), each as (file, function, module) with why; every
#: other import sits at its module's top. A new one fails
#: test_imports_inside_functions_are_the_listed_ones: move it to the top, or list it here with why.
INNER_IMPORTS: dict[tuple[str, str, str], str] = {
    ("batches.py", "math_attention", "torch.nn.attention"): "under try: not before torch 2.3",
    ("files.py", "locked", "fcntl"): "under try: POSIX only",
    ("checkpoints.py", "read_file", "safetensors"): "only .safetensors files need it",
    ("checkpoints.py", "read_file", "safetensors.torch"): "only .safetensors files need it",
    ("resources.py", "available_bytes", "torch"): "resources imports no torch at its top",
    ("resources.py", "hessian_bytes", "torch"): "resources imports no torch at its top",
    ("resources.py", "hessian_bytes", "landscape_cli.hessian.lanczos"): "upward: hessian/ is above",
    (
        "resources.py",
        "hessian_bytes",
        "landscape_cli.hessian.batching",
    ): "upward: hessian/ is above",
    ("data/cifar.py", "CifarDataset.__init__", "torchvision"): _SLOW,
    ("data/digits.py", "_load", "sklearn.datasets"): _SLOW,
    ("data/imagefolder.py", "_ImageLoader.__call__", "torchvision.datasets.folder"): _SLOW,
    ("data/imagefolder.py", "_load_imagefolder", "torchvision"): _SLOW,
    ("data/loaders.py", "load_dataset", "landscape_cli.data.imagefolder"): _CYCLE,
    ("data/text.py", "read_table", "pandas"): _OPTIONAL,
    ("data/text.py", "_read_saved", "datasets"): _OPTIONAL,
    ("data/text.py", "load_lm_text", "transformers.utils"): _OPTIONAL,
    ("hessian/density.py", "spread_factor", "scipy.stats"): _SLOW,
    ("hessian/trace.py", "summarize", "scipy"): _SLOW,
    ("hessian/pyhessian_engine.py", "pyhessian_estimates", "pyhessian"): "the optional engine's",
    ("jobs/audit_report.py", "report_figures", "landscape_cli.plotting"): "matplotlib: --report",
    ("models/hf.py", "_architecture", "transformers.models.auto"): _OPTIONAL,
    ("models/hf.py", "load_hf_folder", "transformers"): _OPTIONAL,
    ("models/hf.py", "load_hf_folder", "transformers.utils"): _OPTIONAL,
    ("models/hf.py", "load_tokenizer", "transformers"): _OPTIONAL,
    ("models/hf.py", "load_tokenizer", "transformers.utils"): _OPTIONAL,
    ("models/hf.py", "_check_loaded", "landscape_cli.checkpoints"): _CYCLE,
    ("models/registry.py", "_build_torchvision", "torchvision"): _SLOW,
    ("results/hessian.py", "read_group", "landscape_cli.hessian.types"): "results: no torch",
    ("results/hessian.py", "_read_top", "landscape_cli.hessian.types"): "results: no torch",
    ("results/hessian.py", "_read_trace", "landscape_cli.hessian.types"): "results: no torch",
    ("results/hessian.py", "_read_sample_sets", "landscape_cli.hessian.types"): "results: no torch",
    ("results/hessian.py", "_read_density", "landscape_cli.hessian.types"): "results: no torch",
    ("results/store.py", "check_groups", "landscape_cli.results.audit"): _CYCLE,
    ("results/store.py", "check_groups", "landscape_cli.results.hessian"): _CYCLE,
    ("results/store.py", "check_groups", "landscape_cli.results.scan"): _CYCLE,
    ("results/typed.py", "_to_plain", "landscape_cli.results.store"): _CYCLE,
}


def _inner_imports(path: Path) -> set[tuple[str, str, str]]:
    """``(file, function, module)`` for each import written inside a function of ``path``."""
    rel = path.relative_to(PACKAGE).as_posix()
    found = set()

    def visit(node: ast.AST, scope: list[str], in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                inner = in_function or not isinstance(child, ast.ClassDef)
                visit(child, [*scope, child.name], inner)
            elif isinstance(child, (ast.Import, ast.ImportFrom)) and in_function:
                if isinstance(child, ast.Import):
                    modules = [a.name for a in child.names]
                elif child.module == "landscape_cli":
                    modules = [f"landscape_cli.{a.name}" for a in child.names]
                else:
                    modules = [child.module or ""]
                found.update((rel, ".".join(scope), m) for m in modules)
            else:
                visit(child, scope, in_function)

    visit(ast.parse(path.read_text()), [], False)
    return found


def test_imports_inside_functions_are_the_listed_ones():
    found = set()
    for path in _layer_files("commands"):
        found |= _inner_imports(path)
    new = sorted(found - INNER_IMPORTS.keys())
    assert new == [], f"{len(new)} new imports inside functions: move them to the module top"
    gone = sorted(INNER_IMPORTS.keys() - found)
    assert gone == [], f"{len(gone)} listed imports are no longer inside a function: unlist them"
