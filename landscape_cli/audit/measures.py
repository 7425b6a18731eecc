"""An audit's settings, its measures of one checkpoint and the rows it reports.

:class:`AuditSettings` (what every measure takes), :func:`measure` (every measure of one
checkpoint at one temperature: the Hessian's, reused or computed by
:mod:`landscape_cli.audit.reuse`, then the losses and the two sharpness measures of
:mod:`landscape_cli.audit.sharpness`), what it returns (:class:`Measurement` holding the
:class:`Measures`) and :class:`AuditRow`, one audited checkpoint as ``--json`` prints it and
``/audit`` stores it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields, replace
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from landscape_cli.audit.reuse import _computed_hessian, _set_spreads, _stored_hessian
from landscape_cli.audit.sharpness import (
    NEGATIVE_TAU,
    SHARPNESS_1D_POINTS,
    Tempered,
    adaptive_sharpness_restarts,
    density_shape,
    parameter_norm,
    sharpness_1d_directions,
    spread,
)
from landscape_cli.batches import Batch, to_device
from landscape_cli.hessian import HessianSettings
from landscape_cli.hessian.types import Analysis
from landscape_cli.losses import LOSSES, loss_and_accuracy
from landscape_cli.params import ParamSelection

if TYPE_CHECKING:
    from landscape_cli.results import HessianResult


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


def _sharpness(
    net: nn.Module,
    dev_batches: Sequence[Batch],
    settings: AuditSettings,
    on_phase: Callable[[str, int, str], None] | None,
    on_advance: Callable[[int], None] | None,
) -> tuple[list[float], list[float]]:
    """The 1-D sharpness of each direction and the adaptive sharpness of each restart."""
    phase = on_phase or (lambda name, most, unit: None)
    phase("1-D sharpness", settings.directions * 2 * SHARPNESS_1D_POINTS, "losses")
    one_d = sharpness_1d_directions(
        net,
        dev_batches,
        epsilon=settings.epsilon,
        directions=settings.directions,
        seed=settings.seed,
        loss=settings.loss,
        on_advance=on_advance,
        selection=settings.selection,
    )
    gradients = max(settings.restarts, 1) * (settings.ascent_steps + 1)
    phase("adaptive sharpness", gradients, "gradients (at most)")
    adaptive = adaptive_sharpness_restarts(
        net, dev_batches, rho=settings.rho, steps=settings.ascent_steps, seed=settings.seed,
        loss=settings.loss, restarts=settings.restarts, on_advance=on_advance,
        selection=settings.selection,
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
    if net is not model:  # the same parameters, now named model.<name>
        sel = settings.selection.under("model.")
        settings = replace(settings, params=sel.patterns)
    op, results = None, None
    if stored is None:
        numbers, op, results = _computed_hessian(
            net, batches, settings, density, device, on_phase, on_advance,
            sets=sets if settings.sample_sets > 1 else (), samples_sha256=samples_sha256,
        )  # fmt: skip
    else:
        numbers = _stored_hessian(model, net, stored, settings, density, device)
    # The operator keeps only this rank's shard under torchrun; losses and sharpness need all.
    dev_batches = [to_device(b, numbers.device, numbers.dtype) for b in batches]
    loss, acc = loss_and_accuracy(net, dev_batches, LOSSES[settings.loss])
    one_d, adaptive = _sharpness(net, dev_batches, settings, on_phase, on_advance)
    lambda_max = numbers.eigenvalues[0] if numbers.eigenvalues else None
    shape = (
        density_shape(*numbers.nodes, lambda_max, settings.tau)
        if numbers.nodes is not None
        else None
    )
    lam_spread, trace_spread = _set_spreads(numbers.sets, settings.sample_sets)
    measures = Measures(
        temperature=temperature,
        lambda_max=lambda_max,
        lambda_max_residual=numbers.residual,
        top_eigenvalues=numbers.eigenvalues,
        trace=numbers.trace[0] if numbers.trace else None,
        trace_stderr=numbers.trace[1] if numbers.trace else None,
        trace_ci95=numbers.trace[2] if numbers.trace else None,
        train_loss=loss,
        train_acc=acc,
        param_norm=parameter_norm(model),
        sharpness_1d=max(one_d),
        sharpness_1d_spread=spread(one_d),
        adaptive_sharpness=max(adaptive),
        adaptive_sharpness_spread=spread(adaptive),
        hvp_count=(op.hvp_count if op is not None else 0)
        + (numbers.sets.hvp_count if numbers.sets is not None and stored is None else 0),
        hessian_reused=stored is not None,
        negative_mass=shape.negative_mass if shape is not None else None,
        spectral_spread=shape.spread if shape is not None else None,
        tau=settings.tau if shape is not None else None,
        sample_sets=(
            settings.sample_sets if lam_spread is not None or trace_spread is not None else 1
        ),
        lambda_max_spread=lam_spread,
        trace_spread=trace_spread,
    )
    return Measurement(measures, op, results)
