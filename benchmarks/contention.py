"""Wall-clock of identical `landscape hessian` runs started together: alone, a pair, four.

Usage: python benchmarks/contention.py [--checkpoint CKPT] [--samples 512] [--repeats 1]
       [--configs today,default,threads1] [--counts 1,2,4]

Each configuration runs the same command (`landscape hessian CKPT --samples N` with its
defaults) 1, 2 and 4 times at once, as separate processes, and reports each run's median
seconds and its ratio to *today alone* (the first configuration run alone):

- today:    the behaviour before issue 12: torch's default thread count (all CPUs) and libgomp's
            spinning wait, fixed by OMP_NUM_THREADS=<cpus> (which also keeps `landscape` from
            sharing the CPUs);
- passive:  the same with OMP_WAIT_POLICY=PASSIVE (sleeping threads; measured and rejected);
- default:  what `landscape` does now: each process takes max(1, cpus // P) spinning threads,
            P being the landscape processes alive (landscape_cli/commands/_cpu_share.py);
- threads1: `landscape --threads 1`.

Targets (issue 12): a pair each within 1.5× of one alone; one alone no slower than today
(≤ 1.05×). Needs an otherwise idle machine: every other busy process skews the ratios. Without
--checkpoint it trains the digits CNN (20 epochs) into a temporary folder first.
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

_CPUS = str(os.cpu_count() or 1)
CONFIGS = {
    "today": ({"OMP_NUM_THREADS": _CPUS}, []),
    "passive": ({"OMP_NUM_THREADS": _CPUS, "OMP_WAIT_POLICY": "PASSIVE"}, []),
    "default": ({}, []),
    "threads1": ({}, ["--threads", "1"]),
}


def clean_env(extra: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OMP_", "GOMP_", "MKL_"))}
    env.update(extra)
    return env


def run_together(count: int, ckpt: Path, samples: int, folder: Path, config: str) -> list[float]:
    extra_env, flags = CONFIGS[config]
    procs, starts = [], []
    for i in range(count):
        cmd = [sys.executable, "-m", "landscape_cli", *flags, "hessian", str(ckpt)]
        cmd += ["--samples", str(samples), "--out", str(folder / f"{config}-{i}.h5"), "--json"]
        starts.append(time.perf_counter())
        procs.append(
            subprocess.Popen(
                cmd, env=clean_env(extra_env), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
            )
        )
    seconds = [0.0] * count
    pending = set(range(count))
    while pending:
        for i in list(pending):
            if procs[i].poll() is not None:
                seconds[i] = time.perf_counter() - starts[i]
                pending.discard(i)
                if procs[i].returncode != 0:
                    raise SystemExit(f"{config} run {i} failed: {procs[i].stderr.read().decode()}")
        time.sleep(0.05)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path)
    parser.add_argument("--samples", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--configs", default="today,default,threads1")
    parser.add_argument("--counts", default="1,2,4")
    args = parser.parse_args()
    configs = args.configs.split(",")
    counts = [int(c) for c in args.counts.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        ckpt = args.checkpoint
        if ckpt is None:
            ckpt = folder / "cnn.pt"
            subprocess.run(
                [sys.executable, "-m", "landscape_cli", "train", "--out", str(ckpt)],
                check=True,
                stdout=subprocess.DEVNULL,
            )
        load0 = os.getloadavg()[0]
        results: dict[tuple[str, int], list[float]] = {}
        for _ in range(args.repeats):  # interleaved: drift hits every row alike
            for count in counts:
                for config in configs:
                    got = run_together(count, ckpt, args.samples, folder, config)
                    results.setdefault((config, count), []).extend(got)
        load1 = os.getloadavg()[0]
    base = statistics.median(results[(configs[0], counts[0])])
    print(f"`landscape hessian --samples {args.samples}` on {ckpt.name}, {os.cpu_count()} CPUs")
    ratio = f"/ {configs[0]} alone"
    print(f"{'config':<10} {'at once':>7} {'median s':>9} {'max s':>8} {ratio:>14}")
    for count in counts:
        for config in configs:
            s = results[(config, count)]
            med = statistics.median(s)
            print(f"{config:<10} {count:>7} {med:>9.1f} {max(s):>8.1f} {med / base:>14.2f}")
    print(f"1-min load average at start {load0:.2f}, at end {load1:.2f}")


if __name__ == "__main__":
    main()
