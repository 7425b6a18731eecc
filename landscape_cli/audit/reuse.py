"""The Hessian measures of an audit: read back from a ``/hessian`` that covers them, or computed.

An audit reuses the stored top-k, trace and density of a checkpoint's ``/hessian`` group when that
group covers the audit's settings (``HessianResult.covers``, decided by the caller); otherwise
:func:`_computed_hessian` runs :func:`landscape_cli.hessian.analyze` itself. Either way the numbers
come back as one :class:`_HessianNumbers`, with the device and dtype the losses and the sharpness
are then measured on.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from landscape_cli.batches import Batch
from landscape_cli.hessian import analyze, curvature_operator, sample_set_spread
from landscape_cli.hessian.types import Analysis, SampleSets
from landscape_cli.losses import check_not_constant

if TYPE_CHECKING:
    from landscape_cli.audit.measures import AuditSettings
    from landscape_cli.results import HessianResult


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
    settings: AuditSettings,
    density: bool,
    device: torch.device | str,
) -> _HessianNumbers:
    """The Hessian measures of a ``/hessian`` read back that covers them (its ``covers``)."""
    report = stored.report
    top, tr, d = report.top, report.trace, report.density
    trace = (
        (float(tr.estimate), float(tr.stderr), [float(v) for v in tr.ci95])
        if tr is not None and settings.trace_probes
        else None
    )
    run_device = torch.device(device)
    net.to(run_device)
    return _HessianNumbers(
        eigenvalues=[float(v) for v in top.eigenvalues[: settings.top_k]],
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
    settings: AuditSettings,
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

    def make(on: Sequence[Batch]):
        op = curvature_operator(
            settings.curvature,
            net,
            on,
            loss=settings.loss,
            device=device,
            params=settings.selection,
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
    results = analyze(op, settings.hessian(density), on_phase=phase)
    if sets:
        others = [(sha, lambda b=b: make(b)) for b, sha in sets]
        spread = sample_set_spread(
            results, samples_sha256, others, settings.hessian(density), on_phase=phase
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
