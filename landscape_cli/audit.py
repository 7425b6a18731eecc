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
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields, replace
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from landscape_cli.errors import LandscapeError, check_choice
from landscape_cli.evaluation import (
    LOSSES,
    Batch,
    check_not_constant,
    evaluation_mode,
    loss_and_accuracy,
    to_device,
)
from landscape_cli.hessian.types import Analysis, SampleSets
from landscape_cli.params import ParamSelection, requiring_grad, select_parameters
from landscape_cli.scan.directions import random_direction

if TYPE_CHECKING:
    from landscape_cli.results import HessianResult


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
    from landscape_cli.scan.grid import PointEvaluator

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
    """Adaptive ℓ2 worst-case sharpness (see module docstring), by projected gradient ascent.

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


@dataclass(frozen=True)
class AuditSettings:
    """The settings of an audit's measures (Lanczos, trace, density and sharpness)."""

    top_k: int = 5
    tol: float = 1e-4  # Lanczos: stop when every residual ‖Hv−λv‖ ≤ tol·|λ| (as ``hessian``)
    max_steps: int = 100  # Lanczos: the most steps (HVPs) for the top-k
    trace_probes: int = 50
    trace_rtol: float = 0.02
    density_probes: int = 5  # the cap: SLQ stops once within density_tol
    density_tol: float = 3e-3
    lanczos_steps: int = 40
    epsilon: float = 0.05
    directions: int = 4
    rho: float = 0.05
    ascent_steps: int = 10
    restarts: int = 2
    seed: int = 0
    loss: str = "ce"
    tau: float = NEGATIVE_TAU
    curvature: str = "hessian"  # the matrix of λmax, trace and density: hessian, ggn or fisher
    params: tuple[str, ...] = ()  # shell-style patterns on parameter names (landscape_cli.params)
    include_frozen: bool = False
    sample_sets: int = 1  # λmax and trace also on this many disjoint sample sets (spread)

    @property
    def selection(self) -> ParamSelection:
        """The parameters every measure covers (:mod:`landscape_cli.params`)."""
        return ParamSelection(tuple(self.params), self.include_frozen)

    def hessian(self, density: bool = True):
        """The :class:`~landscape_cli.hessian.HessianSettings` of the audit's Hessian measures."""
        from landscape_cli.hessian import HessianSettings

        return HessianSettings(
            top_k=self.top_k,
            tol=self.tol,
            max_steps=self.max_steps,
            trace_probes=self.trace_probes,
            trace_rtol=self.trace_rtol,
            density_probes=self.density_probes if density else 0,
            density_tol=self.density_tol,
            lanczos_steps=self.lanczos_steps,
            sample_sets=self.sample_sets,
            seed=self.seed,
        )


@dataclass(frozen=True)
class Measures:
    """Every audit measure of one checkpoint (at one temperature), each with its uncertainty.

    ``lambda_max_residual``, ``trace_stderr`` (and ``trace_ci95``), ``sharpness_1d_spread``,
    ``adaptive_sharpness_spread``. The density's ``negative_mass``, ``spectral_spread`` and ``tau``
    are None when no density was measured.
    """

    temperature: float
    lambda_max: float | None
    lambda_max_residual: float | None
    top_eigenvalues: list[float]
    trace: float | None
    trace_stderr: float | None
    trace_ci95: list[float] | None
    train_loss: float
    train_acc: float
    param_norm: float
    sharpness_1d: float
    sharpness_1d_spread: float
    adaptive_sharpness: float
    adaptive_sharpness_spread: float
    hvp_count: int
    hessian_reused: bool
    negative_mass: float | None = None
    spectral_spread: float | None = None
    tau: float | None = None
    sample_sets: int = 1
    lambda_max_spread: float | None = None  # over the sample sets (their sample std)
    trace_spread: float | None = None

    def as_dict(self, keys: Sequence[str] | None = None) -> dict[str, Any]:
        """The measures as plain numbers, by name (``keys`` only, when given).

        The density's three are left out when it was not measured.
        """
        if keys is not None:
            return {k: getattr(self, k) for k in keys}
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        if self.sample_sets == 1:
            for k in ("sample_sets", "lambda_max_spread", "trace_spread"):
                del out[k]
        if self.negative_mass is None:
            for k in ("negative_mass", "spectral_spread", "tau"):
                del out[k]
        return out


@dataclass(frozen=True)
class Measurement:
    """What :func:`measure` returns.

    The measures, and the Hessian operator and results of :func:`landscape_cli.hessian.analyze` when
    it computed them (None when reused).
    """

    measures: Measures
    operator: Any = None
    analysis: Analysis | None = None


#: What a loss-matched measurement reports (``AuditRow.matched``), in this order.
MATCHED_KEYS = (
    "temperature",
    "train_loss",
    "lambda_max",
    "trace",
    "sharpness_1d",
    "adaptive_sharpness",
    "lambda_max_residual",
    "trace_stderr",
    "sharpness_1d_spread",
    "adaptive_sharpness_spread",
)


@dataclass(frozen=True)
class AuditRow:
    """One audited checkpoint.

    Its measures, where its Hessian measures came from (``"hessian"``: reused from ``/hessian``;
    ``"audit/hessian"``: computed by the audit), its results file, and with ``--match-loss`` the
    measures at the common training loss.
    """

    checkpoint: str
    results: str
    measures: Measures
    hessian_source: str
    matched: Measures | None = None

    def as_dict(self) -> dict[str, Any]:
        """The row as ``audit --json`` prints it."""
        out = {"checkpoint": self.checkpoint, **self.measures.as_dict()}
        out["hessian_source"] = self.hessian_source
        out["results"] = self.results
        if self.matched is not None:
            out["matched"] = self.matched.as_dict(MATCHED_KEYS)
        return out

    def stored(self) -> dict[str, Any]:
        """The row as ``/audit`` stores it.

        The measures, ``hessian_source`` and the loss-matched measures as ``matched_<name>``.
        """
        out = {**self.measures.as_dict(), "hessian_source": self.hessian_source}
        if self.matched is not None:
            for k, v in self.matched.as_dict(MATCHED_KEYS).items():
                out[f"matched_{k}"] = v
        return out


@dataclass(frozen=True)
class _HessianNumbers:
    eigenvalues: list[float]
    residual: float | None
    trace: tuple[float, float, list[float]] | None
    nodes: tuple[np.ndarray, np.ndarray] | None
    device: torch.device
    dtype: torch.dtype
    sets: SampleSets | None = None


def _set_spreads(sets: SampleSets | None, k: int) -> tuple[float | None, float | None]:
    """The spreads of λmax and of the trace over the first ``k`` sample sets (None without)."""
    if sets is None or k < 2 or sets.sets < k:
        return None, None
    lam = sets.spread(sets.lambda_max[:k])[1]
    tr = sets.spread(sets.trace[:k])[1]
    return (lam if lam == lam else None), (tr if tr == tr else None)


def _stored_hessian(
    model: nn.Module,
    net: nn.Module,
    stored: HessianResult,
    s: AuditSettings,
    density: bool,
    device: torch.device | str,
) -> _HessianNumbers:
    """The Hessian measures of a ``/hessian`` read back that covers them (its ``covers``)."""
    report = stored.report
    top, tr, d = report.top, report.trace, report.density
    trace = (
        (float(tr.estimate), float(tr.stderr), [float(v) for v in tr.ci95])
        if tr is not None and s.trace_probes
        else None
    )
    run_device = torch.device(device)
    net.to(run_device)
    return _HessianNumbers(
        eigenvalues=[float(v) for v in top.eigenvalues[: s.top_k]],
        residual=float(top.residuals[0]),
        trace=trace,
        nodes=(d.nodes, d.weights) if d is not None and density else None,
        device=run_device,
        dtype=next(model.parameters()).dtype,
        sets=report.sample_sets,
    )


def _computed_hessian(
    net: nn.Module,
    batches: Sequence[Batch],
    s: AuditSettings,
    density: bool,
    device,
    on_phase: Callable[[str, int, str], None] | None,
    on_advance: Callable[[int], None] | None,
    sets: Sequence[tuple[Sequence[Batch], str]] = (),
    samples_sha256: str = "",
) -> tuple[_HessianNumbers, Any, Analysis]:
    """The Hessian measures computed here; also returns the operator and the analysis.

    With ``sets`` (further sample sets: batches and hash), also the top-k and the trace on
    each (:func:`~landscape_cli.hessian.sample_set_spread`), the analysis' ``sample_sets``.
    """
    from landscape_cli.hessian import analyze, curvature_operator, sample_set_spread

    def make(on: Sequence[Batch]):
        op = curvature_operator(
            s.curvature, net, on, loss=s.loss, device=device, params=s.selection
        )
        check_not_constant(op)
        op.on_hvp = on_advance
        return op

    phase = (
        (lambda name, most: on_phase(name, most, "HVPs (at most)"))
        if on_phase is not None
        else None
    )
    op = make(batches)
    results = analyze(op, s.hessian(density), on_phase=phase)
    if sets:
        others = [(sha, lambda b=b: make(b)) for b, sha in sets]
        spread = sample_set_spread(
            results, samples_sha256, others, s.hessian(density), on_phase=phase
        )
        results = replace(results, sample_sets=spread)
    top, tr, dens = results.top, results.trace, results.density
    numbers = _HessianNumbers(
        eigenvalues=[float(v) for v in top.eigenvalues] if top else [],
        residual=float(top.residuals[0]) if top else None,
        trace=(tr.estimate, tr.stderr, list(tr.ci95)) if tr else None,
        nodes=(dens.nodes, dens.weights) if dens is not None else None,
        device=op.device,
        dtype=op.dtype,
        sets=results.sample_sets,
    )
    return numbers, op, results


def _sharpness(
    net: nn.Module,
    dev_batches: Sequence[Batch],
    s: AuditSettings,
    on_phase: Callable[[str, int, str], None] | None,
    on_advance: Callable[[int], None] | None,
) -> tuple[list[float], list[float]]:
    """The 1-D sharpness of each direction and the adaptive sharpness of each restart."""
    phase = on_phase or (lambda name, most, unit: None)
    phase("1-D sharpness", s.directions * 2 * SHARPNESS_1D_POINTS, "losses")
    one_d = sharpness_1d_directions(
        net,
        dev_batches,
        epsilon=s.epsilon,
        directions=s.directions,
        seed=s.seed,
        loss=s.loss,
        on_advance=on_advance,
        selection=s.selection,
    )
    phase("adaptive sharpness", max(s.restarts, 1) * (s.ascent_steps + 1), "gradients (at most)")
    adaptive = adaptive_sharpness_restarts(
        net, dev_batches, rho=s.rho, steps=s.ascent_steps, seed=s.seed, loss=s.loss,
        restarts=s.restarts, on_advance=on_advance, selection=s.selection,
    )  # fmt: skip
    return one_d, adaptive


def measure(
    model: nn.Module,
    batches: Sequence[Batch],
    settings: AuditSettings,
    *,
    device: torch.device | str = "cpu",
    temperature: float = 1.0,
    density: bool = True,
    stored: HessianResult | None = None,
    on_phase: Callable[[str, int, str], None] | None = None,
    on_advance: Callable[[int], None] | None = None,
    sets: Sequence[tuple[Sequence[Batch], str]] = (),
    samples_sha256: str = "",
) -> Measurement:
    """Every audit measure of ``model`` (its logits divided by ``temperature``) on ``batches``.

    With ``stored`` (a ``/hessian`` read back that covers them, ``HessianResult.covers``), the
    Hessian measures are taken from it instead of being computed. Returns the :class:`Measures`,
    with the operator and the results of :func:`landscape_cli.hessian.analyze` when computed. With
    ``settings.sample_sets`` > 1, λmax and the trace are also measured on ``sets`` (the further
    sample sets: batches and hash; ``samples_sha256`` is ``batches``'), or read from ``stored``, and
    their spreads over the sets join their uncertainties.

    Progress goes to ``on_phase(name, most work, unit)`` before each phase (the Hessian's, then
    the two sharpness measures) and ``on_advance(k)`` as work is done in it.
    """
    net = model if temperature == 1.0 else Tempered(model, temperature)
    s = settings
    if net is not model:  # the same parameters, now named model.<name>
        sel = s.selection.under("model.")
        s = replace(s, params=sel.patterns)
    op, results = None, None
    if stored is None:
        h, op, results = _computed_hessian(
            net, batches, s, density, device, on_phase, on_advance,
            sets=sets if s.sample_sets > 1 else (), samples_sha256=samples_sha256,
        )  # fmt: skip
    else:
        h = _stored_hessian(model, net, stored, s, density, device)
    # The operator keeps only this rank's shard under torchrun; losses and sharpness need all.
    dev_batches = [to_device(b, h.device, h.dtype) for b in batches]
    loss, acc = loss_and_accuracy(net, dev_batches, LOSSES[s.loss])
    one_d, adaptive = _sharpness(net, dev_batches, s, on_phase, on_advance)
    lambda_max = h.eigenvalues[0] if h.eigenvalues else None
    shape = density_shape(*h.nodes, lambda_max, s.tau) if h.nodes is not None else None
    lam_spread, trace_spread = _set_spreads(h.sets, s.sample_sets)
    measures = Measures(
        temperature=temperature,
        lambda_max=lambda_max,
        lambda_max_residual=h.residual,
        top_eigenvalues=h.eigenvalues,
        trace=h.trace[0] if h.trace else None,
        trace_stderr=h.trace[1] if h.trace else None,
        trace_ci95=h.trace[2] if h.trace else None,
        train_loss=loss,
        train_acc=acc,
        param_norm=parameter_norm(model),
        sharpness_1d=max(one_d),
        sharpness_1d_spread=spread(one_d),
        adaptive_sharpness=max(adaptive),
        adaptive_sharpness_spread=spread(adaptive),
        hvp_count=(op.hvp_count if op is not None else 0)
        + (h.sets.hvp_count if h.sets is not None and stored is None else 0),
        hessian_reused=stored is not None,
        negative_mass=shape.negative_mass if shape is not None else None,
        spectral_spread=shape.spread if shape is not None else None,
        tau=s.tau if shape is not None else None,
        sample_sets=s.sample_sets if lam_spread is not None or trace_spread is not None else 1,
        lambda_max_spread=lam_spread,
        trace_spread=trace_spread,
    )
    return Measurement(measures, op, results)


MEASURES = ("lambda_max", "trace", "sharpness_1d", "adaptive_sharpness")


def _plus(value: float | None, spread: float | None) -> float | None:
    """``value`` plus a sample-set ``spread`` when there is one."""
    if value is None:
        return spread
    return value + (spread if spread is not None and math.isfinite(spread) else 0.0)


def _trace_halfwidth(m: Measures) -> float | None:
    """The half-width of the trace's 95 % CI (1.96 standard errors when no CI is recorded)."""
    if m.trace_ci95:
        return (m.trace_ci95[1] - m.trace_ci95[0]) / 2
    return 1.96 * m.trace_stderr if m.trace_stderr is not None else None


#: The uncertainty of each measure: λmax its Lanczos residual ‖Hv − θv‖ (|λ − θ| ≤ it for a
#: symmetric H), the trace the half-width of its 95 % CI, each sharpness the spread of its
#: directions or restarts; with ``sample_sets`` > 1, λmax and the trace add their spread over
#: the sample sets (how far they move with other samples).
UNCERTAINTY: dict[str, Callable[[Measures], float | None]] = {
    "lambda_max": lambda m: _plus(m.lambda_max_residual, m.lambda_max_spread),
    "trace": lambda m: _plus(_trace_halfwidth(m), m.trace_spread),
    "sharpness_1d": lambda m: m.sharpness_1d_spread,
    "adaptive_sharpness": lambda m: m.adaptive_sharpness_spread,
}

#: The fields :data:`UNCERTAINTY` reads.
UNCERTAINTY_FIELDS = (
    "lambda_max_residual",
    "lambda_max_spread",
    "trace_ci95",
    "trace_stderr",
    "trace_spread",
    "sharpness_1d_spread",
    "adaptive_sharpness_spread",
)


def uncertainty(m: Measures, by: str) -> float:
    """The finite, non-negative uncertainty of measure ``by`` in ``m`` (0 when unknown)."""
    u = UNCERTAINTY[by](m)
    return 0.0 if u is None or not math.isfinite(u) else float(abs(u))


def tied(a: Measures, b: Measures, by: str) -> bool:
    """Whether two checkpoints' ``by`` values lie within their uncertainties of each other."""
    va, vb = getattr(a, by), getattr(b, by)
    if va is None or vb is None:
        return False
    return abs(va - vb) <= uncertainty(a, by) + uncertainty(b, by)


def ranking(rows: Sequence[Measures], by: str) -> list[int]:
    """Indices of ``rows`` from flattest to sharpest by measure ``by`` (missing values last)."""
    check_choice("rank_by", by, MEASURES, one_of=True)
    values = [getattr(m, by) for m in rows]
    return sorted(range(len(rows)), key=lambda i: (values[i] is None, values[i] or 0))


def ranks(rows: Sequence[Measures], by: str) -> tuple[list[int], list[int], list[bool]]:
    """The order of :func:`ranking`, each row's rank (1 = flattest) and whether it is tied.

    Rows whose values differ by less than their uncertainties (:func:`tied`) share a rank: a
    chain of ties, in sorted order, forms one group whose rank is that of its first member.
    """
    order = ranking(rows, by)
    rank = [0] * len(rows)
    is_tied = [False] * len(rows)
    for pos, i in enumerate(order):
        if pos > 0 and tied(rows[order[pos - 1]], rows[i], by):
            rank[i] = rank[order[pos - 1]]
            is_tied[i] = is_tied[order[pos - 1]] = True
        else:
            rank[i] = pos + 1
    return order, rank, is_tied


def disagreements(rows: Sequence[Measures], labels: Sequence[str]) -> list[str]:
    """Pairs of checkpoints that two measures order oppositely beyond their uncertainties.

    Pairs of checkpoints that two measures put in opposite orders, each order beyond the
    measures' uncertainties (one line per pair and pair of measures).
    """
    notes = []
    for i in range(len(rows)):
        for j in range(i + 1, len(rows)):
            says: dict[str, int] = {}
            for by in MEASURES:
                a, b = getattr(rows[i], by), getattr(rows[j], by)
                if a is None or b is None or tied(rows[i], rows[j], by):
                    continue
                says[by] = -1 if a < b else 1
            flatter_i = [m for m, v in says.items() if v < 0]
            flatter_j = [m for m, v in says.items() if v > 0]
            if flatter_i and flatter_j:
                notes.append(
                    f"{', '.join(flatter_i)} put {labels[i]} flatter than {labels[j]}; "
                    f"{', '.join(flatter_j)} the other way"
                )
    return notes
