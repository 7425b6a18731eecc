r"""PyHessian's estimators, run as published, for ``landscape hessian --engine pyhessian``.

Papers report PyHessian's numbers (Yao, Gholami, Keutzer & Mahoney 2020), so this engine calls
the installed ``pyhessian`` package itself, with its defaults, on the same model, loss and
batches that :class:`~landscape_cli.hessian.operator.HessianOperator` uses:

- **top-k eigenvalues**: ``hessian.eigenvalues(top_n=k)`` (``maxIter=100``, ``tol=1e-3``):
  power iteration on each eigenvalue in turn, deflated by re-orthogonalising the iterate
  against the eigenvectors already found; the iteration for one eigenvalue stops when the
  Rayleigh quotient :math:`\lambda_i = v_i^\top H v_i` changes by less than ``tol`` relative to
  the previous one, :math:`|\lambda_i-\lambda_{i-1}| / (|\lambda_{i-1}| + 10^{-6}) < 10^{-3}`,
  or after ``maxIter`` products. Power iteration converges to the eigenvalue of largest
  *magnitude* at the rate :math:`|\lambda_2/\lambda_1|` per step, so the values are in the
  order PyHessian found them, not sorted.
- **trace**: ``hessian.trace()`` (``maxIter=100``, ``tol=1e-3``): Hutchinson with Rademacher
  probes :math:`z`, :math:`\operatorname{tr}H \approx \frac1m\sum_j z_j^\top H z_j`, stopped
  when the running mean changes by less than ``tol`` relative to the previous one.

One batch is passed as ``data=(inputs, targets)`` (PyHessian keeps its first-order graph), more
as ``dataloader=[(inputs, targets), ...]`` (the mean of the per-batch products weighted by batch
size: the same mean loss as the operator's). The random vectors come from torch's global
generator, as in PyHessian's own scripts: it is seeded with ``torch.manual_seed(seed)`` once
before ``eigenvalues`` and ``trace`` run in that order, inside :func:`torch.random.fork_rng` so
the caller's random state is left as it was. Calling PyHessian directly the same way gives
the same numbers.

PyHessian's ``density()`` calls ``torch.eig``, removed in torch 2, so the density (and the
per-layer estimates, which PyHessian does not have) are landscape's: see
``landscape_cli.jobs.hessian_job``. Counting: every Hessian-vector product PyHessian makes
is counted (by wrapping its product functions while it runs), and the eigenvalue at which each
power iteration stopped is recorded so its stopping rule can be reported exactly.
"""

from __future__ import annotations

import contextlib
import copy
import math
import sys
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from landscape_cli.batches import Batch, evaluation_mode
from landscape_cli.errors import LandscapeError
from landscape_cli.hessian import analyze
from landscape_cli.hessian.trace import summarize
from landscape_cli.hessian.types import Analysis, LanczosResult, TraceResult
from landscape_cli.losses import LossFn

#: PyHessian's defaults for ``eigenvalues()`` and ``trace()``.
MAX_ITER = 100
TOL = 1e-3


@dataclass(frozen=True)
class PyHessianResult:
    r"""What PyHessian computed, with what it cost.

    ``eigenvalues`` in the order found; ``iterations[i]`` power-iteration steps (HVPs) spent on
    eigenvalue ``i`` and ``stopped[i]`` whether its tolerance rule stopped it before
    ``MAX_ITER``; ``eigenvectors`` (k, n) float32 in the operator's parameter order (None when
    no eigenvalues were asked for); ``trace_samples`` the per-probe :math:`z^\top Hz` (None when
    no trace was asked for) and ``trace_stopped`` whether its rule stopped it before
    ``MAX_ITER`` probes; ``hvp_count`` all products PyHessian made.
    """

    eigenvalues: tuple[float, ...]
    iterations: tuple[int, ...]
    stopped: tuple[bool, ...]
    eigenvectors: np.ndarray | None = field(repr=False)
    trace_samples: np.ndarray | None
    trace_stopped: bool
    hvp_count: int


def _stops(values: Sequence[float], tol: float) -> bool:
    """Whether PyHessian's power-iteration rule stopped on the last of ``values``."""
    if len(values) < 2:
        return False
    prev, last = values[-2], values[-1]
    return abs(prev - last) / (abs(prev) + 1e-6) < tol


def _trace_stops(samples: Sequence[float], tol: float) -> bool:
    """Whether PyHessian's trace rule stopped on the last of ``samples``.

    Whether PyHessian's trace rule stopped on the last of ``samples`` (its running mean
    against the previous one, divided by the previous one plus 1e-6, as it does).
    """
    if not samples:
        return False
    prev = float(np.mean(samples[:-1])) if len(samples) > 1 else 0.0
    return abs(float(np.mean(samples)) - prev) / (prev + 1e-6) < tol


def pyhessian_estimates(
    model: nn.Module,
    batches: Sequence[Batch],
    loss_fn: LossFn,
    *,
    top_k: int,
    trace: bool,
    seed: int,
    device: torch.device | str = "cpu",
    skip: Sequence[str] = (),
    on_phase: Callable[[str, int], None] | None = None,
    on_hvp: Callable[[int], None] | None = None,
    on_eigen: Callable[[PyHessianResult], None] | None = None,
) -> PyHessianResult:
    """Run PyHessian's top eigenvalues and trace on a copy of ``model``.

    Run PyHessian's ``eigenvalues(top_n=top_k)`` (when ``top_k`` > 0) and ``trace()`` (when
    ``trace``) on a copy of ``model`` in eval mode, seeded with ``torch.manual_seed(seed)``.

    ``skip`` names parameters that receive no gradient (the operator's ``skipped``): they are
    frozen on the copy, as PyHessian cannot differentiate with respect to them.
    ``on_eigen(result)`` receives the eigenvalues as soon as they are found, before the trace
    (for a caller interrupted half-way); ``on_hvp(1)`` is called after each product.
    """
    # lazy: only the pyhessian engine needs pyhessian
    from pyhessian import hessian as pyhessian_cls

    # the module, not the class that pyhessian/__init__.py binds to the same name
    ph = sys.modules[pyhessian_cls.__module__]

    device = torch.device(device)
    net, params = _frozen_copy(model, device, skip)
    data = [(b.inputs, b.targets) for b in batches]
    if not data:
        raise LandscapeError("no samples to compute the Hessian on")
    phase = on_phase or (lambda name, budget: None)
    counter = _Counter(ph, top_k, on_hvp)
    cuda = device.type == "cuda"
    ph.hessian_vector_product, ph.orthnormal = counter.hvp, counter.orth
    try:
        with (
            torch.random.fork_rng(devices=[device] if cuda else []),
            torch.cuda.device(device) if cuda else contextlib.nullcontext(),
            evaluation_mode(net, "eval"),
            warnings.catch_warnings(),
        ):
            # PyHessian's loss.backward(create_graph=True): torch warns of the reference cycle
            # that the .grad fields cleared below break.
            warnings.filterwarnings("ignore", message=".*create_graph=True.*")
            torch.manual_seed(seed)
            one = {"data": data[0]} if len(data) == 1 else {"dataloader": data}
            comp = pyhessian_cls(net, loss_fn, cuda=cuda, **one)
            counter.wrap(comp)
            values, vectors, samples = _estimate(comp, counter, top_k, trace, phase, on_eigen)
    finally:
        ph.hessian_vector_product, ph.orthnormal = counter.original_hvp, counter.original_orth
        for p in params:
            p.grad = None
    return _result(values, vectors, counter.rayleigh, samples, counter.count)


def _frozen_copy(model: nn.Module, device: torch.device, skip: Sequence[str]):
    """A float32 copy of ``model`` on ``device`` for PyHessian, with its trainable parameters.

    A float32 copy of ``model`` on ``device`` with the ``skip`` parameters frozen and no
    gradients; returns it and its trainable parameters.
    """
    net = copy.deepcopy(model).to(device=device, dtype=torch.float32)
    for name, p in net.named_parameters():
        if name in set(skip):
            p.requires_grad_(False)
        p.grad = None
    params = [p for p in net.parameters() if p.requires_grad]
    return net, params


class _Counter:
    """PyHessian's products, counted (and reported to ``on_hvp``).

    Inside ``eigenvalues()`` (while ``recording``) each step's Rayleigh quotient is recorded for the
    eigenvalue being computed (``which``: how many eigenvectors it orthogonalises to).
    """

    def __init__(self, ph, top_k: int, on_hvp: Callable[[int], None] | None) -> None:
        self.ph = ph
        self.on_hvp = on_hvp
        self.count = 0
        self.recording = False
        self.which = 0
        self.rayleigh: list[list[float]] = [[] for _ in range(max(top_k, 0))]
        self.original_hvp, self.original_orth = ph.hessian_vector_product, ph.orthnormal

    def counted(self, value: Callable[[], float]) -> None:
        """Count one product; record its quotient ``value()`` when recording."""
        self.count += 1
        if self.recording:
            self.rayleigh[self.which].append(value())
        if self.on_hvp is not None:
            self.on_hvp(1)

    def hvp(self, grads, ps, v):
        """One batch: PyHessian's product on its kept graph."""
        result = self.original_hvp(grads, ps, v)
        self.counted(lambda: self.ph.group_product(result, v).cpu().item())  # as eigenvalues()
        return result

    def orth(self, w, v_list):
        """Called once per power-iteration step, before its product."""
        self.which = len(v_list)
        return self.original_orth(w, v_list)

    def wrap(self, comp) -> None:
        """Count ``comp``'s products over several batches (one product over all of them)."""
        many = comp.dataloader_hv_product

        def dataloader_hvp(v):
            result = many(v)
            self.counted(lambda: result[0])  # the quotient it returns with the product
            return result

        comp.dataloader_hv_product = dataloader_hvp


def _estimate(comp, counter: _Counter, top_k: int, trace: bool, phase, on_eigen):
    """PyHessian's top-k eigenpairs and trace samples on ``comp``.

    Returns ``(values, vectors, samples)`` (empty/``None`` for what was not asked).
    """
    values: tuple[float, ...] = ()
    vectors = samples = None
    if top_k > 0:
        phase("top-k (PyHessian)", top_k * MAX_ITER)
        counter.recording = True
        found, vecs = comp.eigenvalues(maxIter=MAX_ITER, tol=TOL, top_n=top_k)
        counter.recording = False
        values = tuple(float(x) for x in found)
        vectors = np.stack([_flat(v) for v in vecs])
        if on_eigen is not None:
            on_eigen(_result(values, vectors, counter.rayleigh, None, counter.count))
    if trace:
        phase("trace (PyHessian)", MAX_ITER)
        samples = np.asarray(comp.trace(maxIter=MAX_ITER, tol=TOL), dtype=np.float64)
    return values, vectors, samples


def _result(
    values: tuple[float, ...],
    vectors: np.ndarray | None,
    rayleigh: list[list[float]],
    samples: np.ndarray | None,
    hvp_count: int,
) -> PyHessianResult:
    found = bool(values)
    return PyHessianResult(
        eigenvalues=values,
        iterations=tuple(len(r) for r in rayleigh) if found else (),
        stopped=tuple(_stops(r, TOL) for r in rayleigh) if found else (),
        eigenvectors=vectors,
        trace_samples=samples,
        trace_stopped=samples is not None and _trace_stops(list(samples), TOL),
        hvp_count=hvp_count,
    )


def _flat(vector: Sequence[Tensor]) -> np.ndarray:
    """One of PyHessian's eigenvectors (a list of per-parameter tensors) as a flat float32."""
    return torch.cat([t.detach().reshape(-1) for t in vector]).float().cpu().numpy()


def top_result(op, result: PyHessianResult, *, keep_vectors: bool) -> LanczosResult:
    r"""PyHessian's eigenvalues as a :class:`LanczosResult`, in the order found.

    ``residuals[i]`` is :math:`\|Hv_i-\lambda_iv_i\|` for PyHessian's unit eigenvector
    :math:`v_i`, measured by ``op`` (one product per eigenvalue, counted on ``op``), so its
    value can be judged beside a certified Lanczos one; ``converged[i]`` applies landscape's
    rule to it (``residual ≤ tol·|λ|`` with PyHessian's ``tol``, ``TOL``), not PyHessian's own
    (a relative change of the Rayleigh quotient below ``TOL``, which stops at residuals of
    several percent: :func:`analyze_pyhessian` keeps that one as ``pyhessian_stopped``).
    There is no Krylov space, so ``lambda_min`` is NaN.
    """
    lam = np.asarray(result.eigenvalues, dtype=np.float64)
    vecs = torch.as_tensor(np.asarray(result.eigenvectors), dtype=torch.float64)
    vecs = vecs / vecs.norm(dim=1, keepdim=True).clamp_min(1e-300)
    hv = op.matmat(vecs.T.contiguous().to(op.device)).cpu()  # (n, k)
    residuals = (hv - vecs.T * torch.as_tensor(lam)).norm(dim=0).numpy()
    steps = int(sum(result.iterations))
    residuals = np.asarray(residuals, dtype=np.float64)
    return LanczosResult(
        eigenvalues=lam,
        residuals=residuals,
        converged=residuals <= TOL * np.abs(lam),
        lambda_min=math.nan,
        lambda_min_residual=math.nan,
        steps=steps,
        hvp_count=steps,
        tol=TOL,
        eigenvectors=np.asarray(result.eigenvectors, dtype=np.float32) if keep_vectors else None,
        basis_dtype="",  # no Krylov basis: power iteration keeps one vector per eigenvalue
        block_size=0,
        multiplicity_resolved=False,
    )


def trace_result(result: PyHessianResult) -> TraceResult:
    r"""PyHessian's trace samples as a :class:`TraceResult`.

    The mean of its per-probe :math:`z^\top Hz` (the number it returns), with the standard error and
    Student-t 95 % interval of those samples; ``converged`` says whether its own running-mean rule
    stopped it before ``MAX_ITER`` probes.
    """
    samples = np.asarray(result.trace_samples, dtype=np.float64)
    summary = summarize(
        samples,
        method="pyhessian-hutchinson",
        hvp_count=len(samples),
        rtol=TOL,
        note=(
            f"PyHessian's trace(): Rademacher probes until the running mean changes by less "
            f"than {TOL:g} relative (at most {MAX_ITER})"
        ),
    )
    return replace(summary, converged=bool(result.trace_stopped))


def analyze_pyhessian(
    op,
    settings,
    *,
    on_result: Callable[[str, Any], None] | None = None,
    on_phase: Callable[[str, int], None] | None = None,
) -> Analysis:
    """Analyze the Hessian for ``landscape hessian --engine pyhessian``.

    The top-k and the trace by PyHessian on ``op``'s model, loss and batches
    (:func:`pyhessian_estimates`, seeded with ``settings.seed``); the density and the per-layer
    estimates, which PyHessian cannot give on torch 2, by landscape's estimators
    (:func:`landscape_cli.hessian.analyze`).

    Returns an :class:`~landscape_cli.hessian.types.Analysis` as
    :func:`~landscape_cli.hessian.analyze` does, with ``pyhessian_hvp_count``: PyHessian's
    products, which ``op`` does not count, and ``pyhessian_stopped``: whether PyHessian's own rule
    stopped each eigenvalue's iteration. ``on_result(name, value)`` gets each result as it
    arrives (the product count after every product), so an interrupted run reports them too.
    """
    s = settings
    record = on_result or (lambda name, value: None)
    progress = op.on_hvp
    hvps = 0
    top: LanczosResult | None = None
    trace: TraceResult | None = None
    stopped: tuple[bool, ...] | None = None

    def on_hvp(k: int) -> None:
        nonlocal hvps
        hvps += k
        record("pyhessian_hvp_count", hvps)
        if progress is not None:
            progress(k)

    def on_eigen(result: PyHessianResult) -> None:
        nonlocal top, stopped
        top = top_result(op, result, keep_vectors=s.eigenvectors)
        stopped = tuple(bool(x) for x in result.stopped)
        record("top", top)
        record("pyhessian_stopped", stopped)

    if s.top_k > 0 or s.trace_probes > 0:
        result = pyhessian_estimates(
            op.model,
            op.batches,
            op.loss_fn,
            top_k=s.top_k,
            trace=s.trace_probes > 0,
            seed=s.seed,
            device=op.device,
            skip=op.skipped,
            on_phase=on_phase,
            on_hvp=on_hvp,
            on_eigen=on_eigen,
        )
        if result.trace_samples is not None:
            trace = trace_result(result)
            record("trace", trace)
    ours = Analysis()
    if s.density_probes > 0 or s.per_layer:
        ours = analyze(op, replace(s, top_k=0, trace_probes=0), on_result=record, on_phase=on_phase)
    return Analysis(
        top=top,
        trace=trace,
        density=ours.density,
        per_layer=ours.per_layer,
        pyhessian_hvp_count=hvps,
        pyhessian_stopped=stopped,
    )
