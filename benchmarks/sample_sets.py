"""How far do λmax and the trace move with other samples? `--sample-sets` on the reference CNN.

Usage: python benchmarks/sample_sets.py [--checkpoint CNN.pt] [--samples 256] [--sets 4]

The digits CNN of `landscape train`'s defaults (20 epochs; trained into a temporary folder when no
checkpoint is given), `landscape hessian --samples N --sample-sets K --density-probes 0 --json`
(top-5, trace at the default 1 % relative standard error). Prints each set's λ1 (with its
residual) and trace (with its standard error), their mean and spread over the sets, the ratio of
the spread to the estimator's own error, and the products and seconds against a single set.
Writes nothing but a temporary results file.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def run(args: list[str]) -> tuple[dict, float]:
    t0 = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-m", "landscape_cli", *args], capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout), time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", type=Path)
    ap.add_argument("--samples", type=int, default=256)
    ap.add_argument("--sets", type=int, default=4)
    args = ap.parse_args()
    folder = Path(tempfile.mkdtemp())
    ckpt = args.checkpoint
    if ckpt is None:
        ckpt = folder / "cnn.pt"
        subprocess.run(
            [sys.executable, "-m", "landscape_cli", "train", "--epochs", "20", "--out", str(ckpt)],
            check=True,
            capture_output=True,
        )
    common = ["hessian", str(ckpt), "--samples", str(args.samples), "--density-probes", "0"]
    common += ["--json", "--out", str(folder / "r.h5"), "--overwrite"]
    one, t_one = run(common)
    many, t_many = run([*common, "--sample-sets", str(args.sets)])
    s = many["sample_sets"]
    print(f"digits CNN, {args.samples} samples per set, {args.sets} disjoint sets (seed 0)")
    print(f"{'set':>4}  {'λ1':>9}  {'trace':>9}  {'± stderr':>9}")
    for i in range(s["sets"]):
        lam, tr, se = s["lambda_max"][i], s["trace"][i], s["trace_stderr"][i]
        print(f"{i:>4}  {lam:>9.4f}  {tr:>9.2f}  {se:>9.2f}")
    lam_rel = s["lambda_max_std"] / abs(s["lambda_max_mean"])
    tr_rel = s["trace_std"] / abs(s["trace_mean"])
    print(
        f"λ1: mean {s['lambda_max_mean']:.4f}, spread {s['lambda_max_std']:.4f} "
        f"({lam_rel:.1%}); its residual {many['residuals'][0]:.1e} "
        f"(spread / residual {s['lambda_max_std'] / max(many['residuals'][0], 1e-300):.0f}x)"
    )
    print(
        f"trace: mean {s['trace_mean']:.2f}, spread {s['trace_std']:.2f} ({tr_rel:.1%}); "
        f"its standard error {np.mean(s['trace_stderr']):.2f} "
        f"(spread / stderr {s['trace_std'] / np.mean(s['trace_stderr']):.2f})"
    )
    ratio = many["hvp_count"] / one["hvp_count"]
    print(
        f"cost: {many['hvp_count']} HVPs and {t_many:.1f} s with {args.sets} sets, "
        f"{one['hvp_count']} HVPs and {t_one:.1f} s with one ({ratio:.2f}x)"
    )


if __name__ == "__main__":
    main()
