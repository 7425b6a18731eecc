"""``landscape audit CKPT...``: flatness measures of several checkpoints, ranked, in one table."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from landscape_cli.commands import _common as c
from landscape_cli.errors import LandscapeError

COLUMNS = [
    ("lambda_max", "λmax", "{:.4g}"),
    ("trace", "trace", "{:.4g}"),
    ("negative_mass", "neg. mass", "{:.3f}"),
    ("sharpness_1d", "1-D sharp.", "{:.4g}"),
    ("adaptive_sharpness", "adaptive", "{:.4g}"),
    ("train_loss", "train loss", "{:.4g}"),
    ("param_norm", "‖θ‖", "{:.4g}"),
]


def audit(
    checkpoints: Annotated[list[Path], typer.Argument(help="Checkpoints to audit.")],
    top_k: Annotated[
        int, typer.Option(help="Top eigenvalues per checkpoint.", rich_help_panel=c.ESTIMATE_PANEL)
    ] = 5,
    tol: Annotated[
        float,
        typer.Option(
            help="Lanczos: stop when every residual ‖Hv−λv‖ ≤ tol·|λ| (as in hessian).",
            rich_help_panel=c.ESTIMATE_PANEL,
        ),
    ] = 1e-4,
    max_steps: Annotated[
        int,
        typer.Option(
            help="Most Lanczos steps (HVPs) for the top-k (as in hessian).",
            rich_help_panel=c.ESTIMATE_PANEL,
        ),
    ] = 100,
    trace_probes: Annotated[
        int, typer.Option(help="Most trace probes.", rich_help_panel=c.ESTIMATE_PANEL)
    ] = 50,
    density_probes: Annotated[
        int, typer.Option(help="SLQ probes (0 skips).", rich_help_panel=c.ESTIMATE_PANEL)
    ] = 5,
    lanczos_steps: Annotated[
        int, typer.Option(help="SLQ steps per probe.", rich_help_panel=c.ESTIMATE_PANEL)
    ] = 40,
    epsilon: Annotated[
        float,
        typer.Option(
            help="Radius of the 1-D sharpness (filter-normalised units).",
            rich_help_panel=c.ESTIMATE_PANEL,
        ),
    ] = 0.05,
    rho: Annotated[
        float,
        typer.Option(help="Radius of the adaptive sharpness.", rich_help_panel=c.ESTIMATE_PANEL),
    ] = 0.05,
    rank_by: Annotated[
        str,
        typer.Option(
            help="lambda_max, trace, sharpness_1d or adaptive_sharpness.",
            rich_help_panel=c.OUTPUT_PANEL,
        ),
    ] = "lambda_max",
    match_loss: Annotated[
        bool,
        typer.Option(
            "--match-loss",
            help="Also measure with logits scaled to a common training loss.",
            rich_help_panel=c.ESTIMATE_PANEL,
        ),
    ] = False,
    loss: Annotated[
        str | None,
        typer.Option(
            help="ce or mse (default: the checkpoints' training loss).",
            rich_help_panel=c.MODEL_DATA_PANEL,
        ),
    ] = None,
    tau: Annotated[
        float,
        typer.Option(
            help="Negative mass: the share of the spectrum below −τ·λmax.",
            rich_help_panel=c.ESTIMATE_PANEL,
        ),
    ] = 1e-2,
    report: Annotated[
        Path | None,
        typer.Option(
            "--report",
            help="Also write a markdown report (.md) here, with Fig. 5 beside it.",
            rich_help_panel=c.OUTPUT_PANEL,
        ),
    ] = None,
    model: c.ModelOpt = None,
    model_option: c.ModelOptionOpt = None,
    dataset: c.DatasetOpt = None,
    data_root: c.DataRootOpt = None,
    split: c.SplitOpt = "train",
    samples: c.SamplesOpt = 1024,
    batch_size: c.BatchSizeOpt = 256,
    device: c.DeviceOpt = "auto",
    seed: c.SeedOpt = 0,
    trust_checkpoint: c.TrustOpt = False,
    text_column: c.TextColumnOpt = None,
    label_column: c.LabelColumnOpt = "label",
    out: Annotated[
        str | None,
        typer.Option(
            "--out",
            hidden=True,  # refused with a pointer to --report (see below)
            help="Not an audit option: the report is --report.",
            rich_help_panel=c.OUTPUT_PANEL,
        ),
    ] = None,
    overwrite: Annotated[
        bool,
        typer.Option(
            "--overwrite",
            help="Replace an /audit made with other options, or drop the results of another "
            "checkpoint in a results file.",
            rich_help_panel=c.OUTPUT_PANEL,
        ),
    ] = False,
    json_out: c.JsonOpt = False,
) -> None:
    """Rank checkpoints from flattest to sharpest; each one's numbers go to its results file.

    A compatible /hessian already in a checkpoint's results file (same samples, loss, seed,
    eval-mode BatchNorm, enough eigenvalues and probes) is reused; otherwise the audit's own
    Hessian measurements go to /audit/hessian. Differences within the measures' uncertainties
    rank as ties (≈), and measures that order two checkpoints differently are reported.
    """
    from landscape_cli import audit as au
    from landscape_cli import distributed
    from landscape_cli.pipeline import audit_job
    from landscape_cli.results import check_output_file

    if out is not None:  # --out is the results file in the other commands: never the report here
        raise LandscapeError(
            "audit has no --out: each checkpoint's numbers go to its own results file "
            "(CKPT.h5); write the markdown report with --report FILE.md"
        )
    report_path = report
    checks = [
        (len(checkpoints) >= 1, "give at least one checkpoint"),
        (rank_by in au.MEASURES, f"--rank-by must be one of {', '.join(au.MEASURES)}"),
        (loss in (None, "ce", "mse"), "--loss must be ce or mse"),
        (top_k >= 1, "--top-k must be >= 1"),
        (tol > 0, "--tol must be > 0"),
        (max_steps >= 1, "--max-steps must be >= 1"),
        (
            top_k <= max_steps,
            f"--top-k {top_k} needs at least as many Lanczos steps: raise --max-steps "
            f"(now {max_steps}) or lower --top-k",
        ),
        (epsilon > 0 and rho > 0, "--epsilon and --rho must be > 0"),
        (0 <= tau < 1, "--tau must be in [0, 1)"),
        (report_path is None or report_path.suffix == ".md", "the report must be a .md file"),
    ]
    for ok, message in checks:
        if not ok:
            raise LandscapeError(message)
    if report_path is not None:
        check_output_file(report_path, "report")
    source = c.source(
        model,
        model_option,
        dataset,
        data_root,
        split,
        samples,
        batch_size,
        trust_checkpoint,
        seed,
        text_column,
        label_column,
    )
    settings = au.AuditSettings(
        top_k=top_k,
        tol=tol,
        max_steps=max_steps,
        trace_probes=trace_probes,
        density_probes=density_probes,
        lanczos_steps=lanczos_steps,
        epsilon=epsilon,
        rho=rho,
        seed=seed,
        loss=loss or "",
        tau=tau,
    )
    with c.progress("audit") as progress:
        rows, works = audit_job(
            checkpoints,
            settings,
            source=source,
            match_loss=match_loss,
            device=device,
            overwrite=overwrite,
            on_phase=lambda name, most, unit: progress.phase(name, most, unit),
            on_advance=progress.advance,
        )
    order, rank, is_tied = au.ranks(rows, rank_by)
    labels = [Path(r["checkpoint"]).name for r in rows]
    payload = {
        "checkpoints": rows,
        "ranking": [rows[i]["checkpoint"] for i in order],
        "ranks": [rank[i] for i in order],
        "ties": [is_tied[i] for i in order],
        "disagreements": au.disagreements(rows, labels),
        "rank_by": rank_by,
        "samples": works[0].samples,
        "epsilon": epsilon,
        "rho": rho,
        "tau": tau,
    }
    if match_loss:
        payload["survives_match_loss"] = survival(rows)
    if report_path is not None and distributed.is_main():
        payload["figures"] = report_figures(report_path, rows)
        write_report(report_path, payload)
        payload["report"] = str(report_path)
    if json_out:
        c.print_json(payload)
        return
    _table(rows, order, rank, is_tied, rank_by, match_loss, tau, payload["disagreements"])


def survival(rows: list[dict]) -> dict[str, dict[str, Any]]:
    """For each measure: the sharpest/flattest ratio raw and loss-matched, and whether the
    ranking of the checkpoints stays the same once the training losses are matched (no pair
    swaps places beyond the uncertainties)."""
    from landscape_cli.audit import MEASURES, tied

    out = {}
    matched = [r["matched"] for r in rows]
    for key in MEASURES:
        raw_vals = [r.get(key) for r in rows]
        m_vals = [m.get(key) for m in matched]
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
                and not tied(rows[i], rows[j], key)
                and not tied(matched[i], matched[j], key)
                for i in range(len(rows))
                for j in range(i + 1, len(rows))
            ),
        }
    return out


def _fmt(value: Any, spec: str) -> str:
    return "–" if value is None else spec.format(value)


#: Where each measure's uncertainty is (printed as "value ± u" beside it).
PLUS_MINUS = {
    "lambda_max": "lambda_max_residual",
    "sharpness_1d": "sharpness_1d_spread",
    "adaptive_sharpness": "adaptive_sharpness_spread",
}


def _cells(r: dict, tau: float) -> list[str]:
    from landscape_cli.audit import uncertainty

    cells = []
    for key, _, spec in COLUMNS:
        value = r.get(key)
        if value is not None and key in ("lambda_max", "trace", *PLUS_MINUS):
            cells.append(f"{spec.format(value)} ± {uncertainty(r, key):.2g}")
        else:
            cells.append(_fmt(value, spec))
    return cells


def _headers(tau: float) -> list[str]:
    return [f"neg. mass (<−{tau:g}·λmax)" if k == "negative_mass" else h for k, h, _ in COLUMNS]


def _rank_label(rank: int, tied: bool) -> str:
    return f"≈{rank}" if tied else str(rank)


def _table(rows, order, rank, is_tied, rank_by, match_loss, tau, notes) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(
        title=f"flatness audit, flattest first by {rank_by} (≈: equal within uncertainty)"
    )
    table.add_column("#", justify="right")
    table.add_column("checkpoint")
    for head in _headers(tau):
        table.add_column(head, justify="right")
    if match_loss:
        table.add_column(f"{rank_by} @ matched loss", justify="right")
    for i in order:
        r = rows[i]
        cells = _cells(r, tau)
        if match_loss:
            cells.append(_fmt(r["matched"].get(rank_by), "{:.4g}"))
        table.add_row(_rank_label(rank[i], is_tied[i]), Path(r["checkpoint"]).name, *cells)
    console = Console()
    console.print(table)
    console.print(
        f"neg. mass: SLQ weight below −τ·λmax, τ = {tau:g}. ±: λmax its Lanczos residual, trace "
        "its 95 % CI, sharpness the spread over directions/restarts."
    )
    for note in notes:
        console.print(f"measures disagree: {note}")


def report_figures(report: Path, rows: list[dict]) -> dict[str, str]:
    """Fig. 5 of the audited checkpoints beside the report (when their densities were measured)."""
    from landscape_cli import plotting
    from landscape_cli.results import read_hessian

    results = [read_hessian(r["results"], r["hessian_source"]) for r in rows]
    if any(h["density"] is None or h["trace"] is None for h in results):
        return {}
    labels = [Path(r["checkpoint"]).stem for r in rows]
    target = report.with_name(f"{report.stem}-fig5.png")
    plotting.save_figure(plotting.fig5(results, labels), target)
    return {"fig5": str(target)}


def write_report(path: Path, payload: dict) -> None:
    """A markdown report: the ranked table, the loss-matched comparison, and how to read it."""
    rows = payload["checkpoints"]
    lines = [
        "# Flatness audit",
        "",
        f"{len(rows)} checkpoint(s), {payload['samples']} samples, ranked flattest first by "
        f"`{payload['rank_by']}`. 1-D sharpness radius ε = {payload['epsilon']}, adaptive "
        f"sharpness radius ρ = {payload['rho']}. Each value is followed by its uncertainty; "
        "ranks marked ≈ are equal within it.",
        "",
        "| # | checkpoint | " + " | ".join(_headers(payload["tau"])) + " |",
        "|---|---|" + "---|" * len(COLUMNS),
    ]
    index = {r["checkpoint"]: r for r in rows}
    for ck, rank, tie in zip(payload["ranking"], payload["ranks"], payload["ties"], strict=True):
        cells = _cells(index[ck], payload["tau"])
        lines.append(
            f"| {_rank_label(rank, tie)} | `{Path(ck).name}` | " + " | ".join(cells) + " |"
        )
    if payload.get("disagreements"):
        lines += ["", "The measures disagree on an order:", ""]
        lines += [f"- {note}" for note in payload["disagreements"]]
    surv = payload.get("survives_match_loss")
    if surv:
        lines += [
            "",
            "## Which differences survive matching the training loss",
            "",
            "Each model's logits were divided by a temperature that brings its training loss to "
            "the largest of the group (same predictions, less confidence), and measured again.",
            "",
            "| measure | sharpest/flattest raw | at matched loss | same order |",
            "|---|---|---|---|",
        ]
        for key, s in surv.items():
            lines.append(
                f"| {key} | {_fmt(s['ratio_raw'], '{:.3g}')}× | "
                f"{_fmt(s['ratio_matched'], '{:.3g}')}× | {'yes' if s['same_order'] else 'no'} |"
            )
    for name, figure in payload.get("figures", {}).items():
        lines += ["", f"![{name}: top eigenvalues, traces, densities]({Path(figure).name})"]
    lines += [
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
        f"- Negative mass: the share of the SLQ spectrum below −τ·λmax, τ = {payload['tau']:g} "
        "(a saddle or an unconverged point has some; near-zero Ritz values of either sign "
        "do not count).",
        "- Uncertainties: λmax ± its Lanczos residual, trace ± the half-width of its 95 % CI, "
        "each sharpness ± the spread of its random directions or restarts.",
        "",
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines), encoding="utf-8")
