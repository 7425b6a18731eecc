"""Per-layer curvature.

The λmax and trace of each parameter's diagonal Hessian block, the results of ``landscape hessian
--per-layer``, as horizontal bar charts.

Input: the :class:`~landscape_cli.results.HessianResult` that
:func:`landscape_cli.results.read_hessian` returns, read by its fields: its report's ``per_layer``
(one :class:`~landscape_cli.hessian.types.LayerCurvature` per parameter block: ``name``,
``lambda_max``, ``lambda_max_residual``, ``trace``, ``trace_stderr``, ``numel``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
from matplotlib.figure import Figure

from landscape_cli.errors import LandscapeError
from landscape_cli.plotting.style import color, hatch, literal, new_figure, shared_measure

__all__ = ["layers"]

if TYPE_CHECKING:
    from landscape_cli.hessian.types import LayerCurvature
    from landscape_cli.results import HessianResult


def _layer_names(hessian_results: Sequence[HessianResult]) -> list[str]:
    """Every layer of every result, in the order they first appear (the models' parameter order)."""
    names: list[str] = []
    seen: set[str] = set()
    for result in hessian_results:
        for name in (layer.name for layer in result.report.per_layer):
            if name not in seen:
                seen.add(name)
                names.append(name)
    return names


def _value(layer: LayerCurvature | None, key: str) -> float:
    """``layer``'s ``key`` as a float (NaN for a layer the result does not have)."""
    value = None if layer is None else getattr(layer, key)
    return float("nan") if value is None else float(value)


#: Longer layer names than this lose the dotted prefix that all of them share (e.g. ``net.bert.``).
LONG_NAME = 40


def _shown_names(names: list[str]) -> tuple[list[str], str]:
    """The names as the rows show them, and the dotted prefix taken off them ("" if none).

    Names up to :data:`LONG_NAME` characters stay whole; longer ones (a transformer's
    ``net.bert.encoder.layer.11.attention.self.query.weight``) lose the dotted prefix that every
    name shares, which the axis label then states.
    """
    if len(names) < 2 or max(len(n) for n in names) <= LONG_NAME:
        return names, ""
    parts = [n.split(".") for n in names]
    common = 0
    while all(len(p) > common + 1 and p[common] == parts[0][common] for p in parts):
        common += 1
    if common == 0:
        return names, ""
    prefix = ".".join(parts[0][:common]) + "."
    return [n[len(prefix) :] for n in names], prefix


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
    bar in every row, in its own colour and hatch, named in the legend above the panels. A layer
    that one result does not have (another model) gets no bar there. Long names (a transformer's)
    lose the dotted prefix they all share, stated in the axis label, and the figure is made wide
    enough for the longest name, so that no text overlaps or leaves the figure. ``log`` draws
    both value axes on a log scale; where a value is <= 0 (a block's trace estimate is a
    Hutchinson mean, which can fall below zero for a nearly flat block) that axis is matplotlib's
    ``asinh`` scale instead, logarithmic for large values and linear through zero, so the
    negative estimate is drawn, with its interval, and said so in the axis label. Returns the
    figure.

    Raises:
        LandscapeError: a result has no per-layer values (the message names ``--per-layer``).
    """
    _check_layers(hessian_results, labels)
    names = _layer_names(hessian_results)
    n, m = len(hessian_results), len(names)
    by_name = [{layer.name: layer for layer in r.report.per_layer} for r in hessian_results]
    lam, tr, se = (
        np.array([[_value(layers.get(nm), key) for nm in names] for layers in by_name])
        for key in ("lambda_max", "trace", "trace_stderr")
    )
    common, own = shared_measure([r.all_attrs for r in hessian_results])
    shown = [f"{literal(label)}{extra}" for label, extra in zip(labels, own, strict=True)]
    rows_shown, prefix = _shown_names(names)
    fontsize = 8.0 if m > 12 else 10.0
    if fig is None:
        longest = max(len(t) for t in rows_shown)
        label_width = 0.62 * fontsize / 72.0 * longest  # inches of the longest row name
        fig = new_figure(
            8.6 + label_width, max(3.4, 2.2 + 0.22 * m * max(1.0, 0.55 * n) * fontsize / 8.0)
        )
    ax_lam, ax_tr = fig.subplots(1, 2, sharey=True)

    rows = np.arange(m)
    height = 0.8 / n
    err = np.where(np.isfinite(se), 1.96 * se, 0.0)
    lam_scale, tr_scale = _scale(lam, log), _scale(np.concatenate([tr, tr - err]), log)
    for i in range(n):
        offset = rows - 0.4 + height * (i + 0.5)
        style = {"color": color(i), "hatch": hatch(i), "edgecolor": "white", "linewidth": 0.0}
        ax_lam.barh(offset, lam[i], height, label=shown[i], **style)
        xerr = err[i]
        if tr_scale[0] == "log":  # a log axis cannot show a lower end <= 0
            xerr = np.vstack([np.minimum(err[i], 0.999 * tr[i]), err[i]])
        ax_tr.barh(offset, tr[i], height, xerr=xerr, capsize=2, ecolor="black", **style)
    ax_lam.set_yticks(rows, [literal(nm) for nm in rows_shown], fontsize=fontsize)
    ax_lam.invert_yaxis()  # the first parameter on top
    on = f"\n({common})" if common else ""
    _value_axis(
        ax_lam, lam, f"λmax of the layer's Hessian block{on}", "(a) top eigenvalue", lam_scale
    )
    _value_axis(
        ax_tr, tr, f"trace of the layer's Hessian block{on}", "(b) trace (95 % CI)", tr_scale
    )
    ax_lam.set_ylabel(f"layer (parameter names after {prefix})" if prefix else "layer (parameter)")
    fig.legend(handles=ax_lam.containers, labels=shown, loc="outside upper center", ncols=min(n, 4))
    return fig


def _check_layers(hessian_results: Sequence[HessianResult], labels: Sequence[str]) -> None:
    """At least one result, one label each, and per-layer values in every result."""
    if len(hessian_results) == 0:
        raise ValueError("layers needs at least one Hessian result")
    if len(labels) != len(hessian_results):
        raise ValueError(f"{len(labels)} labels for {len(hessian_results)} Hessian results")
    for result, label in zip(hessian_results, labels, strict=True):
        if not result.report.per_layer:
            raise LandscapeError(
                f"the Hessian results of {label!r} have no per-layer values; "
                "run `landscape hessian` with `per_layer=True` on its checkpoint"
            )


def _scale(values: np.ndarray, log: bool) -> tuple[str, float]:
    """The value axis: ``("linear", 0)``, ``("log", 0)`` or ``("asinh", linear width)``.

    With ``log``, a log axis when every finite value is > 0; else an asinh axis, linear within
    ± the smallest nonzero |value| rounded down to a power of ten, logarithmic beyond.
    """
    finite = values[np.isfinite(values)]
    if not log or finite.size == 0:
        return "linear", 0.0
    if finite.min() > 0:
        return "log", 0.0
    nonzero = np.abs(finite[finite != 0])
    width = float(10.0 ** np.floor(np.log10(nonzero.min()))) if nonzero.size else 1.0
    return "asinh", width


def _value_axis(ax, values: np.ndarray, xlabel: str, title: str, scale: tuple[str, float]) -> None:
    """Label a value axis on its scale; a log axis starts a factor 3 below the smallest value."""
    kind, width = scale
    ax.set_title(title)
    if kind == "log":
        ax.set_xscale("log")
        finite = values[np.isfinite(values)]
        ax.set_xlim(left=float(finite.min()) / 3.0)  # every bar visibly starts at the left
    elif kind == "asinh":
        ax.set_xscale("asinh", linear_width=width)
        ax.axvline(0.0, color="black", linewidth=0.6)
        xlabel += f"\nasinh axis (linear within ±{width:g}): a value ≤ 0 is shown"
    else:
        ax.axvline(0.0, color="black", linewidth=0.6)
    ax.set_xlabel(xlabel)
    ax.grid(axis="x", linewidth=0.4, alpha=0.5)
