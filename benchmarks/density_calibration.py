"""Does the density's self-estimated W1 error bound its actual error? A calibration on exact
Hessians.

Usage: python benchmarks/density_calibration.py [--seeds 40] [--quick]

For each case, the exact float64 Hessian of a small network (built by n Hessian-vector products
and checked symmetric) and its eigenvalues; then, for each seed, the density exactly as
`landscape hessian` computes it by default (`analyze` with the default settings: block top-5
continued into the first probes, adaptive SLQ at `--density-tol 1e-3`, at most 10 probes of 90
steps), on the dense matrix. The actual error is the Wasserstein-1 distance between the SLQ
estimate (the mean of its probes' quadrature measures) and the exact spectral measure (1/n at
each eigenvalue), relative to the exact spectral range; the estimate is the density's
`achieved_tol`. Prints, per case and over all runs, how often the estimate bounds the actual
error, and the quantiles of actual / estimate. Writes nothing.

Cases: a digits MLP (CE, eval), a BatchNorm CNN in eval and in train mode (CE), an MSE
regression MLP, and a synthetic spectrum with a few outliers and a bulk (the shape of trained
network Hessians), at sizes above the 90 Lanczos steps so that the quadrature's own error counts.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from landscape_cli.batches import Batch
from landscape_cli.hessian import HessianOperator, HessianSettings, analyze
from landscape_cli.hessian.density import wasserstein1


@dataclass
class Dense:
    """A dense symmetric matrix as an operator (float64 products)."""

    H: torch.Tensor

    @property
    def n(self) -> int:
        return self.H.shape[0]

    device = torch.device("cpu")
    dtype = torch.float64

    def matmat(self, V: torch.Tensor) -> torch.Tensor:
        return self.H @ V

    def matvec(self, v: torch.Tensor) -> torch.Tensor:
        return self.H @ v


def digits(n: int, seed: int = 0):
    from sklearn.datasets import load_digits

    d = load_digits()
    g = np.random.default_rng(seed)
    idx = g.choice(len(d.target), n, replace=False)
    x = torch.tensor(d.images[idx] / 16.0, dtype=torch.float64)[:, None]
    return x, torch.tensor(d.target[idx])


def trained(model: nn.Module, x, y, loss, steps: int = 200) -> nn.Module:
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.train()
    for _ in range(steps):
        opt.zero_grad()
        loss(model(x), y).backward()
        opt.step()
    return model


def exact(model: nn.Module, x, y, loss: str, bn_mode: str) -> torch.Tensor:
    op = HessianOperator(model, [Batch(x, y)], loss=loss, bn_mode=bn_mode, dtype=torch.float64)
    H = op.dense()
    assert torch.allclose(H, H.T, atol=1e-8 * H.abs().max())
    return (H + H.T) / 2


def cases(quick: bool) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    x, y = digits(128)
    out = {}
    mlp = nn.Sequential(nn.Flatten(), nn.Linear(64, 24), nn.Tanh(), nn.Linear(24, 10)).double()
    ce = nn.functional.cross_entropy
    out["digits MLP, CE, eval"] = exact(trained(mlp, x, y, ce), x, y, "ce", "eval")
    cnn = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4), nn.ReLU(),
        nn.Conv2d(4, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
        nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(32, 10),
    ).double()  # fmt: skip
    cnn = trained(cnn, x, y, ce)
    out["BN CNN, CE, eval"] = exact(cnn, x, y, "ce", "eval")
    out["BN CNN, CE, train-mode BN"] = exact(cnn, x, y, "ce", "train")
    g = torch.Generator().manual_seed(1)
    xr = torch.randn(128, 8, generator=g, dtype=torch.float64)
    yr = torch.sin(xr @ torch.randn(8, 3, generator=g, dtype=torch.float64))
    reg = nn.Sequential(nn.Linear(8, 48), nn.Tanh(), nn.Linear(48, 3)).double()
    reg = trained(reg, xr, yr, nn.functional.mse_loss)
    out["regression MLP, MSE"] = exact(reg, xr, yr, "mse", "eval")
    n = 600 if quick else 1500
    d = torch.cat([torch.tensor([50.0, 30.0, 20.0, 12.0, 8.0]), torch.randn(n - 5) * 0.5])
    Q, _ = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=torch.float64))
    out[f"synthetic outliers + bulk (n={n})"] = Q @ torch.diag(d.double()) @ Q.T
    return out


def run(H: torch.Tensor, seeds: int, tol: float) -> list[tuple[float, float, int]]:
    lam = np.linalg.eigvalsh(H.numpy())
    span = float(lam[-1] - lam[0])
    truth_n, truth_w = lam[None], np.full((1, len(lam)), 1.0 / len(lam))
    op = Dense(H)
    rows = []
    for seed in range(seeds):
        s = HessianSettings(trace_probes=0, seed=seed, density_tol=tol)
        d = analyze(op, s).density
        actual = wasserstein1(d.nodes, d.weights, truth_n, truth_w) / span
        rows.append((actual, float(d.achieved_tol), int(d.probes)))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=40)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--tol", type=float, default=HessianSettings().density_tol)
    args = ap.parse_args()
    t0 = time.perf_counter()
    print(f"--density-tol {args.tol}")
    everything = []
    print(f"{'case':<36} {'n':>5} {'runs':>4} {'bounded':>8} {'probes':>7} "
          f"{'actual/estimate: median':>24} {'95 %':>6} {'max':>6}")  # fmt: skip
    for name, H in cases(args.quick).items():
        rows = run(H, args.seeds, args.tol)
        everything += rows
        ratio = np.array([a / e for a, e, _ in rows])
        probes = np.mean([p for *_, p in rows])
        print(
            f"{name:<36} {H.shape[0]:>5} {len(rows):>4} {np.mean(ratio <= 1):>8.0%} "
            f"{probes:>7.1f} {np.median(ratio):>24.2f} {np.quantile(ratio, 0.95):>6.2f} "
            f"{ratio.max():>6.2f}"
        )
    ratio = np.array([a / e for a, e, _ in everything])
    print(
        f"{'all':<36} {'':>5} {len(ratio):>4} {np.mean(ratio <= 1):>8.0%} {'':>7} "
        f"{np.median(ratio):>24.2f} {np.quantile(ratio, 0.95):>6.2f} {ratio.max():>6.2f}"
    )
    print(f"{time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
