"""The code's shape, measured from its syntax trees: what docs/architecture.md's table shows.

Usage: python benchmarks/code_metrics.py [ROOT ...]   (default: landscape_cli dualadam)

Per folder (package) of the library: modules and lines; over every function and method: the
median, 90th percentile and largest body (lines from the first statement after the docstring to
the last), the imports written inside functions, the parameters without a type annotation
(``self``/``cls`` and ``*``/``**`` markers aside), and the number of functions with 9 or more
parameters. Prints a markdown table; writes nothing.
"""

from __future__ import annotations

import ast
import statistics
import sys
from collections import defaultdict
from pathlib import Path


def body_lines(fn: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    """Lines of ``fn``'s body without its docstring."""
    body = fn.body
    first = body[0] if body else None
    if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
        body = body[1:] if isinstance(first.value.value, str) else body
    if not body:
        return 0
    return body[-1].end_lineno - body[0].lineno + 1


def parameters(fn: ast.FunctionDef | ast.AsyncFunctionDef) -> list[ast.arg]:
    a = fn.args
    params = [*a.posonlyargs, *a.args, *a.kwonlyargs]
    if params and params[0].arg in ("self", "cls"):
        params = params[1:]
    return params


def inner_imports(fn: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    """Import statements in ``fn``'s own body (its nested functions and classes count alone)."""
    count, stack = 0, list(fn.body)
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            continue
        count += isinstance(node, (ast.Import, ast.ImportFrom))
        stack.extend(ast.iter_child_nodes(node))
    return count


def measure(roots: list[Path]) -> dict:
    folders: dict[str, dict[str, int]] = defaultdict(lambda: {"modules": 0, "lines": 0})
    bodies: list[int] = []
    imports = untyped = wide = total_params = 0
    for root in roots:
        for path in sorted(root.rglob("*.py")):
            text = path.read_text()
            rel = path.relative_to(root.parent)
            folder = str(rel.parent)
            folders[folder]["modules"] += 1
            folders[folder]["lines"] += text.count("\n")
            tree = ast.parse(text)
            for node in ast.walk(tree):
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    bodies.append(body_lines(node))
                    params = parameters(node)
                    total_params += len(params)
                    untyped += sum(1 for p in params if p.annotation is None)
                    wide += len(params) >= 9
                    imports += inner_imports(node)
    bodies.sort()
    return {
        "folders": dict(folders),
        "functions": len(bodies),
        "median": statistics.median(bodies),
        "p90": bodies[int(0.9 * (len(bodies) - 1))],
        "max": bodies[-1],
        "inner_imports": imports,
        "untyped": untyped,
        "parameters": total_params,
        "wide": wide,
    }


def main() -> None:
    roots = [Path(a) for a in sys.argv[1:]] or [Path("landscape_cli"), Path("dualadam")]
    m = measure(roots)
    print("| folder | modules | lines |\n|---|---:|---:|")
    for folder, f in sorted(m["folders"].items()):
        print(f"| `{folder}/` | {f['modules']} | {f['lines']:,} |")
    print()
    print("| measure | value |\n|---|---:|")
    print(f"| functions and methods | {m['functions']} |")
    print(f"| body lines: median / p90 / max | {m['median']:g} / {m['p90']} / {m['max']} |")
    print(f"| imports inside functions | {m['inner_imports']} |")
    print(f"| parameters without a type | {m['untyped']} of {m['parameters']} |")
    print(f"| functions with 9 or more parameters | {m['wide']} |")


if __name__ == "__main__":
    main()
