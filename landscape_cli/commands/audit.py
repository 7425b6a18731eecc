"""``landscape audit CKPT...``: flatness measures of several checkpoints, ranked, in one table."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from landscape_cli.commands import _common as c
from landscape_cli.commands._options import grouped
from landscape_cli.errors import LandscapeError, check_choice

if TYPE_CHECKING:
    from landscape_cli.audit import AuditRow


@dataclass(frozen=True)
class AuditEstimateOptions:
    """How hard to measure: the fields of ``AuditSettings`` that the command sets."""

    top_k: Annotated[
        int, typer.Option(help="Top eigenvalues per checkpoint.", rich_help_panel=c.ESTIMATE_PANEL)
    ] = 5
    tol: Annotated[
        float,
        typer.Option(
            help="Lanczos: stop when every residual ‖Hv−λv‖ ≤ tol·|λ| (as in hessian).",
            rich_help_panel=c.ESTIMATE_PANEL,
        ),
    ] = 1e-4
    max_steps: Annotated[
        int,
        typer.Option(
            help="Most Lanczos steps (HVPs) for the top-k (as in hessian).",
            rich_help_panel=c.ESTIMATE_PANEL,
        ),
    ] = 100
    trace_probes: Annotated[
        int, typer.Option(help="Most trace probes.", rich_help_panel=c.ESTIMATE_PANEL)
    ] = 50
    density_probes: Annotated[
        int, typer.Option(help="SLQ probes (0 skips).", rich_help_panel=c.ESTIMATE_PANEL)
    ] = 5
    lanczos_steps: Annotated[
        int, typer.Option(help="SLQ steps per probe.", rich_help_panel=c.ESTIMATE_PANEL)
    ] = 40
    epsilon: Annotated[
        float,
        typer.Option(
            help="Radius of the 1-D sharpness (filter-normalised units).",
            rich_help_panel=c.ESTIMATE_PANEL,
        ),
    ] = 0.05
    rho: Annotated[
        float,
        typer.Option(help="Radius of the adaptive sharpness.", rich_help_panel=c.ESTIMATE_PANEL),
    ] = 0.05
    tau: Annotated[
        float,
        typer.Option(
            help="Negative mass: the share of the spectrum below −τ·λmax.",
            rich_help_panel=c.ESTIMATE_PANEL,
        ),
    ] = 1e-2
    curvature: c.CurvatureOpt = "hessian"
    sample_sets: Annotated[
        int,
        typer.Option(
            help="Also measure λmax and the trace on this many disjoint sample sets of --samples "
            "each; their spread joins the uncertainties of the ranking and its ties.",
            rich_help_panel=c.ESTIMATE_PANEL,
        ),
    ] = 1


@dataclass(frozen=True)
class AuditSource(c.SourceOptions):
    """The model and data options; the audit's batches are of 256 samples."""

    batch_size: c.BatchSizeOpt = 256


@dataclass(frozen=True)
class Output:
    """The ranking, the report and how the results are shown."""

    rank_by: Annotated[
        str,
        typer.Option(
            help="lambda_max, trace, sharpness_1d or adaptive_sharpness.",
            rich_help_panel=c.OUTPUT_PANEL,
        ),
    ] = "lambda_max"
    report: Annotated[
        Path | None,
        typer.Option(
            "--report",
            help="Also write a markdown report (.md) here, with Fig. 5 beside it.",
            rich_help_panel=c.OUTPUT_PANEL,
        ),
    ] = None
    out: Annotated[
        str | None,
        typer.Option(
            "--out",
            hidden=True,  # refused with a pointer to --report (see below)
            help="Not an audit option: the report is --report.",
            rich_help_panel=c.OUTPUT_PANEL,
        ),
    ] = None
    overwrite: Annotated[
        bool,
        typer.Option(
            "--overwrite",
            help="Replace an /audit made with other options, or drop the results of another "
            "checkpoint in a results file.",
            rich_help_panel=c.OUTPUT_PANEL,
        ),
    ] = False
    json_out: c.JsonOpt = False


@grouped
def audit(
    checkpoints: Annotated[list[Path], typer.Argument(help="Checkpoints to audit.")],
    *,
    estimate: AuditEstimateOptions,
    match_loss: Annotated[
        bool,
        typer.Option(
            "--match-loss",
            help="Also measure with logits scaled to a common training loss.",
            rich_help_panel=c.ESTIMATE_PANEL,
        ),
    ] = False,
    loss: c.LossOpt = None,
    device: c.DeviceOpt = "auto",
    allow_tf32: c.AllowTf32Opt = False,
    source: AuditSource,
    selection: c.ParamOptions,
    output: Output,
) -> None:
    """Rank checkpoints from flattest to sharpest; each one's numbers go to its results file.

    A compatible /hessian already in a checkpoint's results file (same samples, loss, seed,
    eval-mode BatchNorm, enough eigenvalues and probes) is reused; otherwise the audit's own
    Hessian measurements go to /audit/hessian. Differences within the measures' uncertainties
    rank as ties (≈), and measures that order two checkpoints differently are reported.
    """
    from rich.console import Console

    from landscape_cli import audit as au
    from landscape_cli import distributed
    from landscape_cli.jobs import audit_job, audit_report
    from landscape_cli.precision import precision_name

    _check_output(output)
    settings = au.AuditSettings(
        **asdict(estimate),
        seed=source.seed,
        loss=loss or "",
        params=tuple(selection.params or ()),
        include_frozen=selection.include_frozen,
    )
    with c.progress("audit") as progress:
        rows, works = audit_job(
            checkpoints,
            settings,
            source=source.build(),
            match_loss=match_loss,
            device=device,
            overwrite=output.overwrite,
            on_phase=lambda name, most, unit: progress.phase(name, most, unit),
            on_advance=progress.advance,
            allow_tf32=allow_tf32,
        )
    payload = audit_report.summary(
        rows,
        rank_by=output.rank_by,
        samples=works[0].samples,
        epsilon=estimate.epsilon,
        rho=estimate.rho,
        tau=estimate.tau,
        match_loss=match_loss,
        curvature=estimate.curvature,
    )
    payload["float32_precision"] = precision_name(allow_tf32)
    if output.report is not None and distributed.is_main():
        payload = audit_report.save_report(output.report, payload, rows)
    if output.json_out:
        c.print_json(payload)
        return
    _table(payload, rows, match_loss)
    tf32 = c.tf32_note(allow_tf32)
    if tf32:
        Console().print(tf32)


def _check_output(output: Output) -> None:
    """The report's options, before anything is loaded; the report's folder is checked writable.

    The measures' settings are the library's to check (:func:`landscape_cli.jobs.audit_job`).
    """
    from landscape_cli.audit import MEASURES
    from landscape_cli.jobs.audit_report import check_report

    rank_by, report = output.rank_by, output.report
    if output.out is not None:  # --out is the other commands' results file, never the report
        raise LandscapeError(
            "audit has no --out: each checkpoint's numbers go to its own results file "
            "(CKPT.h5); write the markdown report with --report FILE.md"
        )
    check_choice("rank_by", rank_by, MEASURES, one_of=True)
    if report is not None and report.suffix != ".md":
        raise LandscapeError("the report must be a .md file")
    if report is not None:  # and the figure beside it: names, folder, type, space
        check_report(report)


def _table(payload: dict[str, Any], rows: list[AuditRow], match_loss: bool) -> None:
    """Print the ranked table, its legend and the measures' disagreements.

    The ranked table of :func:`landscape_cli.jobs.audit_report.summary` of ``rows``, its legend and
    the measures' disagreements.
    """
    from rich.table import Table

    from landscape_cli.audit import ranks
    from landscape_cli.hessian.curvature import CURVATURE_NAMES
    from landscape_cli.jobs.audit_report import cells, fmt, headers, rank_label

    rank_by, tau = payload["rank_by"], payload["tau"]
    curvature = payload.get("curvature", "hessian")
    of = (
        ""
        if curvature == "hessian"
        else f" (λmax, trace, neg. mass of the {CURVATURE_NAMES[curvature]})"
    )
    table = Table(
        title=f"flatness audit{of}, flattest first by {rank_by} (≈: equal within uncertainty)"
    )
    table.add_column("#", justify="right")
    table.add_column("checkpoint")
    for head in headers(tau):
        table.add_column(head, justify="right")
    if match_loss:
        table.add_column(f"{rank_by} @ matched loss", justify="right")
    order, rank, is_tied = ranks([r.measures for r in rows], rank_by)
    for i in order:
        row_cells = cells(rows[i].measures)
        if match_loss:
            row_cells.append(fmt(getattr(rows[i].matched, rank_by), "{:.4g}"))
        table.add_row(rank_label(rank[i], is_tied[i]), Path(rows[i].checkpoint).name, *row_cells)
    console = c.console()
    console.print(table)
    console.print(
        f"neg. mass: SLQ weight below −τ·λmax, τ = {tau:g}. ±: λmax its Lanczos residual, trace "
        "its 95 % CI, sharpness the spread over directions/restarts."
    )
    for note in payload["disagreements"]:
        console.print(f"measures disagree: {note}")
