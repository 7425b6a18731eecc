"""Wall-clock of `landscape demo`: run it N times (3 by default) and report the median.

Usage: python benchmarks/demo_time.py [--repeats 3] [--threads N]

Each repeat runs `python -m landscape_cli demo --out TMP` as a fresh process (three training
runs, three `hessian` runs, three 1-D scans, Figs. 2, 5 and 6) and times it end to end. Target
(issue 12): median ≤ 120 s on an idle 2-core machine. Run it on an otherwise idle machine: other
busy processes skew the seconds.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int)
    args = parser.parse_args()
    flags = ["--threads", str(args.threads)] if args.threads else []
    seconds = []
    load0 = os.getloadavg()[0]
    for i in range(args.repeats):
        with tempfile.TemporaryDirectory() as tmp:
            cmd = [sys.executable, "-m", "landscape_cli", *flags, "demo", "--out", tmp, "--json"]
            t0 = time.perf_counter()
            subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            seconds.append(time.perf_counter() - t0)
        print(f"run {i + 1}: {seconds[-1]:.1f} s", flush=True)
    print(
        f"landscape demo, {args.repeats} runs: median {statistics.median(seconds):.1f} s "
        f"(min {min(seconds):.1f}, max {max(seconds):.1f}); {os.cpu_count()} CPUs; "
        f"1-min load average at start {load0:.2f}, at end {os.getloadavg()[0]:.2f}"
    )


if __name__ == "__main__":
    main()
