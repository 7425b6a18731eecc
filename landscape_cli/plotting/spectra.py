"""Fig. 5 of the DualAdam paper: top eigenvalues, traces and eigenvalue densities side by side.

Input: the :class:`~landscape_cli.results.HessianResult` that
:func:`landscape_cli.results.read_hessian` returns, one per checkpoint, read by its fields (its
``report``'s top eigenvalues, trace and density, and the group's attributes).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from matplotlib.figure import Figure

from landscape_cli.errors import LandscapeError
from landscape_cli.plotting.style import (
    color,
    hatch,
    line_style,
    literal,
    new_figure,
    shared_measure,
)

__all__ = ["DENSITY_AXES", "DENSITY_FLOOR", "density_linthresh", "draw_spectra"]

#: Densities are drawn on a log axis, clipped from below at this fraction of the largest value.
DENSITY_FLOOR = 1e-8

if TYPE_CHECKING:
    from landscape_cli.results import HessianResult


def _check(results: Sequence[HessianResult], labels: Sequence[str]) -> None:
    if len(results) == 0:
        raise ValueError("draw_spectra needs at least one Hessian result")
    if len(labels) != len(results):
        raise ValueError(f"{len(labels)} labels for {len(results)} Hessian results")
    for result, label in zip(results, labels, strict=True):
        r = result.report
        needs = [
            (r.top is not None and len(r.top.eigenvalues) > 0, "top eigenvalues", "`top_k` > 0"),
            (r.trace is not None, "trace", "`trace_probes` >= 2"),
            (r.density is not None, "eigenvalue density", "`density_probes` > 0"),
        ]
        for present, what, option in needs:
            if not present:
                raise LandscapeError(
                    f"the Hessian results of {label!r} have no {what}; "
                    f"run `landscape hessian` with {option} on its checkpoint"
                )


def _trace_interval(result: HessianResult) -> tuple[float, float] | None:
    """The trace's 95 % CI as (below, above) distances (1.96 standard errors without one)."""
    tr = result.report.trace
    trace = float(tr.estimate)
    low, high = tr.ci95
    if low is not None and high is not None and np.isfinite(low) and np.isfinite(high):
        return max(0.0, trace - float(low)), max(0.0, float(high) - trace)
    stderr = tr.stderr
    if stderr is not None and np.isfinite(stderr):
        return 1.96 * float(stderr), 1.96 * float(stderr)
    return None


#: The density axes :func:`draw_spectra` draws (``"symlog"``, the name of the kinked axis it
#: replaced, is read as ``"asinh"``).
DENSITY_AXES = ("asinh", "linear")


def _measure(result: HessianResult) -> tuple[np.ndarray, np.ndarray]:
    """The SLQ estimate as one discrete measure.

    The Ritz values of every probe and their quadrature weights divided by the number of probes
    (they sum to 1). A density stored without its nodes is read as the measure of its grid points
    (density times grid spacing).
    """
    den = result.report.density
    nodes, weights = den.nodes, den.weights
    if nodes is not None and weights is not None and np.size(nodes) > 0:
        nodes = np.atleast_2d(np.asarray(nodes, dtype=np.float64))
        weights = np.atleast_2d(np.asarray(weights, dtype=np.float64))
        keep = np.isfinite(nodes) & np.isfinite(weights) & (weights > 0)
        return nodes[keep], weights[keep] / nodes.shape[0]
    grid = np.asarray(den.grid, dtype=np.float64)
    density = np.asarray(den.density, dtype=np.float64)
    mass = density * np.gradient(grid)
    keep = np.isfinite(mass) & (mass > 0)
    return grid[keep], mass[keep] / mass[keep].sum()


def density_linthresh(hessian_results: Sequence[HessianResult]) -> float:
    """The linear width ``a`` of the asinh density axis (linear within about ±a).

    A tenth of the smallest of the runs' spectral radii (largest |Ritz value|), rounded down to a
    power of ten. So the flattest run's spectrum spans at least a decade of the logarithmic part,
    and the bulk near 0 of every run sits in the linear part.
    """
    radii = []
    for r in hessian_results:
        nodes, _ = _measure(r)
        if nodes.size and np.abs(nodes).max() > 0:
            radii.append(float(np.abs(nodes).max()))
    if not radii:
        return 1.0
    return float(10.0 ** np.floor(np.log10(0.1 * min(radii))))


def _density_curves(
    measures: list[tuple[np.ndarray, np.ndarray]],
    transform: Any,
    broadening: float,
    grid_points: int = 1500,
) -> tuple[list[tuple[np.ndarray, np.ndarray]], float]:
    r"""Broaden each measure by a Gaussian and return the eigenvalue densities.

    Broaden each measure by a Gaussian of one width on the drawn axis and return the
    eigenvalue densities on each run's own grid, and that width in axis units.

    With :math:`u(\lambda)` the axis coordinate (identity, or the symmetric log in decades),
    :math:`q(u)=\sum_j w_j\,g_s(u-u(\theta_j))` and the drawn density is
    :math:`p(\lambda)=q(u(\lambda))\,|du/d\lambda|`, which still integrates to 1 over λ; every
    peak gets the same visible width :math:`s` = ``broadening`` × the axis span.
    """
    us = [transform(nodes) for nodes, _ in measures]
    lo = min(float(u.min()) for u in us)
    hi = max(float(u.max()) for u in us)
    span = hi - lo if hi > lo else 1.0
    s = broadening * span
    curves = []
    for u_nodes, (_, weights) in zip(us, measures, strict=True):
        u = np.linspace(float(u_nodes.min()) - 6 * s, float(u_nodes.max()) + 6 * s, grid_points)
        q = np.zeros_like(u)
        for start in range(0, len(u_nodes), 256):  # bounded memory for many Ritz values
            z = (u[:, None] - u_nodes[None, start : start + 256]) / s
            q += np.exp(-0.5 * z**2) @ weights[start : start + 256]
        q /= s * np.sqrt(2.0 * np.pi)
        lam = transform.inverted()(u)
        curves.append((lam, q * np.abs(transform.derivative(lam))))
    return curves, s


class _Decades:
    r"""The asinh axis in decades: :math:`u(\lambda) = \operatorname{asinh}(\lambda/a)/\ln 10`.

    Linear (slope :math:`1/(a\ln 10)`) for :math:`|\lambda| \ll a`, :math:`\log_{10}` of
    :math:`2|\lambda|/a` (one unit a decade) for :math:`|\lambda| \gg a`, and smooth in
    between: every derivative is continuous, so a density drawn per unit eigenvalue,
    :math:`q(u(\lambda))\,|du/d\lambda|`, has no step where the axis changes character (the
    symmetric-log axis this replaces switched from linear to log at :math:`\pm a` with a kink,
    which put artificial steps into the curves there). matplotlib's ``asinh`` scale with
    ``linear_width=a`` draws the same axis (up to the factor :math:`a\ln 10`).
    """

    def __init__(self, linthresh: float, inverse: bool = False) -> None:
        self.linthresh = linthresh
        self._inverse = inverse

    def __call__(self, values: np.ndarray) -> np.ndarray:
        v = np.asarray(values, dtype=np.float64)
        if self._inverse:
            return self.linthresh * np.sinh(v * np.log(10.0))
        return np.arcsinh(v / self.linthresh) / np.log(10.0)

    def inverted(self) -> _Decades:
        return _Decades(self.linthresh, not self._inverse)

    def derivative(self, lam: np.ndarray) -> np.ndarray:
        r""":math:`du/d\lambda` of the forward transform, exactly (no finite differences)."""
        a = self.linthresh
        return 1.0 / (a * np.log(10.0) * np.sqrt(1.0 + (np.asarray(lam) / a) ** 2))


class _Identity:
    def __call__(self, values: np.ndarray) -> np.ndarray:
        return np.asarray(values, dtype=np.float64)

    def inverted(self) -> _Identity:
        return self

    def derivative(self, lam: np.ndarray) -> np.ndarray:
        return np.ones_like(np.asarray(lam, dtype=np.float64))


def _asinh_ticks(limits: tuple[float, float], linthresh: float) -> list[float]:
    """0 and ±powers of ten from 10·linthresh outwards within ``limits``, at most 3 a side.

    (A tick at ±linthresh itself sits too close to 0 on the axis for its label to fit; over many
    decades every second or third power is shown.)
    """
    lo, hi = min(limits), max(limits)
    ticks = [0.0] if lo <= 0.0 <= hi else []
    first = int(np.floor(np.log10(linthresh))) + 1
    for sign, end in ((-1.0, -lo), (1.0, hi)):
        if end < 10.0**first:
            continue
        last = int(np.floor(np.log10(end)))
        step = max(1, int(np.ceil((last - first + 1) / 3)))
        ticks += [sign * 10.0**k for k in range(last, first - 1, -step)]
    return sorted(ticks)


def _positive_or_error(values: np.ndarray, what: str, label: str) -> None:
    finite = values[np.isfinite(values)]
    if finite.size and finite.min() <= 0:
        raise LandscapeError(
            f"the {what} of {label!r} include {finite.min():.4g} <= 0; "
            "a log axis needs positive values: drop `log`"
        )


def draw_spectra(
    hessian_results: Sequence[HessianResult],
    labels: Sequence[str],
    fig: Figure | None = None,
    *,
    log: bool = False,
    density_axis: str = "asinh",
    broadening: float = 0.02,
) -> Figure:
    """Draw Fig. 5: (a) top eigenvalues, (b) traces with 95 % CIs, (c) eigenvalue densities.

    Args:
        hessian_results: one :class:`~landscape_cli.results.HessianResult` per checkpoint;
            each needs eigenvalues, a trace and a density.
        labels: one legend label per result.
        fig: the figure to draw into (three axes are added); a new one by default.
        log: log y axes for panels (a) and (b) (every eigenvalue and trace must be > 0).
        density_axis: ``"asinh"`` (default): panel (c)'s eigenvalue axis is matplotlib's
            ``asinh`` scale, linear within about ±:func:`density_linthresh` and logarithmic
            beyond (stated in the axis label), smooth everywhere, so spectra of very different
            scales are all readable and no feature of a curve is an artefact of the axis;
            ``"linear"``: one linear axis. ``"symlog"`` is read as ``"asinh"``.
        broadening: the Gaussian width the densities are drawn with, as a fraction of the
            eigenvalue axis's span, 2 % by default (in decades for asinh); the width is stated
            in the legend's title.

    Panel (a) shows grouped bars, one group per eigenvalue rank and one colour (and hatch) per
    checkpoint; (b) one bar per checkpoint with the trace's 95 % confidence interval as error
    bars; (c) the densities overlaid on a log y axis, each run with its own colour, line style and
    markers, clipped from below at :data:`DENSITY_FLOOR` times the largest density. The densities
    are redrawn from the stored SLQ nodes and weights (see :func:`_density_curves`): the stored
    ``density`` uses a width relative to each run's own spectrum, which leaves a wide spectrum as
    a row of separate spikes next to a narrow one. What the Hessians were measured on (loss,
    split, number of samples; from the results' attributes) goes in the axis labels, or after each
    legend label when the runs differ. Returns the figure.

    Raises:
        LandscapeError: a result lacks one of the three parts (the message names the option of
            ``landscape hessian`` that produces it), or ``log`` with a value <= 0.
    """
    _check_spectra(
        hessian_results, labels, log=log, density_axis=density_axis, broadening=broadening
    )
    common, own = shared_measure([r.all_attrs for r in hessian_results])
    shown = [f"{literal(label)}{extra}" for label, extra in zip(labels, own, strict=True)]
    on = f"\n({common})" if common else ""
    if fig is None:
        fig = new_figure(15.0, 4.6)
    ax_eig, ax_tr, ax_den = fig.subplots(1, 3)
    _eigenvalue_panel(ax_eig, hessian_results, shown, on, log)
    _trace_panel(ax_tr, hessian_results, shown, on, log)
    _density_panel(ax_den, hessian_results, shown, on, density_axis, broadening)
    return fig


def _check_spectra(
    hessian_results: Sequence[HessianResult],
    labels: Sequence[str],
    *,
    log: bool,
    density_axis: str,
    broadening: float,
) -> None:
    """Fig. 5's inputs and options, before anything is drawn."""
    _check(hessian_results, labels)
    if density_axis not in (*DENSITY_AXES, "symlog"):
        raise LandscapeError(
            f"unknown density axis {density_axis!r}: choose {' or '.join(DENSITY_AXES)}"
        )
    if not 0 < broadening < 1:
        raise LandscapeError(f"the density broadening must be in (0, 1), got {broadening}")
    if log:
        for r, label in zip(hessian_results, labels, strict=True):
            eig = np.asarray(r.report.top.eigenvalues, dtype=np.float64)
            _positive_or_error(eig, "eigenvalues", label)
            _positive_or_error(np.array([float(r.report.trace.estimate)]), "trace", label)


def _eigenvalue_panel(ax, hessian_results, shown, on: str, log: bool) -> None:
    """Panel (a): the top eigenvalues as bars grouped by rank, one colour and hatch per run."""
    n = len(hessian_results)
    k = max(len(r.report.top.eigenvalues) for r in hessian_results)
    width = 0.8 / n
    for i, (result, label) in enumerate(zip(hessian_results, shown, strict=True)):
        eig = np.asarray(result.report.top.eigenvalues, dtype=np.float64)
        ranks = np.arange(len(eig))
        ax.bar(
            ranks - 0.4 + width * (i + 0.5),
            eig,
            width,
            color=color(i),
            hatch=hatch(i),
            edgecolor="white",
            linewidth=0.0,
            label=label,
        )
    ax.set_xticks(np.arange(k), [f"λ{j + 1}" for j in range(k)])
    ax.set_xlabel("rank")
    ax.set_ylabel(f"eigenvalue{on}")
    ax.set_title("(a) Top Hessian eigenvalues")
    if log:
        ax.set_yscale("log")
        lowest = min(float(np.min(r.report.top.eigenvalues)) for r in hessian_results)
        ax.set_ylim(bottom=lowest / 3.0)  # every bar visibly rises from the bottom
    else:
        ax.axhline(0.0, color="black", linewidth=0.6)
    ax.legend()


def _trace_panel(ax, hessian_results, shown, on: str, log: bool) -> None:
    """Panel (b): one bar per run with the trace's 95 % confidence interval as error bars."""
    n = len(hessian_results)
    xs = np.arange(n)
    traces = np.array([float(r.report.trace.estimate) for r in hessian_results])
    intervals = [_trace_interval(r) for r in hessian_results]
    for i in range(n):
        ax.bar(
            xs[i],
            traces[i],
            0.6,
            color=color(i),
            hatch=hatch(i),
            edgecolor="white",
            linewidth=0.0,
        )
    for i, interval in enumerate(intervals):
        if interval is not None:
            below = min(interval[0], 0.999 * traces[i]) if log else interval[0]
            ax.errorbar(
                xs[i],
                traces[i],
                yerr=np.array([[below], [interval[1]]]),
                color="black",
                capsize=6,
                linewidth=1.2,
            )
    ax.set_xticks(xs, list(shown))
    ax.set_ylabel(f"trace{on}")
    ax.set_title("(b) Hessian trace (95 % CI)")
    if log:
        ax.set_yscale("log")
        ax.set_ylim(bottom=float(traces.min()) / 3.0)
    else:
        ax.axhline(0.0, color="black", linewidth=0.6)


def _density_panel(
    ax, hessian_results, shown, on: str, density_axis: str, broadening: float
) -> None:
    """Draw panel (c): the densities on a log axis.

    The densities on a log axis, broadened by one width on the drawn eigenvalue axis (asinh or
    linear), each run with its own colour, line style and markers.
    """
    n = len(hessian_results)
    measures = [_measure(r) for r in hessian_results]
    if density_axis in ("asinh", "symlog"):
        linthresh = density_linthresh(hessian_results)
        transform: Any = _Decades(linthresh)
    else:
        transform = _Identity()
    curves, sigma = _density_curves(measures, transform, broadening)
    peak = max(float(np.nanmax(d)) for _, d in curves)
    floor = DENSITY_FLOOR * peak if peak > 0 else DENSITY_FLOOR
    for i, ((grid, density), label) in enumerate(zip(curves, shown, strict=True)):
        ax.plot(grid, np.maximum(density, floor), label=label, linewidth=1.4, **line_style(i, n))
    ax.set_yscale("log")
    ax.set_ylim(floor, peak * 3.0 if peak > 0 else 1.0)
    if density_axis in ("asinh", "symlog"):
        ax.set_xscale("asinh", linear_width=linthresh)
        ax.set_xticks(_asinh_ticks(ax.get_xlim(), linthresh))
        ax.set_xlabel(f"eigenvalue (asinh axis: linear within ±{linthresh:g}, log beyond)")
        width_text = f"σ = {sigma:.2g} decade"
    else:
        ax.set_xlabel("eigenvalue")
        width_text = f"σ = {sigma:.3g}"
    ax.set_ylabel(f"density (log scale){on}")
    ax.set_title("(c) Eigenvalue density")
    ax.legend(  # beside the panel: densities leave no corner free for every data set
        loc="upper left",
        bbox_to_anchor=(1.02, 1.0),
        title=f"Gaussian broadening\n{width_text}",
        title_fontsize="small",
        fontsize="small",
    )
