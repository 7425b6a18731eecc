"""The interface the estimators are typed against: a symmetric linear operator on float64 vectors.

:class:`~landscape_cli.hessian.operator.HessianOperator` is the one the commands use; a dense
matrix with these members (as in the tests) serves as well. Each estimator uses only part of it:
the trace estimators and SLQ ``n``, ``device`` and ``matmat``; Lanczos top-k also ``matvec`` and
``dtype`` (the products' precision, which decides the basis precision; float64 when absent);
per-layer curvature ``blocks``.
"""

from __future__ import annotations

from typing import Protocol

import torch
from torch import Tensor


class SymmetricOperator(Protocol):
    """A symmetric ``n × n`` operator applied to float64 vectors on ``device``."""

    n: int
    device: torch.device
    dtype: torch.dtype  # the precision of the products themselves

    def matvec(self, v: Tensor) -> Tensor:
        """``H @ v`` for a float64 vector of length ``n``."""
        ...

    def matmat(self, vectors: Tensor) -> Tensor:
        """``H @ V`` for a float64 matrix of shape (n, k) (one product per column)."""
        ...


class BlockOperator(SymmetricOperator, Protocol):
    """An operator whose coordinates come in named blocks (one per parameter tensor)."""

    names: tuple[str, ...]

    def blocks(self) -> list[tuple[str, int, int]]:
        """``(name, start, stop)`` of each block's coordinates, in order."""
        ...
