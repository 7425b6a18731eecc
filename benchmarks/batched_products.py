"""Batched Hessian-vector products: ``matmat`` with b columns against b single products (issue 26).

Usage: python benchmarks/batched_products.py [--device cpu|cuda] [--repeats 5] [--quick]

For each model and each graph mode (first-order graphs kept between products, or rebuilt per
product), it times, as medians of interleaved repeats:

* the gradient of the mean loss (forward + backward over every batch), the unit of cost;
* one Hessian-vector product (``op.matvec``);
* ``op.matmat`` with b = 4, 8 and 16 columns, per column;
* the same b columns as one vectorised second backward (``torch.autograd.grad`` with
  ``is_grads_batched=True`` over the kept first-order graph), per column: what a ``matmat``
  that batched the columns inside autograd, rather than looping over them, would cost.

Each row gives the cost per product in gradients and the speed-up of the batched form over b
single products (> 1: batching pays). The estimators' block of probes per product is
:func:`landscape_cli.hessian.trace.default_block` (documented in that module); these numbers are
what it was decided from.

Models: the reference digits CNN (the registry's ``cnn``, 1,024 of the embedded digits) and a CIFAR
ResNet-18 (width 8 on the CPU, 64 on CUDA; CIFAR-shaped samples of a fixed 10-class Gaussian
mixture, so nothing is downloaded), batches of 128, float32 products, eval mode. ``--quick`` is a
smoke test (fewer samples and repeats). The functions are reused by ``benchmarks/gpu_check.py``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from landscape_cli.batches import Batch

BLOCKS = (4, 8, 16)


@dataclass(frozen=True)
class Problem:
    """A model and its batches, ready to build operators from."""

    name: str
    model: torch.nn.Module
    batches: list[Batch]

    @property
    def params(self) -> int:
        return sum(p.numel() for p in self.model.parameters())


def digits_problem(samples: int = 1024, batch_size: int = 128, seed: int = 0) -> Problem:
    """The registry's digits CNN (seeded init) on ``samples`` of the embedded digits."""
    from landscape_cli.batches import make_batches
    from landscape_cli.data import load_dataset
    from landscape_cli.models import build_model

    data = load_dataset("digits", "train").dataset
    torch.manual_seed(seed)
    model = build_model("cnn", input_shape=(1, 8, 8), num_classes=10).eval()
    return Problem("digits CNN", model, make_batches(data, samples, batch_size, seed=seed))


def cifar_images(samples: int, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """CIFAR-shaped float32 images of a fixed 10-class Gaussian mixture, and their labels."""
    gen = torch.Generator().manual_seed(seed)
    means = torch.randn(10, 3, 32, 32, generator=gen)
    y = torch.arange(samples) % 10
    x = means[y] + torch.randn(samples, 3, 32, 32, generator=gen)
    return x, y


def resnet_problem(
    width: int = 8, samples: int = 256, batch_size: int = 128, seed: int = 0
) -> Problem:
    """A CIFAR ResNet-18 of ``width`` (seeded init, eval mode) on ``samples`` mixture images."""
    from landscape_cli.models import build_model

    x, y = cifar_images(samples)
    torch.manual_seed(seed)
    model = build_model("resnet18", input_shape=(3, 32, 32), num_classes=10, width=width).eval()
    batches = [
        Batch(x[i : i + batch_size], y[i : i + batch_size]) for i in range(0, samples, batch_size)
    ]
    return Problem(f"CIFAR ResNet-18 width {width}", model, batches)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(f: Callable[[], object], device: torch.device) -> float:
    sync(device)
    t0 = time.perf_counter()
    f()
    sync(device)
    return time.perf_counter() - t0


def _vectorised(op, device: torch.device) -> Callable[[torch.Tensor], object] | None:
    """b columns through one vectorised second backward per batch (kept graphs), or None."""
    if not op.cache_graphs:
        return None
    params = op.params
    with torch.enable_grad():  # through the operator's own parameter leaves (its _loss)
        graphs = [torch.autograd.grad(op._loss(b), params, create_graph=True) for b in op.batches]

    def run(V: torch.Tensor) -> object:
        cols = V.T.to(op.dtype)
        parts = [
            c.reshape(V.shape[1], *s)
            for c, s in zip(torch.split(cols, op.sizes, 1), op.shapes, strict=True)
        ]
        out = None
        for g, w in zip(graphs, op.weights, strict=True):
            hv = torch.autograd.grad(
                g, params, grad_outputs=parts, retain_graph=True, is_grads_batched=True
            )
            flat = torch.cat([h.reshape(V.shape[1], -1) for h in hv], 1).double() * w
            out = flat if out is None else out + flat
        return out

    return run


def measure(
    problem: Problem,
    device: torch.device,
    *,
    cache_graphs: bool,
    repeats: int,
    blocks: tuple[int, ...] = BLOCKS,
    vectorised: bool = True,
) -> dict[str, float | str]:
    """Median seconds of the gradient, one HVP, and per-column matmat (and vectorised) costs."""
    from landscape_cli.hessian import HessianOperator
    from landscape_cli.precision import float32_precision

    with float32_precision(allow_tf32=False):
        op = HessianOperator(
            problem.model, problem.batches, device=device, cache_graphs=cache_graphs
        )
        params = op.params
        gen = torch.Generator().manual_seed(3)
        V = {b: torch.randn(op.n, b, generator=gen, dtype=torch.float64).to(device) for b in blocks}
        v = V[blocks[0]][:, 0].contiguous()

        def gradient() -> None:  # through the operator's own parameter leaves
            for b in op.batches:
                with torch.enable_grad():
                    torch.autograd.grad(op._loss(b), params)

        funcs: dict[str, Callable[[], object]] = {
            "gradient": gradient,
            "hvp": lambda: op.matvec(v),
        }
        for b in blocks:
            funcs[f"matmat{b}"] = lambda b=b: op.matmat(V[b])
        notes = {}
        vec = None
        if vectorised:
            try:
                vec = _vectorised(op, device)
                if vec is not None:
                    ref = op.matmat(V[blocks[0]])
                    got = vec(V[blocks[0]]).T.double()
                    err = float((got - ref).norm() / ref.norm())
                    notes["vmap_check"] = f"{err:.1e}"
                    for b in blocks:
                        funcs[f"vmap{b}"] = lambda b=b: vec(V[b])
            except Exception as exc:  # a missing batching rule: reported, not fatal
                notes["vmap_error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:80]}"
                vec = None
        for f in list(funcs.values()):
            try:
                f()  # warm-up (cuDNN autotuning, allocator)
            except Exception as exc:
                key = next(k for k, g in funcs.items() if g is f)
                notes[f"{key}_error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:80]}"
                del funcs[key]
        times: dict[str, list[float]] = {k: [] for k in funcs}
        for _ in range(repeats):
            for k, f in funcs.items():
                times[k].append(timed(f, device))
    out: dict[str, float | str] = {k: statistics.median(t) for k, t in times.items()}
    out.update(notes)
    out["cached"] = "kept" if op.cache_graphs else "rebuilt"
    return out


def rows(problem: Problem, result: dict, blocks: tuple[int, ...] = BLOCKS) -> list[list[str]]:
    """Table rows: cost per product in gradients, and speed-up over b single products."""
    g, h = result["gradient"], result["hvp"]
    out = [[problem.name, result["cached"], "1 (matvec)", f"{h * 1e3:.1f}", f"{h / g:.2f}", "1.00"]]
    for kind in ("matmat", "vmap"):
        for b in blocks:
            key = f"{kind}{b}"
            if key not in result:
                continue
            t = result[key]
            label = f"{b} ({'matmat' if kind == 'matmat' else 'vectorised'})"
            out.append(
                [
                    problem.name,
                    result["cached"],
                    label,
                    f"{t / b * 1e3:.1f}",
                    f"{t / b / g:.2f}",
                    f"{b * h / t:.2f}",
                ]
            )
    return out


HEADER = ["model", "graphs", "columns", "ms/column", "x gradient", "speed-up vs singles"]


def format_table(header: list[str], body: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in [header, *body]) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(header, widths, strict=True))]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in body]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    device = torch.device(args.device)
    t0 = time.perf_counter()
    width = 64 if device.type == "cuda" else 8
    samples = (256, 64) if args.quick else (1024, 256)
    problems = [digits_problem(samples[0]), resnet_problem(width, samples[1])]
    repeats = 2 if args.quick else args.repeats
    load = os.getloadavg()[0]
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, {device}, float32 "
        f"products (TF32 off), median of {repeats} interleaved repeats"
    )
    body = []
    notes = []
    for problem in problems:
        for cache in (True, False):
            r = measure(problem, device, cache_graphs=cache, repeats=repeats)
            body += rows(problem, r)
            for k, val in r.items():
                if k.endswith("_error") or k == "vmap_check":
                    notes.append(f"{problem.name}, graphs {r['cached']}: {k} {val}")
        print(f"  {problem.name}: {problem.params:,} parameters, done", file=sys.stderr)
    print(format_table(HEADER, body))
    for n in notes:
        print(n)
    print(
        f"total {time.perf_counter() - t0:.0f} s; 1-min load average at start {load:.2f}, "
        f"at end {os.getloadavg()[0]:.2f}"
    )


if __name__ == "__main__":
    main()
