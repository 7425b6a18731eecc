"""What an audit tells: the ranking of its rows, its ``--json`` summary and its markdown report.

The rows are the :class:`~landscape_cli.audit.AuditRow` of :func:`landscape_cli.jobs.audit_job`;
the ranking, ties and disagreements are :mod:`landscape_cli.audit`'s. The table cells (``value ±
uncertainty``) are shared by the command's table and the report's, so both say the same.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from landscape_cli import files
from landscape_cli.audit import (
    MATCHED_KEYS,
    MEASURES,
    UNCERTAINTY_FIELDS,
    AuditRow,
    Measures,
    disagreements,
    ranks,
    tied,
    uncertainty,
)
from landscape_cli.results import read_hessian

#: The table's columns: the measure, its heading and its number format.
COLUMNS = [
    ("lambda_max", "λmax", "{:.4g}"),
    ("trace", "trace", "{:.4g}"),
    ("negative_mass", "neg. mass", "{:.3f}"),
    ("sharpness_1d", "1-D sharp.", "{:.4g}"),
    ("adaptive_sharpness", "adaptive", "{:.4g}"),
    ("train_loss", "train loss", "{:.4g}"),
    ("param_norm", "‖θ‖", "{:.4g}"),
]

#: Where each measure's uncertainty is (printed as "value ± u" beside it).
PLUS_MINUS = {
    "lambda_max": "lambda_max_residual",
    "sharpness_1d": "sharpness_1d_spread",
    "adaptive_sharpness": "adaptive_sharpness_spread",
}


def fmt(value: Any, spec: str) -> str:
    """``value`` in ``spec``, or a dash for a measure that was not taken."""
    return "–" if value is None else spec.format(value)


def cells(measures: Measures) -> list[str]:
    """A row's table cells, in :data:`COLUMNS` order, each measure with ``± its uncertainty``."""
    out = []
    for key, _, spec in COLUMNS:
        value = getattr(measures, key)
        if value is not None and key in ("lambda_max", "trace", *PLUS_MINUS):
            out.append(f"{spec.format(value)} ± {uncertainty(measures, key):.2g}")
        else:
            out.append(fmt(value, spec))
    return out


def headers(tau: float) -> list[str]:
    """The headings of :data:`COLUMNS` (the negative mass says its τ)."""
    return [f"neg. mass (<−{tau:g}·λmax)" if k == "negative_mass" else h for k, h, _ in COLUMNS]


def rank_label(rank: int, is_tied: bool) -> str:
    """``3``, or ``≈3`` for a rank shared within the uncertainties."""
    return f"≈{rank}" if is_tied else str(rank)


def as_reported(matched: Measures) -> Measures:
    """Loss-matched measures as a row reports them: the uncertainties of :data:`MATCHED_KEYS`.

    The others (the trace's CI, the sample-set spreads) are not reported, so the trace's
    uncertainty there is 1.96 standard errors.
    """
    return replace(matched, **{k: None for k in UNCERTAINTY_FIELDS if k not in MATCHED_KEYS})


def survival(rows: Sequence[AuditRow]) -> dict[str, dict[str, Any]]:
    """Summarise each measure's spread and its stability under loss matching.

    For each measure: the sharpest/flattest ratio raw and loss-matched, and whether the ranking
    of the checkpoints stays the same once the training losses are matched (no pair swaps places
    beyond the uncertainties). Every row has its loss-matched measures.
    """
    out = {}
    raw = [r.measures for r in rows]
    matched = [as_reported(r.matched) for r in rows]
    for key in MEASURES:
        raw_vals = [getattr(m, key) for m in raw]
        m_vals = [getattr(m, key) for m in matched]
        if any(v is None for v in raw_vals + m_vals):
            continue

        def ratio(vals: list[float]) -> float | None:
            lo, hi = min(vals), max(vals)
            return hi / lo if lo > 0 else None

        out[key] = {
            "ratio_raw": ratio(raw_vals),
            "ratio_matched": ratio(m_vals),
            "same_order": not any(
                (raw_vals[i] - raw_vals[j]) * (m_vals[i] - m_vals[j]) < 0
                and not tied(raw[i], raw[j], key)
                and not tied(matched[i], matched[j], key)
                for i in range(len(rows))
                for j in range(i + 1, len(rows))
            ),
        }
    return out


def summary(
    rows: Sequence[AuditRow],
    *,
    rank_by: str,
    samples: int,
    epsilon: float,
    rho: float,
    tau: float,
    match_loss: bool = False,
    curvature: str = "hessian",
) -> dict[str, Any]:
    """The audit as ``--json`` prints it.

    The rows, flattest first by ``rank_by`` with ranks and ties, the measures' disagreements, the
    settings, and with ``match_loss`` what survives it.
    """
    measures = [r.measures for r in rows]
    order, rank, is_tied = ranks(measures, rank_by)
    labels = [Path(r.checkpoint).name for r in rows]
    payload: dict[str, Any] = {
        "checkpoints": [r.as_dict() for r in rows],
        "ranking": [rows[i].checkpoint for i in order],
        "ranks": [rank[i] for i in order],
        "ties": [is_tied[i] for i in order],
        "disagreements": disagreements(measures, labels),
        "rank_by": rank_by,
        "curvature": curvature,
        "samples": samples,
        "epsilon": epsilon,
        "rho": rho,
        "tau": tau,
    }
    if match_loss:
        payload["survives_match_loss"] = survival(rows)
    return payload


def save_report(path: Path, payload: dict[str, Any], rows: Sequence[AuditRow]) -> dict[str, Any]:
    """Write the markdown report of ``payload`` to ``path``.

    Write the markdown report of ``payload`` (:func:`summary` of ``rows``) to ``path``, with
    Fig. 5 beside it when every row has a density; returns ``payload`` with ``figures`` and
    ``report`` added.
    """
    payload = {**payload, "figures": report_figures(path, rows)}
    write_report(path, payload, rows)
    return {**payload, "report": str(path)}


def figure_path(report: Path) -> Path:
    """Where the report's Fig. 5 goes: ``<report stem>-fig5.png`` beside it."""
    return report.with_name(f"{report.stem}-fig5.png")


def check_report(report: Path) -> None:
    """Refuse, before any measuring, a report (or the figure beside it) that cannot be written."""
    files.check_output(report, "report", size=64 * 1024)
    files.check_output(figure_path(report), "figure", size=1024 * 1024)


def report_figures(report: Path, rows: Sequence[AuditRow]) -> dict[str, str]:
    """Fig. 5 of the audited checkpoints beside the report (when their densities were measured)."""
    # lazy: matplotlib, only for --report's figures
    from landscape_cli import plotting

    results = [read_hessian(r.results, r.hessian_source) for r in rows]
    if any(h.report.density is None or h.report.trace is None for h in results):
        return {}
    labels = [Path(r.checkpoint).stem for r in rows]
    target = figure_path(report)
    plotting.save_figure(plotting.draw_spectra(results, labels), target)
    return {"fig5": str(target)}


def write_report(path: Path, payload: dict[str, Any], rows: Sequence[AuditRow]) -> None:
    """A markdown report: the ranked table, the loss-matched comparison, and how to read it.

    ``payload`` is :func:`summary` of ``rows`` (the table's cells come from their measures).
    """
    lines = [
        "# Flatness audit",
        "",
        f"{len(rows)} checkpoint(s), {payload['samples']} samples, ranked flattest first by "
        f"`{payload['rank_by']}`. 1-D sharpness radius ε = {payload['epsilon']}, adaptive "
        f"sharpness radius ρ = {payload['rho']}. Each value is followed by its uncertainty; "
        "ranks marked ≈ are equal within it.",
        "",
        "| # | checkpoint | " + " | ".join(headers(payload["tau"])) + " |",
        "|---|---|" + "---|" * len(COLUMNS),
    ]
    index = {r.checkpoint: r.measures for r in rows}
    for ck, rank, tie in zip(payload["ranking"], payload["ranks"], payload["ties"], strict=True):
        row_cells = cells(index[ck])
        lines.append(
            f"| {rank_label(rank, tie)} | `{Path(ck).name}` | " + " | ".join(row_cells) + " |"
        )
    if payload.get("float32_precision") == "tf32":
        lines += [
            "",
            "Measured with TF32 allowed (`--allow-tf32`): on an NVIDIA GPU each float32 product "
            "carries ~1e-3 relative error, so the values and their uncertainties are approximate.",
        ]
    if payload.get("disagreements"):
        lines += ["", "The measures disagree on an order:", ""]
        lines += [f"- {note}" for note in payload["disagreements"]]
    lines += _survival_lines(payload.get("survives_match_loss"))
    for name, figure in payload.get("figures", {}).items():
        lines += ["", f"![{name}: top eigenvalues, traces, densities]({Path(figure).name})"]
    lines += _reading_lines(payload["tau"])

    text = "\n".join(lines).encode("utf-8")
    files.save(path, text, what="report", product="the report")


def _survival_lines(surv: dict[str, dict[str, Any]] | None) -> list[str]:
    """The report's section on which differences survive matching the training loss."""
    if not surv:
        return []
    lines = [
        "",
        "## Which differences survive matching the training loss",
        "",
        "Each model's logits were divided by a temperature that brings its training loss to "
        "the largest of the group (same predictions, less confidence), and measured again.",
        "",
        "| measure | sharpest/flattest raw | at matched loss | same order |",
        "|---|---|---|---|",
    ]
    for key, stats in surv.items():
        lines.append(
            f"| {key} | {fmt(stats['ratio_raw'], '{:.3g}')}× | "
            f"{fmt(stats['ratio_matched'], '{:.3g}')}× | {'yes' if stats['same_order'] else 'no'} |"
        )
    return lines


def _reading_lines(tau: float) -> list[str]:
    """The report's closing section: what each number measures."""
    return [
        "",
        "## Reading the numbers",
        "",
        "- λmax and trace are the curvature of the mean training loss on these samples; they grow "
        "with confidence (lower loss, larger logits) and change under layer rescalings that leave "
        "the function unchanged, so compare them next to the training loss and ‖θ‖.",
        "- 1-D sharpness: the largest loss increase within ε along filter-normalised random "
        "directions (Li et al. 2018).",
        "- Adaptive sharpness: the worst-case loss increase in a ball scaled elementwise by |w| "
        "(Andriushchenko et al. 2023), invariant to those rescalings.",
        f"- Negative mass: the share of the SLQ spectrum below −τ·λmax, τ = {tau:g} "
        "(a saddle or an unconverged point has some; near-zero Ritz values of either sign "
        "do not count).",
        "- Uncertainties: λmax ± its Lanczos residual, trace ± the half-width of its 95 % CI, "
        "each sharpness ± the spread of its random directions or restarts.",
        "",
    ]
