"""Per-layer curvature.

The λmax and trace of each parameter's diagonal Hessian block, the results of ``landscape hessian
--per-layer``, as horizontal bar charts.

Input: the :class:`~landscape_cli.results.HessianResult` that
:func:`landscape_cli.results.read_hessian` returns, read through its dict view (so a mapping with
the same keys works too); its ``per_layer`` maps each parameter name to the attributes
``lambda_max``, ``lambda_max_residual``, ``trace``, ``trace_stderr`` and ``numel``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from matplotlib.figure import Figure

from landscape_cli.errors import LandscapeError
from landscape_cli.plotting.style import color, hatch, literal, new_figure, shared_measure

__all__ = ["layers"]

if TYPE_CHECKING:
    from landscape_cli.results import HessianResult


def _layer_names(hessian_results: Sequence[HessianResult]) -> list[str]:
    """Every layer of every result, in the order they first appear (the models' parameter order)."""
    names: list[str] = []
    seen: set[str] = set()
    for result in hessian_results:
        for name in result.get("per_layer") or {}:
            if name not in seen:
                seen.add(name)
                names.append(name)
    return names


def _value(entry: dict[str, Any] | None, key: str) -> float:
    if entry is None or entry.get(key) is None:
        return float("nan")
    return float(entry[key])


def layers(
    hessian_results: Sequence[HessianResult],
    labels: Sequence[str],
    fig: Figure | None = None,
    *,
    log: bool = False,
) -> Figure:
    """Draw per-layer λmax and trace as horizontal bars.

    Draw per-layer λmax (left) and trace (right, with 95 % CIs: ±1.96 standard errors) as
    horizontal bars.

    Each layer (parameter) is a row, top to bottom in parameter order; each result (file) has one
    bar in every row, in its own colour and hatch, named in the legend. A layer that one result
    does not have (another model) gets no bar there. ``log`` draws both value axes on a log
    scale (every value must then be > 0). Returns the figure.

    Raises:
        LandscapeError: a result has no per-layer values (the message names ``--per-layer``), or
            ``log`` with a value <= 0.
    """
    _check_layers(hessian_results, labels)
    names = _layer_names(hessian_results)
    n, m = len(hessian_results), len(names)
    lam, tr, se = (
        np.array([[_value(r["per_layer"].get(nm), key) for nm in names] for r in hessian_results])
        for key in ("lambda_max", "trace", "trace_stderr")
    )
    if log:
        _check_positive(lam, tr, names, labels)
    common, own = shared_measure([r.get("attrs") for r in hessian_results])
    shown = [f"{literal(label)}{extra}" for label, extra in zip(labels, own, strict=True)]
    if fig is None:
        fig = new_figure(11.0, max(3.0, 1.4 + 0.22 * m * max(1.0, 0.55 * n)))
    ax_lam, ax_tr = fig.subplots(1, 2, sharey=True)

    rows = np.arange(m)
    height = 0.8 / n
    for i in range(n):
        offset = rows - 0.4 + height * (i + 0.5)
        style = {"color": color(i), "hatch": hatch(i), "edgecolor": "white", "linewidth": 0.0}
        ax_lam.barh(offset, lam[i], height, label=shown[i], **style)
        err = np.where(np.isfinite(se[i]), 1.96 * se[i], 0.0)
        if log:  # a log axis cannot show a lower end <= 0
            err = np.vstack([np.minimum(err, 0.999 * tr[i]), err])
        ax_tr.barh(offset, tr[i], height, xerr=err, capsize=2, ecolor="black", **style)
    ax_lam.set_yticks(rows, [literal(nm) for nm in names], fontsize=8 if m > 12 else None)
    ax_lam.invert_yaxis()  # the first parameter on top
    on = f" ({common})" if common else ""
    _value_axis(
        ax_lam, lam, f"λmax of the layer's Hessian block{on}", "(a) Per-layer top eigenvalue", log
    )
    _value_axis(
        ax_tr, tr, f"trace of the layer's Hessian block{on}", "(b) Per-layer trace (95 % CI)", log
    )
    ax_lam.set_ylabel("layer (parameter)")
    ax_lam.legend(loc="best")
    return fig


def _check_layers(hessian_results: Sequence[HessianResult], labels: Sequence[str]) -> None:
    """At least one result, one label each, and per-layer values in every result."""
    if len(hessian_results) == 0:
        raise ValueError("layers needs at least one Hessian result")
    if len(labels) != len(hessian_results):
        raise ValueError(f"{len(labels)} labels for {len(hessian_results)} Hessian results")
    for result, label in zip(hessian_results, labels, strict=True):
        if not result.get("per_layer"):
            raise LandscapeError(
                f"the Hessian results of {label!r} have no per-layer values; "
                "run `landscape hessian` with `per_layer=True` on its checkpoint"
            )


def _check_positive(lam: np.ndarray, tr: np.ndarray, names, labels) -> None:
    """A log axis needs every finite λmax and trace > 0: the first that is not, in one line."""
    for values, what in ((lam, "λmax"), (tr, "trace")):
        bad = np.argwhere(np.isfinite(values) & (values <= 0))
        if bad.size:
            i, j = bad[0]
            raise LandscapeError(
                f"the per-layer {what} of {names[j]!r} in {labels[i]!r} is "
                f"{values[i, j]:.4g} <= 0; a log axis needs positive values: drop `log`"
            )


def _value_axis(ax, values: np.ndarray, xlabel: str, title: str, log: bool) -> None:
    """Label a value axis; on a log scale, start it a factor 3 below the smallest value."""
    ax.set_xlabel(xlabel)
    ax.set_title(title)
    if log:
        ax.set_xscale("log")
        finite = values[np.isfinite(values)]
        ax.set_xlim(left=float(finite.min()) / 3.0)  # every bar visibly starts at the left
    else:
        ax.axvline(0.0, color="black", linewidth=0.6)
    ax.grid(axis="x", linewidth=0.4, alpha=0.5)
