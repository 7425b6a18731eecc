"""Cost of `landscape audit` on three checkpoints: from scratch, and reusing their /hessian.

Usage: python benchmarks/audit_reuse.py [--samples 512] [--epochs 20] [--quick]

Trains the demo's three digits-CNN runs (Adam, DualAdam, Adam + warm-up; the demo's 20 epochs and
512 samples by default), then runs,
in one process and on the same checkpoints (each step on fresh copies of the files):

1. `hessian` on each checkpoint with the command's defaults (the reference: three hessian runs);
2. `audit` of the three with no results files (from scratch: it computes its own Hessian
   measures into /audit/hessian);
3. `audit` of the three whose results files already hold the /hessian of step 1 (reused);
4. the audit as it was before the reuse (issue 11/12): every Hessian measure computed and one
   adaptive-sharpness start (``--restarts`` did not exist), emulated here by ``restarts=1`` on
   files without /hessian;

and the same with ``--match-loss``. It counts Hessian-vector products (deterministic), forward
passes of the model over one batch (deterministic; an HVP is one forward and two backward passes
per batch, a loss evaluation one forward per batch) and wall-clock seconds (machine-dependent:
re-run on an idle machine before quoting them). Targets (issue 12.4): step 3 ≤ 0.3× step 4;
step 2 ≤ 1.15× step 1. It also prints each run's negative mass from the reused /hessian density,
as defined now (weight below −τ·λmax, τ = 1e-2) and as before (weight below 0), issue 11.4.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch


class Counter:
    """Counts forward passes of the whole model (the network's top module) over one batch."""

    def __init__(self) -> None:
        self.forwards = 0
        self._handle = None

    def __enter__(self) -> Counter:
        from landscape_cli.models.small import MLP, SmallCNN

        def hook(module, args, output):
            if isinstance(module, (MLP, SmallCNN)):
                self.forwards += 1

        self._handle = torch.nn.modules.module.register_module_forward_hook(hook)
        return self

    def __exit__(self, *exc: object) -> None:
        self._handle.remove()


def fresh(checkpoints: list[Path], folder: Path) -> list[Path]:
    folder.mkdir(parents=True)
    out = []
    for ck in checkpoints:
        shutil.copy(ck, folder / ck.name)
        out.append(folder / ck.name)
    return out


def main() -> None:
    from landscape_cli import audit as au
    from landscape_cli.hessian import HessianSettings
    from landscape_cli.jobs import Source, audit_job, hessian_job
    from landscape_cli.jobs.demo import runs
    from landscape_cli.training import train

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=512)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--quick", action="store_true", help="tiny settings (a smoke test)")
    args = parser.parse_args()

    hsettings = HessianSettings()
    asettings = au.AuditSettings()
    if args.quick:
        args.samples, args.epochs = 64, 1
        hsettings = HessianSettings(top_k=2, trace_probes=8, density_probes=2, lanczos_steps=8)
        asettings = au.AuditSettings(
            top_k=2, trace_probes=6, density_probes=2, lanczos_steps=6, directions=2
        )
    source = Source(samples=args.samples)
    tmp = Path(tempfile.mkdtemp(prefix="audit-reuse-"))
    try:
        base = []
        for label, config in runs(args.epochs, 0):
            path = tmp / f"{label.replace(' ', '').replace('+', '-')}.pt"
            train(config, out=path, device="cpu")
            base.append(path)

        table: list[tuple[str, int, int, float]] = []
        negative: list[tuple[str, float, float]] = []

        def step(name: str, fn) -> None:
            print(f"... {name}", file=sys.stderr, flush=True)
            with Counter() as c:
                t0 = time.perf_counter()
                hvps = fn()
                seconds = time.perf_counter() - t0
            table.append((name, hvps, c.forwards, seconds))

        def hessians(cks: list[Path]) -> int:
            return sum(
                hessian_job(ck, hsettings, source=source, device="cpu")[0].hvp_count for ck in cks
            )

        def audit(cks: list[Path], settings, match_loss: bool = False) -> int:
            rows, _ = audit_job(cks, settings, source=source, match_loss=match_loss, device="cpu")
            if not negative and all(r.hessian_source == "hessian" for r in rows):
                from landscape_cli.results import read_hessian

                for ck, r in zip(cks, rows, strict=True):
                    d = read_hessian(ck.with_suffix(".h5")).report.density
                    old = au.density_shape(d.nodes, d.weights, r.measures.lambda_max, tau=0.0)
                    negative.append((ck.stem, r.measures.negative_mass, old.negative_mass))
            return sum(r.measures.hvp_count for r in rows)

        old = replace(asettings, restarts=1)
        for match in (False, True):
            tag = " --match-loss" if match else ""
            pre = fresh(base, tmp / f"pre{int(match)}")
            step("three hessian runs", lambda pre=pre: hessians(pre))
            step(
                f"audit{tag}, /hessian present (reused)",
                lambda pre=pre, m=match: audit(pre, asettings, m),
            )
            scratch = fresh(base, tmp / f"scratch{int(match)}")
            step(
                f"audit{tag} from scratch",
                lambda s=scratch, m=match: audit(s, asettings, m),
            )
            before = fresh(base, tmp / f"before{int(match)}")
            step(
                f"audit{tag} as before (no reuse, 1 start)",
                lambda b=before, m=match: audit(b, old, m),
            )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    print(
        f"audit of three digits-CNN checkpoints ({args.epochs} epochs), {args.samples} samples, "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, cpu"
    )
    print(f"{'step':46} {'HVPs':>7} {'forwards':>9} {'seconds':>8}")
    for name, hvps, fwd, sec in table:
        print(f"{name:46} {hvps:7d} {fwd:9d} {sec:8.1f}")
    for k in (0, 4):
        ref, reused, scratch, before = table[k : k + 4]
        tag = " (--match-loss)" if k else ""
        print(
            f"reused / before{tag}: HVPs {reused[1] / before[1]:.3f}, forwards "
            f"{reused[2] / before[2]:.3f}, seconds {reused[3] / before[3]:.3f}"
        )
        print(
            f"from scratch / three hessian runs{tag}: HVPs {scratch[1] / ref[1]:.3f}, forwards "
            f"{scratch[2] / ref[2]:.3f}, seconds {scratch[3] / ref[3]:.3f}"
        )
    print("negative mass (from each run's /hessian density): τ = 1e-2 (now) | below 0 (before)")
    for name, now, before in negative:
        print(f"  {name:20} {now:.4f} | {before:.4f}")
    try:
        import os

        print(f"load average {os.getloadavg()}", file=sys.stderr)
    except OSError:
        pass


if __name__ == "__main__":
    main()
