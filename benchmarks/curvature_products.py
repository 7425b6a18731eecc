"""Cost of one product with the Hessian, the GGN and the empirical Fisher, in gradients.

Usage: python benchmarks/curvature_products.py [--samples 1024] [--batch-size 128]
       [--repeats 7] [--threads 2] [--quick]

The digits CNN (the registry's ``cnn``, as ``landscape demo`` trains it) after 2 epochs of Adam,
in eval mode, cross-entropy, on ``--samples`` training samples in batches of ``--batch-size``
(``landscape hessian``'s defaults). Times one full-sample-set product of each operator with one
vector, with the batches' graphs kept (``cache_graphs=True``, the default when they fit) and
rebuilt per product (``False``), against one gradient of the mean loss over the same batches
(forward + backward). Every time is the median of ``--repeats`` interleaved repeats, after one
warm-up of each. Also checks, on the same vector, that vᵀGv ≥ 0 and vᵀFv ≥ 0. Prints a table,
writes nothing. Numbers taken while other jobs use the cores are noisy: the load average is
printed with them.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch

from landscape_cli.batches import evaluation_mode, make_batches
from landscape_cli.hessian.curvature import curvature_operator
from landscape_cli.losses import LOSSES


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=1024)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--quick", action="store_true", help="256 samples, 3 repeats (a smoke test)")
    args = ap.parse_args()
    if args.quick:
        args.samples, args.repeats = 256, 3
    torch.set_num_threads(args.threads)
    load0 = os.getloadavg()[0]

    from landscape_cli.checkpoints import load_model
    from landscape_cli.data import load_dataset
    from landscape_cli.training import TrainConfig, train

    with tempfile.TemporaryDirectory() as tmp:
        ckpt = Path(tmp) / "cnn.pt"
        train(TrainConfig(model="cnn", dataset="digits", epochs=2, seed=0), out=ckpt)
        model = load_model(ckpt).model.eval()
    dataset = load_dataset("digits", "train").dataset
    batches = make_batches(dataset, args.samples, args.batch_size, seed=0)
    n_params = sum(p.numel() for p in model.parameters())
    samples = sum(len(b) for b in batches)

    ops = {}
    for kind in ("hessian", "ggn", "fisher"):
        for cache in (True, False):
            t0 = time.perf_counter()
            ops[(kind, cache)] = curvature_operator(kind, model, batches, cache_graphs=cache)
            ops[(kind, cache)].setup_seconds = time.perf_counter() - t0  # type: ignore[attr-defined]
    params = [p for p in model.parameters() if p.requires_grad]
    fn = LOSSES["ce"]

    def gradient() -> None:
        with evaluation_mode(model):
            for b in batches:
                loss = fn(model(b.inputs), b.targets) * (len(b) / samples)
                torch.autograd.grad(loss, params)

    v = torch.randn(n_params, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    jobs = {"gradient": gradient}
    for (kind, cache), op in ops.items():
        jobs[f"{kind}, cache_graphs={cache}"] = lambda op=op: op.matvec(v)
    times: dict[str, list[float]] = {k: [] for k in jobs}
    for job in jobs.values():  # warm-up
        job()
    for _ in range(args.repeats):
        for name, job in jobs.items():
            t0 = time.perf_counter()
            job()
            times[name].append(time.perf_counter() - t0)
    med = {k: statistics.median(ts) for k, ts in times.items()}

    print(
        f"curvature products on the digits CNN ({n_params:,} parameters, 2 epochs of Adam), eval "
        f"mode, cross-entropy, {samples} samples in batches of {args.batch_size}"
    )
    print(f"torch {torch.__version__}, {args.threads} threads, cpu, float32 products")
    print(f"cost of one product, median of {args.repeats} interleaved repeats:")
    print(f"  {'':42s}{'ms':>9s}{'x gradient':>12s}")
    for name, t in med.items():
        print(f"  {name:42s}{1e3 * t:9.1f}{t / med['gradient']:12.2f}")
    print("setup (operator construction, incl. the determinism check and kept graphs):")
    for (kind, cache), op in ops.items():
        print(f"  {kind}, cache_graphs={cache}: {op.setup_seconds:.2f} s")  # type: ignore[attr-defined]
    quad = {k: float(v @ ops[(k, True)].matvec(v)) for k in ("hessian", "ggn", "fisher")}
    print(
        "vᵀAv for one Gaussian v: "
        + ", ".join(f"{k} {q:.4g}" for k, q in quad.items())
        + f" (GGN and Fisher ≥ 0: {quad['ggn'] >= 0 and quad['fisher'] >= 0})"
    )
    print(f"1-min load average at start {load0:.2f}, at end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
