"""Fig. 5 of the DualAdam paper: top eigenvalues, traces and eigenvalue densities side by side.

Input: the dicts :func:`landscape_cli.results.read_hessian` returns, one per checkpoint.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from landscape_cli.errors import LandscapeError
from landscape_cli.plotting.style import color, new_figure

__all__ = ["DENSITY_FLOOR", "fig5"]

#: Densities are drawn on a log axis, clipped from below at this fraction of the largest value.
DENSITY_FLOOR = 1e-8


def _check(results: Sequence[dict[str, Any]], labels: Sequence[str]) -> None:
    if len(results) == 0:
        raise ValueError("fig5 needs at least one Hessian result")
    if len(labels) != len(results):
        raise ValueError(f"{len(labels)} labels for {len(results)} Hessian results")
    needs = [
        ("eigenvalues", "top eigenvalues", "--top-k > 0"),
        ("trace", "trace", "--trace-probes >= 2"),
        ("density", "eigenvalue density", "--density-probes > 0"),
    ]
    for result, label in zip(results, labels, strict=True):
        for key, what, option in needs:
            value = result.get(key)
            if value is None or (key == "eigenvalues" and len(value) == 0):
                raise LandscapeError(
                    f"the Hessian results of {label!r} have no {what}; "
                    f"run `landscape hessian` with {option} on its checkpoint"
                )


def _trace_interval(result: dict[str, Any]) -> tuple[float, float] | None:
    """The trace's 95 % CI as (below, above) distances, from the stored attributes."""
    trace = float(result["trace"])
    attrs = result.get("trace_attrs") or {}
    low, high = attrs.get("ci95_low"), attrs.get("ci95_high")
    if low is not None and high is not None and np.isfinite(low) and np.isfinite(high):
        return max(0.0, trace - float(low)), max(0.0, float(high) - trace)
    stderr = result.get("trace_stderr")
    if stderr is not None and np.isfinite(stderr):
        return 1.96 * float(stderr), 1.96 * float(stderr)
    return None


def fig5(
    hessian_results: Sequence[dict[str, Any]],
    labels: Sequence[str],
    fig: Figure | None = None,
) -> Figure:
    """Draw Fig. 5: (a) top eigenvalues, (b) traces with 95 % CIs, (c) eigenvalue densities.

    Args:
        hessian_results: one :func:`~landscape_cli.results.read_hessian` dict per checkpoint;
            each needs eigenvalues, a trace and a density.
        labels: one legend label per result.
        fig: the figure to draw into (three axes are added); a new one by default.

    Panel (a) shows grouped bars, one group per eigenvalue rank and one colour per checkpoint;
    (b) one bar per checkpoint with the trace's 95 % confidence interval as error bars; (c) the
    SLQ densities overlaid on a log axis, clipped from below at :data:`DENSITY_FLOOR` times the
    largest density. Returns the figure.

    Raises:
        LandscapeError: a result lacks one of the three parts (the message names the option of
            ``landscape hessian`` that produces it).
    """
    _check(hessian_results, labels)
    n = len(hessian_results)
    if fig is None:
        fig = new_figure(15.0, 4.4)
    ax_eig, ax_tr, ax_den = fig.subplots(1, 3)

    # (a) top eigenvalues, grouped by rank
    k = max(len(r["eigenvalues"]) for r in hessian_results)
    width = 0.8 / n
    for i, (result, label) in enumerate(zip(hessian_results, labels, strict=True)):
        eig = np.asarray(result["eigenvalues"], dtype=np.float64)
        ranks = np.arange(len(eig))
        ax_eig.bar(ranks - 0.4 + width * (i + 0.5), eig, width, color=color(i), label=label)
    ax_eig.set_xticks(np.arange(k), [f"λ{j + 1}" for j in range(k)])
    ax_eig.set_xlabel("rank")
    ax_eig.set_ylabel("eigenvalue")
    ax_eig.set_title("(a) Top Hessian eigenvalues")
    ax_eig.axhline(0.0, color="black", linewidth=0.6)
    ax_eig.legend()

    # (b) traces with 95 % confidence intervals
    xs = np.arange(n)
    traces = np.array([float(r["trace"]) for r in hessian_results])
    intervals = [_trace_interval(r) for r in hessian_results]
    ax_tr.bar(xs, traces, 0.6, color=[color(i) for i in range(n)])
    for i, interval in enumerate(intervals):
        if interval is not None:
            ax_tr.errorbar(
                xs[i],
                traces[i],
                yerr=np.array([[interval[0]], [interval[1]]]),
                color="black",
                capsize=6,
                linewidth=1.2,
            )
    ax_tr.set_xticks(xs, list(labels))
    ax_tr.set_ylabel("trace")
    ax_tr.set_title("(b) Hessian trace (95 % CI)")
    ax_tr.axhline(0.0, color="black", linewidth=0.6)

    # (c) eigenvalue densities on a log axis
    peak = max(float(np.nanmax(r["density"]["density"])) for r in hessian_results)
    floor = DENSITY_FLOOR * peak if peak > 0 else DENSITY_FLOOR
    for i, (result, label) in enumerate(zip(hessian_results, labels, strict=True)):
        grid = np.asarray(result["density"]["grid"], dtype=np.float64)
        density = np.asarray(result["density"]["density"], dtype=np.float64)
        ax_den.plot(grid, np.maximum(density, floor), color=color(i), label=label, linewidth=1.4)
    ax_den.set_yscale("log")
    ax_den.set_ylim(floor, peak * 3.0 if peak > 0 else 1.0)
    ax_den.set_xlabel("eigenvalue")
    ax_den.set_ylabel("density (log scale)")
    ax_den.set_title("(c) Eigenvalue density")
    ax_den.legend()
    return fig
