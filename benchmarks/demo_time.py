"""Wall-clock of `landscape demo`: run it N times (3 by default) and report the median.

Usage: python benchmarks/demo_time.py [--repeats 3] [--threads N] [--against COMMIT]

Each repeat runs `python -m landscape_cli demo --out TMP` as a fresh process (three training
runs with a snapshot per epoch, three `hessian` runs, three 1-D scans, three trajectory scans,
Figs. 2, 5, 6 and 7) and times it end to end. Target (issue 12): median ≤ 120 s on an idle 2-core
machine. ``--against COMMIT`` also times that commit's demo (``git archive`` into a temporary
folder), interleaved with the current one, so that both see the same load (issue 24: the demo
with Fig. 7 within 1.5× the time before). Run it on an otherwise idle machine: other busy
processes skew the seconds.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _tree(commit: str, into: str) -> str:
    """The repository's files at ``commit``, extracted into ``into``; returns the folder."""
    root = Path(__file__).resolve().parents[1]
    archive = subprocess.run(
        ["git", "-C", str(root), "archive", commit], check=True, capture_output=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", into], input=archive, check=True)
    return into


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int)
    parser.add_argument(
        "--against", metavar="COMMIT", help="also time this commit's demo, interleaved"
    )
    args = parser.parse_args()
    flags = ["--threads", str(args.threads)] if args.threads else []
    load0 = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as old:
        trees = {"now": str(Path(__file__).resolve().parents[1])}
        if args.against:
            trees = {args.against[:10]: _tree(args.against, old), **trees}
        seconds: dict[str, list[float]] = {code: [] for code in trees}
        for i in range(args.repeats):
            for code, root in trees.items():  # interleaved: both see the same load
                env = {**os.environ, "PYTHONPATH": root}
                with tempfile.TemporaryDirectory() as tmp:
                    cmd = [sys.executable, "-m", "landscape_cli", *flags, "demo", "--out", tmp,
                           "--json"]  # fmt: skip
                    t0 = time.perf_counter()
                    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL, cwd=root, env=env)  # fmt: skip
                    seconds[code].append(time.perf_counter() - t0)
                print(f"run {i + 1} ({code}): {seconds[code][-1]:.1f} s", flush=True)
    for code, times in seconds.items():
        print(
            f"landscape demo ({code}), {args.repeats} runs: median {statistics.median(times):.1f} s"
            f" (min {min(times):.1f}, max {max(times):.1f})"
        )
    if args.against:
        ratio = statistics.median(seconds["now"]) / statistics.median(seconds[args.against[:10]])
        print(f"ratio now / {args.against[:10]}: {ratio:.2f}")
    print(
        f"{os.cpu_count()} CPUs; 1-min load average at start {load0:.2f}, at end "
        f"{os.getloadavg()[0]:.2f}; OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}"
    )


if __name__ == "__main__":
    main()
