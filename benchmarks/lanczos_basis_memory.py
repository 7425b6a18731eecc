"""Bytes held by the Lanczos basis: grown with the steps taken vs allocated for --max-steps.

Runs Lanczos (top-k, float64 basis) on diagonal operators with a clear spectral gap, so that it
converges long before ``--max-steps``, and records the rows of the basis actually allocated
(by spying on ``torch.zeros`` in the module) against the ``max_steps + 1`` rows that the basis
used to take up front. Counts only (no timings), so the numbers do not depend on machine load.

    .venv/bin/python benchmarks/lanczos_basis_memory.py
"""

from __future__ import annotations

import torch

from landscape_cli.hessian import lanczos as lz


class Diag:
    def __init__(self, d: torch.Tensor) -> None:
        self.d, self.n, self.device = d, d.numel(), torch.device("cpu")

    def matmat(self, v: torch.Tensor) -> torch.Tensor:
        return self.d[:, None] * v

    def matvec(self, v: torch.Tensor) -> torch.Tensor:
        return self.d * v


def main() -> None:
    real = torch.zeros
    print(f"{'n':>10} {'k':>3} {'max_steps':>9} {'steps':>5} {'rows':>5} "
          f"{'before (MiB)':>12} {'now (MiB)':>10}")  # fmt: skip
    for n, k, max_steps in [(1_000_000, 5, 100), (1_000_000, 1, 1000), (200_000, 20, 400)]:
        gen = torch.Generator().manual_seed(0)
        top = torch.linspace(100.0, 50.0, k).double()
        d = torch.cat([top, torch.rand(n - k, generator=gen, dtype=torch.float64)])
        rows: list[int] = []

        def spy(*size, _n=n, _rows=rows, **kw):
            out = real(*size, **kw)
            if out.dim() == 2 and out.shape[1] == _n:
                _rows.append(out.shape[0])
            return out

        torch.zeros = spy
        try:
            result, _ = lz.lanczos_run(
                Diag(d),
                k,
                tol=1e-6,
                max_steps=max_steps,
                generator=torch.Generator().manual_seed(0),
            )
        finally:
            torch.zeros = real
        before = (min(max_steps, n) + 1) * n * 8 / 2**20
        now = max(rows) * n * 8 / 2**20
        print(f"{n:>10} {k:>3} {max_steps:>9} {result.steps:>5} {max(rows):>5} "
              f"{before:>12.1f} {now:>10.1f}")  # fmt: skip


if __name__ == "__main__":
    main()
