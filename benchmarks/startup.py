"""Command start-up: import time per command, and a Hessian's time to its first product.

Usage: python benchmarks/startup.py [--repeats 5] [--threads N] [--against COMMIT]

1. Trains a digits CNN for one epoch into a temporary folder (not timed).
2. Import time: runs each command once, in a fresh process under `python -X importtime`, on real
   (small) work, and sums what `-X importtime` reports: every module imported from launch to
   exit, and the share of the heavy packages (torch, scikit-learn, scipy, matplotlib, h5py,
   transformers, timm, datasets, pandas, ...) among them.
3. Time to first product: launches `landscape hessian CKPT --top-k 1 --trace-probes 0
   --density-probes 0` `--repeats` times (stderr a pipe, so the command prints plain progress
   lines) and takes the time from launch to its first progress line, which it prints when the
   top-k Lanczos phase starts, just before that phase's first Hessian-vector product (after
   the operator's set-up, which includes its determinism check), and to exit. Target (issue 24):
   within 2 s of launch on an idle 2-core machine.

``--against COMMIT`` also measures the package as it was at COMMIT (``git archive`` into a temporary
folder), interleaved with the current one, so both sets of numbers see the same load.

Run it on an otherwise idle machine: other busy processes skew the seconds.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HEAVY = (
    "torch",
    "torchvision",
    "sklearn",
    "scipy",
    "matplotlib",
    "h5py",
    "pandas",
    "transformers",
    "timm",
    "datasets",
    "pyhessian",
    "rich",
    "typer",
)
_LINE = re.compile(r"import time:\s+(\d+) \|\s+(\d+) \|( *)(\S+)")


def importtime(args: list[str], root: str) -> dict[str, float]:
    """Seconds of imports in all and per heavy package, one run.

    A package's share is the cumulative time of its outermost imports (those not made by the
    package itself), so a package imported inside another (scipy inside scikit-learn) counts
    in both.
    """
    cmd = [sys.executable, "-X", "importtime", "-m", "landscape_cli", *args]
    # `-m` puts the working directory first on sys.path: run in the tree measured
    done = subprocess.run(cmd, env=_env(root), cwd=root, capture_output=True, text=True, check=True)
    rows = []
    for line in done.stderr.splitlines():
        m = _LINE.match(line)
        if m:
            rows.append((int(m.group(2)) / 1e6, len(m.group(3)) // 2, m.group(4)))
    out = {"all": sum(cum for cum, depth, _ in rows if depth == 0)}
    # -X importtime prints a module after everything it imported: its parent comes later, as
    # the next line of smaller depth
    for k, (cum, depth, name) in enumerate(rows):
        top = name.split(".")[0]
        if top not in HEAVY:
            continue
        parent = next((n for _, d, n in rows[k + 1 :] if d < depth), None)
        if parent is None or parent.split(".")[0] != top:
            out[top] = out.get(top, 0.0) + cum
    return out


def first_product(args: list[str], root: str) -> tuple[float, float]:
    """Seconds from launch to the first progress line on stderr, and to exit."""
    cmd = [sys.executable, "-m", "landscape_cli", *args]
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        cmd, env=_env(root), cwd=root, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    first = None
    assert proc.stderr is not None
    for line in proc.stderr:
        if first is None and line.startswith("[hessian]"):
            first = time.perf_counter() - t0
    proc.wait()
    total = time.perf_counter() - t0
    if proc.returncode != 0 or first is None:
        raise SystemExit(f"{' '.join(cmd)} failed (exit {proc.returncode})")
    return first, total


def _tree(commit: str, into: str) -> str:
    """The repository's files at ``commit``, extracted into ``into``; returns the folder."""
    root = Path(__file__).resolve().parents[1]
    archive = subprocess.run(
        ["git", "-C", str(root), "archive", commit], check=True, capture_output=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", into], input=archive, check=True)
    return into


def _env(root: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    return env


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int)
    parser.add_argument("--against", metavar="COMMIT", help="also measure this commit's code")
    args = parser.parse_args()
    trees = {"now": str(Path(__file__).resolve().parents[1])}
    flags = ["--threads", str(args.threads)] if args.threads else []
    load0 = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp, tempfile.TemporaryDirectory() as old:
        if args.against:
            trees = {args.against[:10]: _tree(args.against, old), **trees}
        env = _env(trees["now"])
        ckpt, h5 = f"{tmp}/cnn.pt", f"{tmp}/cnn.h5"
        subprocess.run(
            [sys.executable, "-m", "landscape_cli", "train", "--model", "cnn", "--dataset",
             "digits", "--epochs", "1", "--out", ckpt, "--json"],
            env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        hessian = ["hessian", ckpt, "--top-k", "1", "--trace-probes", "0", "--density-probes",
                   "0", "--out", h5, "--overwrite"]  # fmt: skip
        commands = {
            "--help": ["--help"],
            "train (1 epoch)": ["train", "--model", "cnn", "--dataset", "digits", "--epochs",
                                "1", "--out", f"{tmp}/t.pt", "--overwrite"],
            "hessian (top-1)": hessian,
            "scan (5 points)": ["scan", ckpt, "--points", "5", "--samples", "256", "--out",
                                f"{tmp}/s.h5", "--overwrite"],
            "audit (small)": ["audit", ckpt, "--samples", "128", "--top-k", "1",
                              "--trace-probes", "4", "--density-probes", "0", "--overwrite"],
            "plot fig6": ["plot", f"{tmp}/s.h5", "--figure", "fig6", "--out", f"{tmp}/f.png"],
        }  # fmt: skip
        print(f"import time per command (python -X importtime, one run each; {os.cpu_count()} "
              "CPUs)")  # fmt: skip
        shown = [p for p in HEAVY if p not in ("rich", "typer")]
        print(f"{'command':<18}{'code':<12}{'all imports':>12}  "
              + "  ".join(f"{p:>12}" for p in shown))  # fmt: skip
        for name, cmd in commands.items():
            for code, root in trees.items():
                t = importtime([*flags, *cmd], root)
                cells = "  ".join(f"{t[p]:>11.2f}s" if p in t else f"{'-':>12}" for p in shown)
                print(f"{name:<18}{code:<12}{t['all']:>11.2f}s  {cells}", flush=True)
        firsts: dict[str, list[float]] = {code: [] for code in trees}
        totals: dict[str, list[float]] = {code: [] for code in trees}
        for _ in range(args.repeats):
            for code, root in trees.items():  # interleaved: both see the same load
                first, total = first_product([*flags, *hessian], root)
                firsts[code].append(first)
                totals[code].append(total)
        print(
            "\nlandscape hessian CKPT --top-k 1 --trace-probes 0 --density-probes 0 (digits CNN),"
            f" {args.repeats} runs each:"
        )
        for code in trees:
            f, t = firsts[code], totals[code]
            print(
                f"  {code:<11} launch to first product (first progress line): median "
                f"{statistics.median(f):.2f} s (min {min(f):.2f}, max {max(f):.2f}); "
                f"launch to exit: median {statistics.median(t):.2f} s"
            )
    print(
        f"1-min load average at start {load0:.2f}, at end {os.getloadavg()[0]:.2f}; "
        f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}"
    )


if __name__ == "__main__":
    main()
