r"""Flatness audits: several sharpness measures of one checkpoint, side by side.

Raw curvature is not comparable across checkpoints on its own: it moves with the training loss
(a network that fits its data more confidently has larger logits and a different Hessian) and with
the parametrisation (Dinh et al. 2017: rescaling consecutive ReLU layers by α and 1/α changes the
Hessian arbitrarily without changing the function). So an audit reports, for each checkpoint,

- the top Hessian eigenvalues and the trace (± 95 % CI), and the SLQ density's negative mass and
  spread (:mod:`landscape_cli.hessian`);
- the **1-D sharpness**: the largest loss increase within a filter-normalised radius ε along a few
  random directions (Li et al. 2018 directions; :mod:`landscape_cli.scan`);
- the **adaptive worst-case sharpness** of Andriushchenko et al. 2023 ("A Modern Look at the
  Relationship between Sharpness and Generalization", eq. (1), :math:`\ell_2` adaptive):

  .. math::

      S_\rho(w) = \max_{\|\delta \oslash |w|\|_2 \le \rho} L(w+\delta) - L(w),

  approximated by a few steps of projected, normalised gradient ascent on :math:`u=\delta\oslash|w|`
  (the gradient with respect to :math:`u` is :math:`|w|\odot\nabla L`). It is invariant to the
  layer rescalings above, which λmax is not;
- next to them the training loss and the parameter norm, which raw curvature moves with.

``match_loss`` (``--match-loss``) divides each model's logits by a temperature chosen so that all
checkpoints have the same training loss (the largest of theirs; the predictions do not change),
then measures again: differences that survive it are not just a difference in confidence.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from landscape_cli.errors import LandscapeError
from landscape_cli.evaluation import (
    LOSSES,
    Batch,
    evaluation_mode,
    loss_and_accuracy,
    to_device,
)
from landscape_cli.scan.directions import random_direction


class Tempered(nn.Module):
    """``model`` with its outputs divided by a temperature (same predictions, other confidence)."""

    def __init__(self, model: nn.Module, temperature: float) -> None:
        super().__init__()
        self.model = model
        self.temperature = float(temperature)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
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
        t = math.exp(log_t)
        return sum(fn(o / t, y).item() * len(y) for o, y in outs) / total

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
    return float(torch.sqrt(sum((p.detach().double() ** 2).sum() for p in model.parameters())))


@torch.no_grad()
def sharpness_1d(
    model: nn.Module,
    batches: Sequence[Batch],
    *,
    epsilon: float = 0.05,
    directions: int = 4,
    points: int = 5,
    seed: int = 0,
    loss: str = "ce",
) -> float:
    """Largest loss increase at ``a·d`` for ``0 < |a| ≤ epsilon`` on filter-normalised ``d``s."""
    from landscape_cli.scan.grid import PointEvaluator

    base = loss_and_accuracy(model, batches, LOSSES[loss])[0]
    gen = torch.Generator().manual_seed(seed)
    coords = np.linspace(-epsilon, epsilon, 2 * points + 1)
    worst = -math.inf
    for _ in range(directions):
        d = random_direction(model, generator=gen)
        ev = PointEvaluator(model, batches, [d], LOSSES[loss])
        try:
            for a in coords:
                if a != 0:
                    worst = max(worst, ev((float(a),))[0] - base)
        finally:
            ev.restore()
    return worst


def adaptive_sharpness(
    model: nn.Module,
    batches: Sequence[Batch],
    *,
    rho: float = 0.05,
    steps: int = 10,
    seed: int = 0,
    loss: str = "ce",
) -> float:
    """Adaptive ℓ2 worst-case sharpness (see module docstring), by projected gradient ascent.

    Starts from a random point on the sphere ‖u‖ = ρ/2 (seeded), takes ``steps`` normalised
    ascent steps of length 2ρ/steps in u-space, projecting onto ‖u‖ ≤ ρ, and returns the largest
    loss increase seen (never negative: u = 0 gives 0).
    """
    params = [p for p in model.parameters() if p.requires_grad]
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
                for p, b, s, v in zip(params, base, scale, u, strict=True):
                    p.copy_(b + s * v)
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


@dataclass(frozen=True)
class DensityShape:
    negative_mass: float  # quadrature weight on negative Ritz values (fraction of the spectrum)
    spread: float  # weighted standard deviation of the Ritz values


def density_shape(nodes: np.ndarray, weights: np.ndarray) -> DensityShape:
    """Negative mass and spread of an SLQ spectrum, from its raw nodes and weights."""
    w = weights / weights.sum(axis=1, keepdims=True)
    neg = float(np.mean(np.sum(w * (nodes < 0), axis=1)))
    mean = np.sum(w * nodes, axis=1, keepdims=True)
    var = np.mean(np.sum(w * (nodes - mean) ** 2, axis=1))
    return DensityShape(neg, float(math.sqrt(max(var, 0.0))))


@dataclass(frozen=True)
class AuditSettings:
    top_k: int = 5
    trace_probes: int = 50
    trace_rtol: float = 0.02
    density_probes: int = 5
    lanczos_steps: int = 40
    epsilon: float = 0.05
    directions: int = 4
    rho: float = 0.05
    ascent_steps: int = 10
    seed: int = 0
    loss: str = "ce"


def measure(
    model: nn.Module,
    batches: Sequence[Batch],
    settings: AuditSettings,
    *,
    device: torch.device | str = "cpu",
    temperature: float = 1.0,
    density: bool = True,
) -> dict:
    """Every audit measure of ``model`` (its logits divided by ``temperature``) on ``batches``.

    Returns a dict of plain numbers, plus ``"analysis"`` (the Hessian results of
    :func:`landscape_cli.hessian.analyze`) and ``"operator"`` (for writing the results file).
    """
    from landscape_cli.hessian import HessianOperator, HessianSettings, analyze

    net = model if temperature == 1.0 else Tempered(model, temperature)
    s = settings
    op = HessianOperator(net, batches, loss=s.loss, device=device)
    hs = HessianSettings(
        top_k=s.top_k,
        trace_probes=s.trace_probes,
        trace_rtol=s.trace_rtol,
        density_probes=s.density_probes if density else 0,
        lanczos_steps=s.lanczos_steps,
        seed=s.seed,
    )
    results = analyze(op, hs)
    top, tr, dens = results["top"], results["trace"], results["density"]
    # The operator keeps only this rank's shard under torchrun; losses and sharpness need all.
    dev_batches = [to_device(b, op.device, op.dtype) for b in batches]
    loss, acc = loss_and_accuracy(net, dev_batches, LOSSES[s.loss])
    out = {
        "temperature": temperature,
        "lambda_max": float(top.eigenvalues[0]) if top else None,
        "top_eigenvalues": [float(v) for v in top.eigenvalues] if top else [],
        "trace": tr.estimate if tr else None,
        "trace_stderr": tr.stderr if tr else None,
        "trace_ci95": list(tr.ci95) if tr else None,
        "train_loss": loss,
        "train_acc": acc,
        "param_norm": parameter_norm(model),
        "sharpness_1d": sharpness_1d(
            net, dev_batches, epsilon=s.epsilon, directions=s.directions, seed=s.seed, loss=s.loss
        ),
        "adaptive_sharpness": adaptive_sharpness(
            net, dev_batches, rho=s.rho, steps=s.ascent_steps, seed=s.seed, loss=s.loss
        ),
        "hvp_count": op.hvp_count,
    }
    if dens is not None:
        shape = density_shape(dens.nodes, dens.weights)
        out["negative_mass"] = shape.negative_mass
        out["spectral_spread"] = shape.spread
    out["analysis"] = results
    out["operator"] = op
    return out


MEASURES = ("lambda_max", "trace", "sharpness_1d", "adaptive_sharpness")


def ranking(rows: Sequence[dict], by: str) -> list[int]:
    """Indices of ``rows`` from flattest to sharpest by measure ``by`` (missing values last)."""
    if by not in MEASURES:
        raise LandscapeError(f"--rank-by must be one of {', '.join(MEASURES)}")
    return sorted(range(len(rows)), key=lambda i: (rows[i].get(by) is None, rows[i].get(by) or 0))
