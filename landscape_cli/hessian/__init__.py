"""Hessian spectra of a network's loss: operator, Lanczos top-k, trace, density, per-layer.

The pieces are pure functions over a symmetric operator
(:class:`~landscape_cli.hessian.protocol.SymmetricOperator`: ``n``, ``device``, ``matvec``,
``matmat``; :class:`~landscape_cli.hessian.operator.HessianOperator` is the Hessian's), each
taking its random stream as an explicit :class:`torch.Generator`; :func:`analyze` runs the
ones ``landscape hessian`` asks for. Every random choice follows from one seed, split into a
separate stream per estimator. Where one estimator can use another's products exactly, it does
(the density's first probe continues the top-k Lanczos run, whose longer Krylov basis then
deflates the trace: see :func:`analyze`), so turning the top-k or the density off changes the
density's or the trace's numbers (never what they estimate); the streams themselves stay apart.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields, replace
from typing import Any

import numpy as np
import torch

from landscape_cli.batches import Batch, make_batches
from landscape_cli.hessian.curvature import (
    CURVATURES,
    EmpiricalFisherOperator,
    GGNOperator,
    curvature_operator,
)
from landscape_cli.hessian.density import extend_krylov, slq_density
from landscape_cli.hessian.lanczos import lanczos_run, lanczos_top, ritz_vectors
from landscape_cli.hessian.operator import CurvatureOperator, HessianOperator
from landscape_cli.hessian.per_layer import per_layer_curvature
from landscape_cli.hessian.protocol import BlockOperator, SymmetricOperator
from landscape_cli.hessian.trace import deflated_trace, hutchinson_trace, hutchpp_trace
from landscape_cli.hessian.types import (
    Analysis,
    DensityResult,
    HessianReport,
    LanczosResult,
    LayerCurvature,
    SampleSets,
    TraceResult,
)

__all__ = [
    "CURVATURES",
    "Analysis",
    "Batch",
    "BlockOperator",
    "Collector",
    "CurvatureOperator",
    "DensityResult",
    "EmpiricalFisherOperator",
    "GGNOperator",
    "HessianOperator",
    "HessianReport",
    "HessianSettings",
    "LanczosResult",
    "LayerCurvature",
    "SampleSets",
    "SymmetricOperator",
    "TraceResult",
    "analyze",
    "curvature_operator",
    "deflated_trace",
    "hutchinson_trace",
    "hutchpp_trace",
    "lanczos_run",
    "lanczos_top",
    "make_batches",
    "make_report",
    "per_layer_curvature",
    "sample_set_spread",
    "slq_density",
    "stream",
]

TRACE_METHODS = ("auto", "hutchinson", "hutch++", "deflated")
_STREAMS = {"top": 1, "trace": 2, "density": 3, "per_layer": 4}


def stream(seed: int, name: str) -> torch.Generator:
    """The random stream of one estimator, derived from the run's seed (modulo 2**64)."""
    return torch.Generator().manual_seed((seed * 7919 + _STREAMS[name]) % 2**64)


@dataclass(frozen=True)
class HessianSettings:
    """What to estimate and how hard (the options of ``landscape hessian``)."""

    top_k: int = 5
    tol: float = 1e-4
    max_steps: int = 100
    block_size: int = 0  # block Lanczos width to start from (0: by top_k; 1: single-vector)
    trace_probes: int = 100
    trace_rtol: float = 1e-2
    trace_method: str = "auto"
    density_probes: int = 10  # the most SLQ probes
    density_tol: float = 3e-3  # W1 error bound / spectral range to stop at (0: all probes)
    lanczos_steps: int = 90
    density_sigma: float = 0.005
    per_layer: bool = False
    per_layer_steps: int = 20
    per_layer_probes: int = 20
    eigenvectors: bool = False
    sample_sets: int = 1  # top-k and trace on this many disjoint sample sets (1: the run's own)
    seed: int = 0


def _density(op: HessianOperator, s: HessianSettings, first, phase) -> DensityResult:
    """The density's phase: SLQ, its first probe continued from the top-k run when given."""
    rest = s.density_probes - (first.nodes.shape[0] if first is not None else 0)
    phase("density (SLQ)", rest * min(s.lanczos_steps, op.n))
    return slq_density(
        op,
        probes=s.density_probes,
        steps=s.lanczos_steps,
        generator=stream(s.seed, "density"),
        sigma_rel=s.density_sigma,
        tol=s.density_tol,
        first=first,
    )


def analyze(
    op: HessianOperator,
    settings: HessianSettings,
    *,
    on_result: Callable[[str, Any], None] | None = None,
    on_phase: Callable[[str, int], None] | None = None,
) -> Analysis:
    """Run the estimators of ``settings`` on ``op``; returns their results as an :class:`Analysis`.

    The trace in ``auto`` mode uses the top-k Lanczos basis (Krylov-deflated Hutchinson, or plain
    Hutchinson on the same probes when its sample variance is smaller); with ``--top-k 0`` it is
    plain Hutchinson. With a density to compute, the top-k (block) run is first continued to
    ``lanczos_steps`` block steps (:func:`~landscape_cli.hessian.density.extend_krylov`): the
    columns of its start block are the density's first probes, and its basis (when it fits in
    memory) deflates the trace instead of the top-k run's; then the trace, then the density's
    other probes (as many as ``density_tol`` needs, at most ``density_probes`` in all).
    ``on_result(name, value)`` gets each estimator's result as it finishes (``name`` a field of
    :class:`Analysis`), so that a caller interrupted half-way still holds what was computed
    (:class:`Collector`). ``on_phase(name, max_hvps)`` is called before each phase starts.

    Args:
        op: The Hessian operator of the model, loss and samples.
        settings: What to estimate and how hard; each estimator draws from its own random
            stream derived from ``settings.seed`` (:func:`stream`).
        on_result: Called as ``on_result(name, value)`` when an estimator finishes.
        on_phase: Called as ``on_phase(name, max_hvps)`` before each phase starts.

    Returns:
        The :class:`Analysis`: ``top``, ``trace``, ``density`` (None when not asked for) and
        ``per_layer`` (empty when not asked for).
    """
    s = settings
    record = on_result or (lambda name, value: None)
    phase = on_phase or (lambda name, budget: None)
    top, basis = _top_phase(op, s, phase)
    if top is not None:
        record("top", top)
    first = None
    if basis is not None and s.density_probes >= basis.sizes[0]:
        width = basis.sizes[0]
        label = "density (SLQ), probe 1" if width == 1 else f"density (SLQ), probes 1-{width}"
        phase(label, max(0, min(s.lanczos_steps * width, op.n) - basis.Q.shape[0]))
        first = extend_krylov(op, basis, s.lanczos_steps)
        if first is not None and first.basis is not None:
            basis = first.basis
    trace = density = None
    per_layer: tuple[LayerCurvature, ...] = ()
    if s.trace_probes > 0:
        phase("trace", s.trace_probes)
        trace = _trace(op, s, basis)
        record("trace", trace)
    if s.density_probes > 0:
        density = _density(op, s, first, phase)
        record("density", density)
    if s.per_layer:
        phase("per-layer", s.per_layer_steps * len(op.blocks()) + s.per_layer_probes)
        layers, _ = per_layer_curvature(
            op,
            steps=s.per_layer_steps,
            probes=s.per_layer_probes,
            generator=stream(s.seed, "per_layer"),
        )
        per_layer = tuple(layers)
        record("per_layer", per_layer)
    return Analysis(top=top, trace=trace, density=density, per_layer=per_layer)


class Collector:
    """What an analysis has computed so far, held by its caller.

    Pass :meth:`record` as ``on_result`` of :func:`analyze` (or of the PyHessian engine) and
    add what the caller computes itself (``sample_sets``); :meth:`freeze` is the
    :class:`Analysis` of what arrived, also after a Ctrl-C cut the run short.
    """

    def __init__(self) -> None:
        self._fields: dict[str, Any] = {}

    def record(self, name: str, value: Any) -> None:
        """Keep ``value`` as the :class:`Analysis` field ``name``."""
        if name not in _ANALYSIS_FIELDS:
            raise ValueError(f"{name!r} is not a field of Analysis")
        self._fields[name] = value

    def freeze(self) -> Analysis:
        """The :class:`Analysis` of what was recorded (the other fields at their defaults)."""
        return Analysis(**self._fields)


_ANALYSIS_FIELDS = frozenset(f.name for f in fields(Analysis))


def _top_phase(
    op: HessianOperator, s: HessianSettings, phase: Callable[[str, int], None]
) -> tuple[LanczosResult | None, Any]:
    """Run top-k Lanczos when the top-k or a deflated trace needs it.

    Returns the top-k result (``None`` with ``top_k == 0``) and the Krylov basis (``None`` when
    not run).
    """
    need_basis = s.trace_probes > 0 and s.trace_method in ("auto", "deflated")
    if not (s.top_k > 0 or (need_basis and s.trace_method == "deflated")):
        return None, None
    phase("top-k Lanczos", min(s.max_steps, op.n))
    top, basis = lanczos_run(
        op,
        max(s.top_k, 1),
        tol=s.tol,
        max_steps=s.max_steps,
        generator=stream(s.seed, "top"),
        block_size=s.block_size,
    )
    if s.eigenvectors:
        top = replace(top, eigenvectors=ritz_vectors(basis))
    return (top if s.top_k > 0 else None), basis


def _trace(op: HessianOperator, s: HessianSettings, basis):
    """The trace estimate of ``s.trace_method`` (deflated by ``basis`` when there is one)."""
    gen = stream(s.seed, "trace")
    kw = {"probes": s.trace_probes, "generator": gen}
    if s.trace_method == "hutch++":
        return hutchpp_trace(op, **kw)
    if basis is not None and s.trace_method in ("auto", "deflated"):
        adaptive = s.trace_method == "auto"
        return deflated_trace(op, basis, rtol=s.trace_rtol, adaptive=adaptive, **kw)
    return hutchinson_trace(op, rtol=s.trace_rtol, **kw)


def sample_set_spread(
    first: Analysis,
    first_sha256: str,
    others: Sequence[tuple[str, Callable[[], SymmetricOperator]]],
    settings: HessianSettings,
    *,
    on_phase: Callable[[str, int], None] | None = None,
) -> SampleSets:
    """The top-k and the trace on each further sample set, beside the run's own.

    ``first`` is :func:`analyze`'s results on the run's own samples (set 0, hash
    ``first_sha256``); ``others`` gives, per further set, its hash and a callable that builds its
    operator (one at a time, so only one further set's graphs are held). Each further set runs
    :func:`analyze` with the same ``settings`` and therefore the same random streams, without
    the density, per-layer blocks or eigenvectors: the differences between the sets are then
    the samples' (common random numbers), not the probes'. ``on_phase`` gets each set's phases,
    prefixed ``set i/K``.
    """
    each = replace(settings, density_probes=0, per_layer=False, eigenvectors=False, sample_sets=1)
    K = 1 + len(others)
    rows = [(first_sha256, first.top, first.trace)]
    spent = 0
    for i, (sha, make) in enumerate(others, 2):
        op = make()

        def phase(name: str, budget: int, i: int = i) -> None:
            if on_phase is not None:
                on_phase(f"set {i}/{K}: {name}", budget)

        before = op.hvp_count
        done = analyze(op, each, on_phase=phase)
        spent += op.hvp_count - before
        rows.append((sha, done.top, done.trace))
        del op
    k = len(rows[0][1].eigenvalues) if rows[0][1] is not None else 0
    return SampleSets(
        samples_sha256=tuple(sha for sha, _, _ in rows),
        eigenvalues=np.array(
            [top.eigenvalues[:k] if top is not None else [] for _, top, _ in rows], dtype=float
        ).reshape(K, k),
        trace=np.array([tr.estimate if tr else np.nan for _, _, tr in rows], dtype=float),
        trace_stderr=np.array([tr.stderr if tr else np.nan for _, _, tr in rows], dtype=float),
        hvp_count=spent,
    )


def make_report(
    op: HessianOperator,
    results: Analysis,
    settings: HessianSettings,
    *,
    samples: int,
    batch_size: int,
    split: str,
    loss: str,
    seconds: float,
) -> HessianReport:
    """Bundle ``analyze``'s results with the facts of the run (for the results file).

    Args:
        op: The operator the results were computed on (device, dtype, products, parameters).
        results: What :func:`analyze` returned (with ``sample_sets`` when measured).
        settings: The settings it ran with.
        samples: The number of samples the loss was taken over.
        batch_size: Their batch size.
        split: The dataset split they came from.
        loss: The loss's name.
        seconds: The wall time of the analysis.
    """
    return HessianReport(
        top=results.top,
        trace=results.trace,
        density=results.density,
        per_layer=tuple(results.per_layer),
        samples=samples,
        batch_size=batch_size,
        seed=settings.seed,
        device=str(op.device),
        dtype=str(op.dtype).removeprefix("torch."),
        loss=loss,
        split=split,
        bn_mode=op.bn_mode,
        hvp_count=op.hvp_count,
        seconds=seconds,
        num_params=op.n,
        skipped_params=op.skipped,
        param_names=op.names,
        param_shapes=op.shapes,
        loss_value=op.loss_value,
        grad_norm=float(op.grad_norm),
        sample_sets=results.sample_sets,
        curvature=getattr(op, "curvature", "hessian"),
        skipped_reasons=tuple(getattr(op, "skipped_reasons", ())),
    )
