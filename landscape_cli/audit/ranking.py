"""Ranking audited checkpoints by one measure, with ties and disagreements.

Each measure has an uncertainty (:data:`UNCERTAINTY`); two checkpoints whose values lie within
their uncertainties of each other are tied (:func:`tied`) and share a rank (:func:`ranks`), and
pairs that two measures order oppositely beyond them are :func:`disagreements`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

from landscape_cli.audit.measures import Measures
from landscape_cli.errors import check_choice

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
