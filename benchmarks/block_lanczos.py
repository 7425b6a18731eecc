"""Block Lanczos against single-vector Lanczos: HVPs and seconds of the default top-5, and what a
product of b columns costs.

Usage: python benchmarks/block_lanczos.py [--checkpoint CNN.pt] [--samples 1024] [--quick]

Two operators, float32, eval mode, cross-entropy, seed 0:

- the reference digits CNN (`landscape train` defaults, 24,058 parameters; trained for 20 epochs
  into a temporary folder when no checkpoint is given), on `--samples` training samples;
- a CIFAR ResNet-18 of width 8 (~176 k parameters) trained for 30 Adam steps on 64 samples of a
  10-class Gaussian mixture of CIFAR-shaped images, on 256 held-out samples (as
  `benchmarks/hessian_vs_pyhessian.py` builds it).

For each: the default top-5 (tol 1e-4, at most 100 products) with `--block-size 1` and the
default block (2, grown on clusters), their HVPs, seconds (median of `--repeats` interleaved
runs), eigenvalues and `multiplicity_resolved`; the whole default `landscape hessian` analysis
(top-5, trace, density) with each; and the seconds of one `matmat` of b columns divided by b
single products, b = 1, 2, 4, 8. Prints tables; writes nothing.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from landscape_cli.batches import Batch
from landscape_cli.hessian import HessianOperator, HessianSettings, analyze
from landscape_cli.hessian.lanczos import lanczos_run
from landscape_cli.models import build_model
from landscape_cli.workload import Source, load_workload


def cnn_operator(checkpoint: Path | None, samples: int) -> HessianOperator:
    if checkpoint is None:
        folder = Path(tempfile.mkdtemp())
        checkpoint = folder / "cnn.pt"
        cmd = [sys.executable, "-m", "landscape_cli", "train", "--epochs", "20", "--out"]
        subprocess.run([*cmd, str(checkpoint)], check=True, capture_output=True)
    work = load_workload(checkpoint, Source(samples=samples, batch_size=128))
    return HessianOperator(work.model, work.batches, loss="ce")


def resnet_operator(samples: int) -> HessianOperator:
    gen = torch.Generator().manual_seed(0)
    means = torch.randn(10, 3, 32, 32, generator=gen) * 0.5

    def draw(n: int):
        y = torch.randint(0, 10, (n,), generator=gen)
        return torch.randn(n, 3, 32, 32, generator=gen) + means[y], y

    torch.manual_seed(0)
    model = build_model("resnet18", input_shape=(3, 32, 32), num_classes=10, width=8)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    x, y = draw(64)
    model.train()
    for _ in range(30):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    x, y = draw(samples)
    batches = [Batch(x[i : i + 64], y[i : i + 64]) for i in range(0, samples, 64)]
    return HessianOperator(model, batches, loss="ce")


def timed(fn, repeats: int) -> tuple[list[float], object]:
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return times, out


def top5(op: HessianOperator, block: int, repeats: int) -> dict:
    def run():
        result, _ = lanczos_run(op, 5, generator=torch.Generator().manual_seed(0), block_size=block)
        return result

    times, r = timed(run, repeats)
    return {"times": times, "result": r}


def whole(op: HessianOperator, block: int) -> dict:
    s = replace(HessianSettings(), block_size=block)
    before = op.hvp_count
    t0 = time.perf_counter()
    out = analyze(op, s)
    seconds = time.perf_counter() - t0
    tr, d = out.trace, out.density
    return {
        "hvps": op.hvp_count - before,
        "top": out.top.hvp_count,
        "trace": tr.hvp_count,
        "density": d.hvp_count,
        "probes": d.probes,
        "w1": d.achieved_tol,
        "trace_text": f"{tr.estimate:.6g} ± {tr.stderr:.3g}",
        "seconds": seconds,
    }


def matmat_cost(op: HessianOperator, repeats: int) -> dict[int, float]:
    """Seconds of one product of b columns over b single products (median of interleaved runs)."""
    gen = torch.Generator().manual_seed(1)
    out: dict[int, list[float]] = {b: [] for b in (1, 2, 4, 8)}
    for _ in range(repeats):
        for b in out:
            V = torch.randn(op.n, b, generator=gen, dtype=torch.float64)
            t0 = time.perf_counter()
            op.matmat(V)
            out[b].append(time.perf_counter() - t0)
    single = statistics.median(out[1])
    return {b: statistics.median(ts) / (b * single) for b, ts in out.items()}


def report(name: str, op: HessianOperator, repeats: int) -> None:
    print(f"\n{name}: {op.n:,} parameters, {op.num_samples} samples")
    rows = {b: top5(op, b, repeats) for b in (1, 0)}
    print("top-5 (tol 1e-4)       HVPs  seconds (median)  block  resolved  eigenvalues")
    for b, row in rows.items():
        r = row["result"]
        label = "--block-size 1" if b == 1 else "default block"
        print(
            f"{label:<22} {r.hvp_count:>5}  {statistics.median(row['times']):>15.2f}  "
            f"{r.block_size:>5}  {r.multiplicity_resolved!s:>8}  "
            f"{np.array2string(r.eigenvalues, precision=5)}"
        )
    diff = np.abs(rows[1]["result"].eigenvalues - rows[0]["result"].eigenvalues)
    bound = rows[1]["result"].residuals + rows[0]["result"].residuals
    print(f"|difference| ≤ sum of residuals: {bool(np.all(diff <= bound))}")
    print("whole default analysis  HVPs (top + trace + density)  probes  W1/range  trace  seconds")
    for b in (1, 0):
        w = whole(op, b)
        label = "--block-size 1" if b == 1 else "default block"
        print(
            f"{label:<22} {w['hvps']:>5} ({w['top']} + {w['trace']} + {w['density']})"
            f"  {w['probes']:>6}  {w['w1']:.4%}  {w['trace_text']}  {w['seconds']:.1f}"
        )
    cost = matmat_cost(op, repeats)
    print(
        "matmat of b columns / b single products: "
        + ", ".join(f"b={b}: {c:.2f}" for b, c in cost.items())
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", type=Path)
    ap.add_argument("--samples", type=int, default=1024)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="128 CNN samples, 64 ResNet samples")
    args = ap.parse_args()
    if args.quick:
        args.samples, resnet_samples = 128, 64
    else:
        resnet_samples = 256
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, load "
        f"{os.getloadavg()[0]:.1f}"
    )
    report("digits CNN", cnn_operator(args.checkpoint, args.samples), args.repeats)
    report("CIFAR ResNet-18, width 8", resnet_operator(resnet_samples), args.repeats)


if __name__ == "__main__":
    main()
