"""HVPs and accuracy of `landscape hessian`'s defaults before and after the adaptive density.

Usage: python benchmarks/adaptive_density.py [--checkpoint CKPT] [--samples 1024]

On one operator (the digits CNN by default, trained for 20 epochs into a temporary folder when
no checkpoint is given; 1024 training samples, float32, eval mode, seed 0) it runs:

- before: what `landscape hessian` did before issue 12: top-5 Lanczos, the trace deflated on the
          top-k basis, then SLQ with a fixed 10 probes × 90 steps;
- after:  `analyze` with today's default settings (adaptive SLQ, --density-tol 1e-3, the
          first probe continuing the top-k run, the trace deflated on its 90-step basis);
- reference: SLQ with 20 probes × 90 steps on a separate random stream;

and reports the HVPs of each estimator, the W1 distance of each density from the reference
(relative to the reference's spectral range), the trace's 95 % CI width, and seconds.
Targets (issue 12): ≥ 4× fewer HVPs, W1 ≤ 0.5 % of the range, trace CI no wider.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from landscape_cli.hessian import HessianOperator, HessianSettings, analyze, stream
from landscape_cli.hessian.density import slq_density, wasserstein1
from landscape_cli.hessian.lanczos import lanczos_run
from landscape_cli.hessian.trace import deflated_trace
from landscape_cli.workload import Source, load_workload


def before(op, s: HessianSettings) -> dict:
    """The pre-issue-12 pipeline of `analyze`, step by step."""
    out, t0 = {}, time.perf_counter()
    top, basis = lanczos_run(
        op, s.top_k, tol=s.tol, max_steps=s.max_steps, generator=stream(s.seed, "top")
    )
    out["top"] = top
    out["trace"] = deflated_trace(
        op, basis, probes=s.trace_probes, rtol=s.trace_rtol, generator=stream(s.seed, "trace")
    )
    out["density"] = slq_density(
        op, probes=s.density_probes, steps=s.lanczos_steps, generator=stream(s.seed, "density")
    )
    out["seconds"] = time.perf_counter() - t0
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path)
    parser.add_argument("--samples", type=int, default=1024)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = args.checkpoint
        if ckpt is None:
            ckpt = Path(tmp) / "cnn.pt"
            subprocess.run(
                [sys.executable, "-m", "landscape_cli", "train", "--out", str(ckpt)],
                check=True,
                stdout=subprocess.DEVNULL,
            )
        work = load_workload(ckpt, Source(samples=args.samples, batch_size=128))
    op = HessianOperator(work.model, work.batches)
    s = HessianSettings()
    runs = {"before": before(op, s)}
    t0 = time.perf_counter()
    after = analyze(op, s)
    runs["after"] = {
        "top": after.top,
        "trace": after.trace,
        "density": after.density,
        "seconds": time.perf_counter() - t0,
    }
    ref = slq_density(
        op, probes=20, steps=s.lanczos_steps, generator=torch.Generator().manual_seed(7)
    )
    spread = float(ref.nodes.max() - ref.nodes.min())
    print(f"digits CNN, {op.n:,} parameters, {work.samples} samples, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads")  # fmt: skip
    head = f"{'':<7} {'top':>5} {'trace':>6} {'density':>8} {'total':>6} {'probes':>7}"
    print(f"{head} {'W1/range':>9} {'trace ± 95% CI':>22} {'CI width':>9} {'seconds':>8}")
    total = {}
    for name, r in runs.items():
        top, tr, d = r["top"], r["trace"], r["density"]
        total[name] = top.hvp_count + tr.hvp_count + d.hvp_count
        w1 = wasserstein1(d.nodes, d.weights, ref.nodes, ref.weights) / spread
        width = tr.ci95[1] - tr.ci95[0]
        print(
            f"{name:<7} {top.hvp_count:>5} {tr.hvp_count:>6} {d.hvp_count:>8} {total[name]:>6} "
            f"{d.probes:>7} {w1:>9.4%} {tr.estimate:>12.5g} ± {width / 2:<7.3g} {width:>9.4g} "
            f"{r['seconds']:>8.1f}"
        )
    d = runs["after"]["density"]
    print(f"after: estimated W1 error {d.achieved_tol:.4%} of the range (tol {d.tol:g}), "
          f"{d.probes} of at most {d.max_probes} probes, first probe from the top-k run: "
          f"{d.krylov_start}; trace: {runs['after']['trace'].note}")  # fmt: skip
    print(f"HVPs before / after: {total['before'] / total['after']:.2f}x; reference: 20 probes, "
          f"range {spread:.4g}; single-probe W1/range of the reference's probes: "
          + ", ".join(
              f"{wasserstein1(ref.nodes[p], ref.weights[p], ref.nodes, ref.weights) / spread:.4%}"
              for p in range(3)
          ))  # fmt: skip


if __name__ == "__main__":
    main()
