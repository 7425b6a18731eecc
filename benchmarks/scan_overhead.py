"""Cost of one scan grid point relative to a pure forward pass over the same samples.

Usage: python benchmarks/scan_overhead.py [--repeats 15] [--samples 1024] [--threads 2]

For each model (the small digits CNN, and a CIFAR-shaped ResNet-18 of reduced width), on the same
fixed batches, in one run with interleaved repeats (median seconds):

- forward:   a pure forward pass over the batches in eval mode (the floor);
- landscape: one grid point as `landscape scan` computes it (in-place foreach copy + add of the
             direction from the base weights, then loss and accuracy over the batches);
- reference: the reference code's approach (tomgoldstein/loss-landscape style): deep-copy the
             model, write base + a·d into its parameters with Python loops, then evaluate.

The ratios to `forward` are what matters; the target is landscape ≤ 1.05.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch

from landscape_cli.batches import Batch
from landscape_cli.losses import LOSSES, loss_and_accuracy
from landscape_cli.models import build_model
from landscape_cli.scan.directions import random_direction
from landscape_cli.scan.grid import PointEvaluator


def batches_for(shape, samples: int, batch_size: int, classes: int = 10) -> list[Batch]:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(samples, *shape, generator=g)
    y = torch.randint(0, classes, (samples,), generator=g)
    return [
        Batch(x[i : i + batch_size], y[i : i + batch_size]) for i in range(0, samples, batch_size)
    ]


@torch.no_grad()
def forward_only(model, batches) -> None:
    model.eval()
    for b in batches:
        model(b.inputs)


def reference_point(model, direction, a: float, batches) -> tuple[float, float]:
    net = copy.deepcopy(model)
    with torch.no_grad():
        pairs = zip(net.named_parameters(), model.named_parameters(), strict=True)
        for (name, p), (_, p0) in pairs:
            p.copy_(p0 + a * direction[name])
    return loss_and_accuracy(net, batches, LOSSES["ce"])


def measure(name: str, model, batches, repeats: int) -> None:
    direction = random_direction(model, generator=torch.Generator().manual_seed(0))
    ours = PointEvaluator(model, batches, [direction], LOSSES["ce"])
    cases = {
        "forward": lambda: forward_only(model, batches),
        "landscape": lambda: ours((0.37,)),
        "reference": lambda: reference_point(model, direction, 0.37, batches),
    }
    for fn in cases.values():  # warm-up
        fn()
    times: dict[str, list[float]] = {k: [] for k in cases}
    for _ in range(repeats):
        for key, fn in cases.items():
            t0 = time.perf_counter()
            fn()
            times[key].append(time.perf_counter() - t0)
    ours.restore()
    base = statistics.median(times["forward"])
    params = sum(p.numel() for p in model.parameters())
    samples = sum(len(b) for b in batches)
    print(f"\n{name}: {params:,} parameters, {samples} samples")
    print(f"{'per point':<12} {'median ms':>10} {'/ forward':>10}")
    for key, ts in times.items():
        med = statistics.median(ts)
        print(f"{key:<12} {med * 1e3:>10.2f} {med / base:>10.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--samples", type=int, default=1024)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU, float32")
    torch.manual_seed(0)
    cnn = build_model("cnn", input_shape=(1, 8, 8), num_classes=10)
    measure(
        "cnn on 8x8 digits-shaped input",
        cnn,
        batches_for((1, 8, 8), args.samples, 256),
        args.repeats,
    )
    torch.manual_seed(0)
    resnet = build_model("resnet18", input_shape=(3, 32, 32), num_classes=10, width=16)
    measure(
        "resnet18 (width 16) on 32x32 CIFAR-shaped input",
        resnet,
        batches_for((3, 32, 32), args.samples // 4, 128),
        max(3, args.repeats // 3),
    )


if __name__ == "__main__":
    main()
