"""Step time of DualAdam (α > 0 and α = 0) against torch.optim.Adam(foreach=True), same run.

Usage: python benchmarks/optimizer_step.py [--params 10_000_000] [--repeats 30] [--device cpu]

The parameters are a ResNet-like mix of tensor sizes totalling ~10 M elements, with fixed random
gradients. Each optimizer is warmed up, then the three are timed in interleaved rounds (so drift in
machine load hits all of them alike) and the median step time is reported with its ratio to Adam.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from dualadam import DualAdam


def make_params(total: int, device: str, seed: int = 0) -> list[torch.nn.Parameter]:
    gen = torch.Generator().manual_seed(seed)
    shapes = []
    count = 0
    sizes = [
        (64, 64, 3, 3),
        (128, 128, 3, 3),
        (256, 256, 3, 3),
        (512, 512, 3, 3),
        (512,),
        (10, 512),
    ]
    i = 0
    while count < total:
        shape = sizes[i % len(sizes)]
        n = 1
        for s in shape:
            n *= s
        if count + n > total:
            shape, n = (total - count,), total - count
        shapes.append(shape)
        count += n
        i += 1
    params = []
    for shape in shapes:
        p = torch.nn.Parameter(torch.randn(shape, generator=gen).to(device))
        p.grad = (torch.randn(shape, generator=gen) * 1e-2).to(device)
        params.append(p)
    return params


def timed_step(opt: torch.optim.Optimizer, device: str) -> float:
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    opt.step()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", type=int, default=10_000_000)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

    optimizers = {
        "torch.optim.Adam(foreach=True)": torch.optim.Adam(
            make_params(args.params, args.device), lr=1e-3, foreach=True
        ),
        # ξ tiny: α stays > 0 for the whole run (InvAdam term computed every step).
        "DualAdam(foreach=True), α > 0": DualAdam(
            make_params(args.params, args.device), lr=1e-3, switch_rate=1e-9, foreach=True
        ),
        # ξ ≥ 1: α = 0 from the first step (pure Adam path).
        "DualAdam(foreach=True), α = 0": DualAdam(
            make_params(args.params, args.device), lr=1e-3, switch_rate=1.0, foreach=True
        ),
        "torch.optim.Adam(foreach=False)": torch.optim.Adam(
            make_params(args.params, args.device), lr=1e-3, foreach=False
        ),
        "DualAdam(for-loop), α > 0": DualAdam(
            make_params(args.params, args.device), lr=1e-3, switch_rate=1e-9, foreach=False
        ),
        "DualAdam(for-loop), α = 0": DualAdam(
            make_params(args.params, args.device), lr=1e-3, switch_rate=1.0, foreach=False
        ),
    }
    for opt in optimizers.values():
        for _ in range(3):
            opt.step()
    times: dict[str, list[float]] = {name: [] for name in optimizers}
    for _ in range(args.repeats):
        for name, opt in optimizers.items():
            times[name].append(timed_step(opt, args.device))

    base = statistics.median(times["torch.optim.Adam(foreach=True)"])
    print(
        f"{args.params:,} parameters, {args.repeats} interleaved repeats, device {args.device}, "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads"
    )
    print(f"{'optimizer':<34} {'median ms':>10} {'ratio':>7}")
    for name, ts in times.items():
        med = statistics.median(ts)
        print(f"{name:<34} {med * 1e3:>10.2f} {med / base:>7.3f}")


if __name__ == "__main__":
    main()
