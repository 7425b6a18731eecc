r"""Stochastic trace estimators over a Hessian-vector-product operator.

**Hutchinson** (Hutchinson 1989): for Rademacher probes :math:`z` (entries ±1),
:math:`\mathbb{E}[z^\top H z] = \operatorname{tr}H`, with variance
:math:`2(\|H\|_F^2 - \sum_i H_{ii}^2)` per probe.

**Hutch++** (Meyer, Musco, Musco & Woodruff 2021, Alg. 1): with a budget of :math:`m` products,
sketch :math:`Q=\operatorname{orth}(H S)` from :math:`m/3` probes, take
:math:`\operatorname{tr}(Q^\top H Q)` exactly (:math:`m/3` products) and Hutchinson on
:math:`(I-QQ^\top)H(I-QQ^\top)` with the remaining :math:`m/3`.

**Krylov-deflated Hutchinson**: ``landscape hessian`` runs Lanczos for the top eigenvalues anyway,
which leaves an orthonormal basis :math:`Q_m` with :math:`Q_m^\top H Q_m = T_m`. With
:math:`P=Q_mQ_m^\top`,

.. math::

    \operatorname{tr}H = \operatorname{tr}T_m + \operatorname{tr}\big((I-P)H(I-P)\big),

the first term exact and free, the second estimated with projected probes
:math:`z_\perp=(I-P)z`: :math:`\mathbb{E}[z_\perp^\top H z_\perp]=\operatorname{tr}((I-P)H(I-P))`.
When the top of the spectrum dominates :math:`\|H\|_F` (trained networks), the variance falls by
orders of magnitude. It can also be worse than plain Hutchinson (a nearly diagonal H, whose
Rademacher variance is near zero). The choice costs nothing to make well: from the (block)
Lanczos relation :math:`HQ_m = Q_mT_m + R_mE_m^\top` (:math:`R_m` the last block's residual,
:math:`E_m` its columns; :math:`\beta_m q_{m+1}e_m^\top` for single-vector Lanczos), the plain
Hutchinson sample :math:`z^\top Hz` of the *same* probe follows from :math:`Hz_\perp` without
another product,

.. math::

    z^\top H z = z^\top H z_\perp + c^\top T_m c + c_{\text{last}}^\top R_m^\top z,
    \qquad c = Q_m^\top z,

so every probe yields both samples for one HVP, and :func:`deflated_trace` reports the estimator
whose sample variance is smaller (stating both in ``note``).

Every estimator stops when the standard error of the mean falls to ``rtol·|mean|`` (after at
least ``min_probes`` probes) or when ``probes`` are spent, and reports the per-probe samples,
the standard error and a Student-t 95 % confidence interval. (PyHessian stops on a running-mean
rule that can stop at a 19 % standard error, or after two samples.) Probes are drawn, and the
rule is looked at, in rounds of :data:`~landscape_cli.hessian.batching.ROUND` (8); ``block``
says how many probes one product carries (:mod:`landscape_cli.hessian.batching`: by default 8,
one round, on the CPU and on CUDA), and changes no number but ``hvp_count``.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from landscape_cli.hessian.batching import ROUND, apply_in_blocks, resolve_block
from landscape_cli.hessian.lanczos import KrylovBasis, lift, project
from landscape_cli.hessian.protocol import SymmetricOperator
from landscape_cli.hessian.sampling import rademacher
from landscape_cli.hessian.types import TraceResult

#: The relative float64 rounding floor of a trace interval's half-width.
ROUNDING = 1e-12


def summarize(
    samples: np.ndarray, *, method: str, hvp_count: int, rtol: float, note: str = ""
) -> TraceResult:
    r"""Mean, standard error and Student-t 95 % interval of per-probe trace samples.

    Args:
        samples: The per-probe samples (for Hutchinson, :math:`z^\top Hz` per probe).
        method: The estimator's name, stored with the result.
        hvp_count: The Hessian-vector products the samples cost.
        rtol: The relative standard error asked for; ``converged`` says whether it was met.
        note: A remark stored with the result (e.g. why a method was chosen).
    """
    # lazy: scipy.stats takes about 0.6 s to import
    from scipy import stats

    samples = np.asarray(samples, dtype=np.float64)
    n = len(samples)
    mean = float(samples.mean())
    stderr = float(samples.std(ddof=1) / math.sqrt(n)) if n > 1 else math.inf
    half = float(stats.t.ppf(0.975, n - 1)) * stderr if n > 1 else math.inf
    # Samples that agree exactly (a deflation space that spans R^n leaves nothing random) still
    # carry the rounding of float64 sums: the interval is never narrower than that.
    half = max(half, ROUNDING * max(abs(mean), float(np.abs(samples).max(initial=0.0))))
    return TraceResult(
        estimate=mean,
        stderr=stderr,
        ci95=(mean - half, mean + half),
        samples=samples,
        probes=n,
        method=method,
        hvp_count=hvp_count,
        converged=_precise(samples, rtol),
        rtol=rtol,
        note=note,
    )


def _precise(samples: np.ndarray, rtol: float) -> bool:
    n = len(samples)
    if n < 2:
        return False
    mean = abs(float(np.mean(samples)))
    stderr = float(np.std(samples, ddof=1)) / math.sqrt(n)
    return stderr <= rtol * mean


def _blocks(probes: int, block: int) -> list[int]:
    """Probe counts per round: ``block`` at a time up to ``probes``."""
    return [min(block, probes - done) for done in range(0, probes, block)]


class _Rounds:
    """The rounds of probes ``draw(size)`` for ``sizes``, with their products, in order.

    Iterating yields ``(drawn, HV, last)``: ``drawn`` is what ``draw`` returned for a round (its
    last item the vectors V, shape (n, size)), or, when a product carries fewer columns than a
    round, the same items cut to that product's columns; ``HV = op @ V`` for them, and ``last``
    says whether they end a round (the stopping rules look only there, so that every block gives
    the same estimate). A product carries ``block // ROUND`` whole rounds when ``block >=
    ROUND``, else ``block`` columns of one round: only one product's columns and products are
    held at a time beside the round's probes. Rounds are drawn only as their product needs them.
    ``spent`` counts the products computed, including those of rounds drawn with the round a
    caller stopped at.
    """

    def __init__(self, op: SymmetricOperator, sizes: list[int], block: int, draw) -> None:
        self.op, self.sizes, self.block, self.draw = op, sizes, block, draw
        self.spent = 0

    def __iter__(self):
        per = max(1, self.block // ROUND)
        for first in range(0, len(self.sizes), per):
            drawn = [self.draw(size) for size in self.sizes[first : first + per]]
            if len(drawn) == 1 and drawn[0][-1].shape[1] > self.block:  # part of one round
                size = drawn[0][-1].shape[1]
                for start in range(0, size, self.block):
                    part = tuple(x[:, start : start + self.block] for x in drawn[0])
                    HV = self.op.matmat(part[-1].double())
                    self.spent += HV.shape[1]
                    yield part, HV, start + self.block >= size
                continue
            V = torch.cat([d[-1].double() for d in drawn], 1)
            HV = apply_in_blocks(self.op, V, self.block)
            self.spent += V.shape[1]
            start = 0
            for d in drawn:
                k = d[-1].shape[1]
                yield d, HV[:, start : start + k], True
                start += k


def _samples(Z: Tensor, HZ: Tensor) -> list[float]:
    """``zᵀHz`` of each column, one column at a time, the same sum whatever the block.

    Both columns are fresh copies: a SIMD dot product's rounding depends on where its vectors
    start in memory, and a product's column sits at a different offset in a wider block.
    """
    return [
        float(torch.dot(Z[:, j].to(torch.float64, copy=True), HZ[:, j].clone()))
        for j in range(Z.shape[1])
    ]


def hutchinson_trace(
    op: SymmetricOperator,
    *,
    generator: torch.Generator,
    probes: int = 100,
    rtol: float = 1e-2,
    min_probes: int = 10,
    block: int | None = None,
) -> TraceResult:
    r"""Hutchinson's estimate of :math:`\operatorname{tr}H` from Rademacher probes.

    Each probe :math:`z` gives the sample :math:`z^\top Hz` (module docstring); probes come in
    rounds of 8 and stop once the standard error is at most ``rtol``·|mean|.

    Args:
        op: The symmetric operator.
        generator: The random stream of the probes.
        probes: The most probes (HVPs).
        rtol: Relative standard error to stop at (0: use every probe).
        min_probes: The fewest probes before stopping.
        block: The most probes per product (:mod:`~landscape_cli.hessian.batching`; default:
            the operator's device's rule). Changes no number but ``hvp_count``.
    """
    block = resolve_block(op, block)
    samples: list[float] = []
    rounds = _Rounds(
        op,
        _blocks(probes, ROUND),
        block,
        # a round's signs as int8 (exact, a byte an entry); each product's columns become float64
        lambda size: (rademacher(op.n, size, generator, dtype=torch.int8).to(op.device),),
    )
    for (Z,), HZ, last in rounds:
        samples += _samples(Z, HZ)
        if last and len(samples) >= min_probes and _precise(np.array(samples), rtol):
            break
    return summarize(np.array(samples), method="hutchinson", hvp_count=rounds.spent, rtol=rtol)


def _projected_probes(
    op, basis: np.ndarray | Tensor, *, probes, rtol, min_probes, block, gen, exact: float, extra
):
    """Shared loop of the deflated estimators.

    Samples exact + z⊥ᵀHz⊥ and, where ``extra`` is given, the plain Hutchinson sample of the same
    probe. Probes are drawn and projected round by round (``ROUND``), ``block`` per product.
    """
    Q = basis

    def draw(size: int):
        Z = rademacher(op.n, size, gen).to(op.device)
        C = project(Q, Z)  # (m, size)
        Zp = Z - lift(Q, C)
        Zp = Zp - lift(Q, project(Q, Zp))  # reorthogonalise: keeps z⊥ ⟂ Q to rounding
        return Z, C, Zp

    deflated: list[float] = []
    plain: list[float] = []
    rounds = _Rounds(op, _blocks(probes, ROUND), block, draw)
    for (Z, C, Zp), HZp, last in rounds:
        deflated += [exact + value for value in _samples(Zp, HZp)]
        if extra is not None:
            plain += extra(Z, C, HZp).tolist()
        pick = deflated
        if plain and len(plain) >= 2 and np.var(plain, ddof=1) < np.var(deflated, ddof=1):
            pick = plain
        if last and len(deflated) >= min_probes and _precise(np.array(pick), rtol):
            break
    return np.array(deflated), np.array(plain), rounds.spent


def deflated_trace(
    op: SymmetricOperator,
    basis: KrylovBasis,
    *,
    generator: torch.Generator,
    probes: int = 100,
    rtol: float = 1e-2,
    min_probes: int = 10,
    block: int | None = None,
    adaptive: bool = True,
) -> TraceResult:
    """Krylov-deflated Hutchinson on ``basis``.

    With ``adaptive``, plain Hutchinson on the same probes instead when that has the smaller sample
    variance (see module docstring). Costs one HVP per probe.

    Args:
        op: The symmetric operator.
        basis: A Lanczos basis of ``op`` (``lanczos_run``, ``extend_krylov``).
        generator: The random stream of the probes.
        probes: The most probes (HVPs).
        rtol: Relative standard error to stop at (0: use every probe).
        min_probes: The fewest probes before stopping.
        block: The most probes per product (:mod:`~landscape_cli.hessian.batching`; default:
            the operator's device's rule). Changes no number but ``hvp_count``.
        adaptive: Report plain Hutchinson on the same probes when its variance is smaller.
    """
    block = resolve_block(op, block)
    Q = basis.Q.to(op.device)
    T = torch.as_tensor(basis.T, dtype=torch.float64, device=op.device)
    exact = float(np.trace(basis.T))
    R = basis.R.to(device=op.device, dtype=torch.float64) if basis.R is not None else None

    def plain_sample(Z: Tensor, C: Tensor, HZp: Tensor) -> Tensor:
        s = torch.tensor(_samples(Z, HZp), dtype=torch.float64, device=Z.device)
        s = s + (C * (T @ C)).sum(0)
        if R is not None:  # the last block's coordinates times its residual
            s = s + (C[-R.shape[0] :] * (R @ Z)).sum(0)
        return s

    deflated, plain, spent = _projected_probes(
        op,
        Q,
        probes=probes,
        rtol=rtol,
        min_probes=min_probes,
        block=block,
        gen=generator,
        exact=exact,
        extra=plain_sample if adaptive else None,
    )
    m = Q.shape[0]
    var_d = float(np.var(deflated, ddof=1)) if len(deflated) > 1 else math.inf
    note = f"exact part tr(T) over the {m}-dim Lanczos space = {exact:.6g}"
    if not adaptive:
        return summarize(
            deflated, method="deflated-hutchinson", hvp_count=spent, rtol=rtol, note=note
        )
    var_p = float(np.var(plain, ddof=1)) if len(plain) > 1 else math.inf
    note = f"per-probe sample variance: deflated {var_d:.4g}, Hutchinson {var_p:.4g}; {note}"
    if var_p < var_d:
        return summarize(plain, method="hutchinson", hvp_count=spent, rtol=rtol, note=note)
    return summarize(deflated, method="deflated-hutchinson", hvp_count=spent, rtol=rtol, note=note)


def hutchpp_trace(
    op: SymmetricOperator,
    *,
    generator: torch.Generator,
    probes: int = 99,
    block: int | None = None,
) -> TraceResult:
    """Hutch++ (Meyer et al. 2021) trace estimate with a budget of ``probes`` HVPs.

    A third of the budget each goes to the sketch, the exact part and the residual (module
    docstring).

    Args:
        op: The symmetric operator.
        generator: The random stream of the sketch and the probes.
        probes: The budget of products.
        block: The most vectors per product (:mod:`~landscape_cli.hessian.batching`; default:
            the operator's device's rule), for the sketch, its exact part and the residual's
            probes. Changes no number.
    """
    block = resolve_block(op, block)
    s = max(1, probes // 3)
    S = rademacher(op.n, s, generator).to(op.device)
    Y = apply_in_blocks(op, S, block)
    Q, _ = torch.linalg.qr(Y)  # (n, s) orthonormal columns
    Qt = Q.T.contiguous()
    exact = float((Q * apply_in_blocks(op, Q, block)).sum())
    rest = max(2, probes - 2 * s)
    deflated, _, spent = _projected_probes(
        op,
        Qt,
        probes=rest,
        rtol=0.0,
        min_probes=rest,
        block=block,
        gen=generator,
        exact=exact,
        extra=None,
    )
    return summarize(deflated, method="hutch++", hvp_count=2 * s + spent, rtol=0.0)
