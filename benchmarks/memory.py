"""Peak memory of `landscape hessian`'s estimators on a full-width CIFAR ResNet-18 (issue 12.5).

Each case runs in a fresh Python process (so peaks do not mix): it builds the CIFAR ResNet-18
(width 64, 11,173,962 parameters), 64 CIFAR-shaped samples (a fixed 10-class Gaussian mixture, so
nothing is downloaded), the Hessian operator (float32 products, graphs kept when they fit), and then
runs :func:`landscape_cli.hessian.analyze` with the case's settings. It reports the process's peak
resident memory (``ru_maxrss``), its resident memory just before the estimators start, and the
difference: the memory the estimators themselves took. On CUDA it reports
``torch.cuda.max_memory_allocated`` instead.

``--code DIR`` puts another checkout of landscape first on ``sys.path``, so the same cases can be
measured on an older commit (``git worktree add /tmp/base <commit>``) side by side:

    .venv/bin/python benchmarks/memory.py                       # this checkout
    .venv/bin/python benchmarks/memory.py --code /tmp/base      # another commit, same cases

Cases: ``top1`` (``--top-k 1``, nothing else), ``top5`` (``--top-k 5``, nothing else), ``default``
(the settings of ``landscape hessian`` with its defaults, at 64 samples).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

CASES = {
    "top1": {"top_k": 1, "trace_probes": 0, "density_probes": 0},
    "top5": {"top_k": 5, "trace_probes": 0, "density_probes": 0},
    "default": {},
}


def rss_now() -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def run_case(case: str, device: str, samples: int) -> dict:
    """Measure one case in this process (called in a child process)."""
    import torch

    from landscape_cli import hessian as hs
    from landscape_cli.batches import Batch
    from landscape_cli.models import build_model

    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(1)
    means = torch.randn(10, 3, 32, 32, generator=gen)
    y = torch.arange(samples) % 10
    x = means[y] + torch.randn(samples, 3, 32, 32, generator=gen)
    model = build_model("resnet18", input_shape=(3, 32, 32), num_classes=10)
    batches = [Batch(x[i : i + 64], y[i : i + 64]) for i in range(0, samples, 64)]
    dev = torch.device(device)
    op = hs.HessianOperator(model, batches, device=dev)
    settings = hs.HessianSettings(**CASES[case])
    if dev.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
    else:
        before = rss_now()
    t0 = time.perf_counter()
    results = hs.analyze(op, settings)
    seconds = time.perf_counter() - t0
    if dev.type == "cuda":
        peak = torch.cuda.max_memory_allocated()
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    top = results.top
    return {
        "case": case,
        "n": op.n,
        "hvps": op.hvp_count,
        "seconds": seconds,
        "before": before,
        "peak": peak,
        "lanczos_steps": top.steps if top is not None else None,
        "code": os.path.dirname(os.path.dirname(hs.__file__)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", default="top1,top5,default")
    parser.add_argument("--code", default=None, help="another landscape checkout to measure")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--samples", type=int, default=64)
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(run_case(args.child, args.device, args.samples)))
        return
    env = dict(os.environ)
    if args.code:
        env["PYTHONPATH"] = os.path.abspath(args.code) + os.pathsep + env.get("PYTHONPATH", "")
    gib = 1024**3
    print(f"CIFAR ResNet-18 (width 64), {args.samples} samples, device {args.device}")
    print(f"{'case':8} {'HVPs':>5} {'steps':>5} {'seconds':>8} {'before GiB':>10} "
          f"{'peak GiB':>9} {'estimators GiB':>14}  code")  # fmt: skip
    for case in args.cases.split(","):
        cmd = [sys.executable, __file__, "--child", case, "--device", args.device,
               "--samples", str(args.samples)]  # fmt: skip
        out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
        if out.returncode != 0:
            tail = (out.stderr.strip().splitlines() or ["?"])[-1]
            print(f"{case:8} failed (exit {out.returncode}): {tail}")
            continue
        r = json.loads(out.stdout.strip().splitlines()[-1])
        print(
            f"{r['case']:8} {r['hvps']:5d} {r['lanczos_steps'] or 0:5d} {r['seconds']:8.1f} "
            f"{r['before'] / gib:10.2f} {r['peak'] / gib:9.2f} "
            f"{(r['peak'] - r['before']) / gib:14.2f}  {r['code']}"
        )


if __name__ == "__main__":
    main()
