"""Speed-up of 2 processes (torchrun, Gloo, CPU) over 1, for a Hessian and for a scan.

Usage: python benchmarks/distributed.py [--samples 1024] [--points 15]

Both runs use one thread per process (OMP_NUM_THREADS=1), so 2 processes use the 2 cores that the
1-process run leaves half idle: the fair comparison of the parallel split itself. Measured on the
same checkpoint (the digits CNN trained for 5 epochs, written to a temporary folder), wall-clock
seconds of the whole command (process start-up included, which torchrun pays twice), the median of
3 runs each.
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

from landscape_cli.training import TrainConfig, train


def timed(cmd: list[str], env: dict[str, str]) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True, env=env)
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=1024)
    parser.add_argument("--points", type=int, default=15)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    one = [sys.executable, "-m", "landscape_cli"]
    two = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    two += ["-m", "landscape_cli"]
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = Path(tmp) / "cnn.pt"
        train(TrainConfig(epochs=5), out=ckpt)
        jobs = {
            "hessian (top-5, 40 trace probes, 4x30 SLQ)": [
                "hessian", str(ckpt), "--samples", str(args.samples), "--batch-size", "128",
                "--trace-probes", "40", "--trace-rtol", "0", "--density-probes", "4",
                "--lanczos-steps", "30", "--no-cache-graphs",
            ],
            f"scan 2-D {args.points}x{args.points}": [
                "scan", str(ckpt), "--dim", "2", "--points", str(args.points),
                "--samples", str(args.samples), "--overwrite",
            ],
        }  # fmt: skip
        print(
            f"2 processes vs 1, CPU, 1 thread each, {args.samples} samples, "
            f"median of {args.repeats}"
        )
        print(f"{'job':<44} {'1 proc s':>9} {'2 procs s':>10} {'speed-up':>9}")
        for name, job in jobs.items():
            t1, t2 = [], []
            for r in range(args.repeats):
                out = ["--out", str(Path(tmp) / f"r{r}.h5")]
                t1.append(timed([*one, *job, *out], env))
                out = ["--out", str(Path(tmp) / f"d{r}.h5")]
                t2.append(timed([*two, *job, *out], env))
            a, b = statistics.median(t1), statistics.median(t2)
            print(f"{name:<44} {a:>9.2f} {b:>10.2f} {a / b:>8.2f}x")


if __name__ == "__main__":
    main()
