r"""The sharpness measures of an audit, and the shape of an SLQ density.

- :class:`Tempered` and :func:`temperature_for_loss`: a model's logits divided by a temperature,
  and the temperature that gives it a chosen training loss (``--match-loss``);
- :func:`parameter_norm`;
- the **1-D sharpness** (:func:`sharpness_1d`, :func:`sharpness_1d_directions`): the largest loss
  increase within a filter-normalised radius ε along a few random directions;
- the **adaptive worst-case sharpness** (:func:`adaptive_sharpness`,
  :func:`adaptive_sharpness_restarts`) of Andriushchenko et al. 2023, eq. (1), :math:`\ell_2`
  adaptive (see :mod:`landscape_cli.audit`);
- :func:`spread`, the uncertainty of a largest-of-several sharpness;
- :func:`density_shape` (:class:`DensityShape`): an SLQ spectrum's negative mass and spread.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from landscape_cli.batches import Batch, evaluation_mode
from landscape_cli.errors import LandscapeError
from landscape_cli.losses import LOSSES, loss_and_accuracy
from landscape_cli.params import ParamSelection, requiring_grad, select_parameters
from landscape_cli.scan.directions import random_direction
from landscape_cli.scan.grid import PointEvaluator


class Tempered(nn.Module):
    """``model`` with its outputs divided by a temperature (same predictions, other confidence).

    Args:
        model: the network.
        temperature: what its outputs are divided by.
    """

    def __init__(self, model: nn.Module, temperature: float) -> None:
        super().__init__()
        self.model = model
        self.temperature = float(temperature)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The wrapped model's output divided by the temperature."""
        return self.model(x) / self.temperature


def temperature_for_loss(
    model: nn.Module, batches: Sequence[Batch], target: float, loss: str = "ce"
) -> float:
    """The temperature T with mean loss of ``model(x) / T`` equal to ``target`` ≥ the loss at T=1.

    As a function of log T the cross-entropy is unimodal (convex in 1/T), so from T = 1 it rises
    monotonically in one direction: towards log(classes) as T grows for a confident model, or
    towards +∞ as T shrinks for an under-confident one with errors. Bisection on that side finds
    T; a target out of reach raises :class:`LandscapeError`.
    """
    with torch.no_grad(), evaluation_mode(model):
        outs = [(model(b.inputs), b.targets) for b in batches]
    total = sum(len(b) for b in batches)
    fn = LOSSES[loss]

    def loss_at(log_t: float) -> float:
        temperature = math.exp(log_t)
        return sum(fn(o / temperature, y).item() * len(y) for o, y in outs) / total

    f0 = loss_at(0.0)
    if abs(f0 - target) <= 1e-12 * max(1.0, abs(target)):
        return 1.0
    if target < f0:
        raise LandscapeError(
            f"cannot lower the training loss {f0:.4g} to {target:.4g} by a temperature"
        )
    side = 1.0 if loss_at(1e-4) > loss_at(-1e-4) else -1.0
    lo, hi = 0.0, 12.0 * side
    f_end = loss_at(hi)
    if not f_end >= target:
        raise LandscapeError(
            f"cannot reach training loss {target:.4g} by temperature (at most {f_end:.4g})"
        )
    for _ in range(100):
        mid = 0.5 * (lo + hi)
        if loss_at(mid) < target:
            lo = mid
        else:
            hi = mid
    return math.exp(0.5 * (lo + hi))


def parameter_norm(model: nn.Module) -> float:
    """The Euclidean norm of all of ``model``'s parameters."""
    return float(torch.sqrt(sum((p.detach().double() ** 2).sum() for p in model.parameters())))


#: Radii per side at which the 1-D sharpness evaluates the loss along each direction.
SHARPNESS_1D_POINTS = 5


@torch.no_grad()
def sharpness_1d_directions(
    model: nn.Module,
    batches: Sequence[Batch],
    *,
    epsilon: float = 0.05,
    directions: int = 4,
    points: int = SHARPNESS_1D_POINTS,
    seed: int = 0,
    loss: str = "ce",
    on_advance: Callable[[int], None] | None = None,
    selection: ParamSelection | None = None,
) -> list[float]:
    """Largest loss increase along each of several filter-normalised random directions.

    For each of ``directions`` filter-normalised random ``d``s (over the parameters of
    ``selection``, default the trainable ones), the largest loss increase at ``a·d`` for
    ``0 < |a| ≤ epsilon`` (``2·points`` loss evaluations per direction, each reported to
    ``on_advance(1)``).
    """
    base = loss_and_accuracy(model, batches, LOSSES[loss])[0]
    gen = torch.Generator().manual_seed(seed)
    coords = np.linspace(-epsilon, epsilon, 2 * points + 1)
    out = []
    for _ in range(directions):
        d = random_direction(model, generator=gen, selection=selection)
        ev = PointEvaluator(model, batches, [d], LOSSES[loss])
        worst = -math.inf
        try:
            for a in coords:
                if a != 0:
                    worst = max(worst, ev((float(a),))[0] - base)
                    if on_advance is not None:
                        on_advance(1)
        finally:
            ev.restore()
        out.append(worst)
    return out


def sharpness_1d(model: nn.Module, batches: Sequence[Batch], **kwargs) -> float:
    """Largest loss increase at ``a·d`` over filter-normalised random directions.

    Largest loss increase at ``a·d`` for ``0 < |a| ≤ epsilon`` on filter-normalised ``d``s
    (the largest of :func:`sharpness_1d_directions`).
    """
    return max(sharpness_1d_directions(model, batches, **kwargs))


def spread(values: Sequence[float]) -> float:
    """Sample standard deviation (0 for fewer than two values).

    The uncertainty of a sharpness that is the largest of several random directions or restarts.
    """
    return float(np.std(values, ddof=1)) if len(values) > 1 else 0.0


def adaptive_sharpness_restarts(
    model: nn.Module,
    batches: Sequence[Batch],
    *,
    rho: float = 0.05,
    steps: int = 10,
    seed: int = 0,
    loss: str = "ce",
    restarts: int = 2,
    on_advance: Callable[[int], None] | None = None,
    selection: ParamSelection | None = None,
) -> list[float]:
    """Adaptive sharpness, the largest over several random restarts, with its spread.

    :func:`adaptive_sharpness` from ``restarts`` random starts (the first one seeded by
    ``seed`` itself): the audit reports the largest, and their spread as its uncertainty.
    """
    return [
        adaptive_sharpness(
            model, batches, rho=rho, steps=steps, seed=seed + 104_729 * r, loss=loss,
            on_advance=on_advance, selection=selection,
        )
        for r in range(max(restarts, 1))
    ]  # fmt: skip


def adaptive_sharpness(
    model: nn.Module,
    batches: Sequence[Batch],
    *,
    rho: float = 0.05,
    steps: int = 10,
    seed: int = 0,
    loss: str = "ce",
    on_advance: Callable[[int], None] | None = None,
    selection: ParamSelection | None = None,
) -> float:
    """Adaptive ℓ2 worst-case sharpness (:mod:`landscape_cli.audit`), by projected gradient ascent.

    Starts from a random point on the sphere ‖u‖ = ρ/2 (seeded), takes ``steps`` normalised
    ascent steps of length 2ρ/steps in u-space, projecting onto ‖u‖ ≤ ρ, and returns the largest
    loss increase seen (never negative: u = 0 gives 0). Each of the at most ``steps + 1``
    gradient evaluations is reported to ``on_advance(1)``. δ moves the parameters of
    ``selection`` (default: the trainable ones).
    """
    params = list(select_parameters(model, selection).tensors)
    with requiring_grad(params):
        return _adaptive_ascent(model, batches, params, rho, steps, seed, loss, on_advance)


def _adaptive_ascent(model, batches, params, rho, steps, seed, loss, on_advance) -> float:
    """:func:`adaptive_sharpness`'s ascent on ``params`` (which require grad here)."""
    base = [p.detach().clone() for p in params]
    scale = [b.abs() for b in base]
    fn = LOSSES[loss]
    total = sum(len(b) for b in batches)
    gen = torch.Generator().manual_seed(seed)
    u = [torch.randn(p.shape, generator=gen, dtype=torch.float64).to(p) for p in params]
    norm = math.sqrt(sum(float((v.double() ** 2).sum()) for v in u))
    u = [v * (rho / 2 / norm) for v in u]
    L0 = loss_and_accuracy(model, batches, fn)[0]
    best = 0.0
    try:
        for _ in range(steps + 1):
            with torch.no_grad():
                for param, start, size, offset in zip(params, base, scale, u, strict=True):
                    param.copy_(start + size * offset)
            grads = [torch.zeros_like(p) for p in params]
            value = 0.0
            with evaluation_mode(model):
                for b in batches:
                    out = fn(model(b.inputs), b.targets) * (len(b) / total)
                    gs = torch.autograd.grad(out, params, allow_unused=True)
                    value += out.item()
                    for acc, g in zip(grads, gs, strict=True):
                        if g is not None:
                            acc.add_(g)
            best = max(best, value - L0)
            if on_advance is not None:
                on_advance(1)
            gu = [s * g for s, g in zip(scale, grads, strict=True)]  # ∂L/∂u
            gnorm = math.sqrt(sum(float((g.double() ** 2).sum()) for g in gu))
            if gnorm == 0:
                break
            step = 2 * rho / max(steps, 1)
            u = [v + step * g / gnorm for v, g in zip(u, gu, strict=True)]
            unorm = math.sqrt(sum(float((v.double() ** 2).sum()) for v in u))
            if unorm > rho:
                u = [v * (rho / unorm) for v in u]
    finally:
        with torch.no_grad():
            for p, b in zip(params, base, strict=True):
                p.copy_(b)
    return best


#: Default τ of the negative mass: eigenvalues below −τ·λmax count as negative.
NEGATIVE_TAU = 1e-2


@dataclass(frozen=True)
class DensityShape:
    """Shape measures of an SLQ density: negative mass below −τ·λmax and spread."""

    negative_mass: float  # SLQ weight below −τ·λmax (fraction of the spectrum)
    spread: float  # weighted standard deviation of the Ritz values
    tau: float = NEGATIVE_TAU
    scale: float = 0.0  # the λmax the threshold is relative to


def density_shape(
    nodes: np.ndarray,
    weights: np.ndarray,
    lambda_max: float | None = None,
    tau: float = NEGATIVE_TAU,
) -> DensityShape:
    r"""Negative mass and spread of an SLQ spectrum, from its raw nodes and weights.

    The negative mass is the share of the spectrum clearly below zero, relative to the
    spectrum's scale: :math:`\frac1P\sum_p \sum_j w_{pj}\,[\theta_{pj} < -\tau\lambda_{max}]`
    over the Ritz values θ and normalised weights w of the P probes. Counting every θ < 0 would
    measure the sign of the near-zero Ritz values, which a trained network's spectrum is full
    of (its bulk sits at 0 to within the Lanczos resolution). ``lambda_max`` defaults to the
    largest Ritz value.
    """
    w = weights / weights.sum(axis=1, keepdims=True)
    scale = float(np.max(nodes)) if lambda_max is None else float(lambda_max)
    threshold = -tau * max(scale, 0.0)
    neg = float(np.mean(np.sum(w * (nodes < threshold), axis=1)))
    mean = np.sum(w * nodes, axis=1, keepdims=True)
    var = np.mean(np.sum(w * (nodes - mean) ** 2, axis=1))
    return DensityShape(neg, float(math.sqrt(max(var, 0.0))), tau, scale)
