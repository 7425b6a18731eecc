"""``landscape hessian CKPT``: top-k eigenvalues, trace and eigenvalue density of the Hessian."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Annotated

import typer

from landscape_cli.commands import _common as c
from landscape_cli.commands._options import grouped


@dataclass(frozen=True)
class Estimate:
    """What to estimate and how hard (the fields of ``HessianSettings``)."""

    top_k: Annotated[
        int,
        typer.Option(help="How many top eigenvalues (0 skips).", rich_help_panel=c.ESTIMATE_PANEL),
    ] = 5
    tol: Annotated[
        float,
        typer.Option(
            help="Stop when every residual ‖Hv−λv‖ ≤ tol·|λ|.", rich_help_panel=c.ESTIMATE_PANEL
        ),
    ] = 1e-4
    max_steps: Annotated[
        int,
        typer.Option(
            help="Most Lanczos steps (HVPs) for the top-k.", rich_help_panel=c.ESTIMATE_PANEL
        ),
    ] = 100
    trace_probes: Annotated[
        int, typer.Option(help="Most trace probes (0 skips).", rich_help_panel=c.ESTIMATE_PANEL)
    ] = 100
    trace_rtol: Annotated[
        float,
        typer.Option(
            help="Stop the trace at this relative standard error.", rich_help_panel=c.ESTIMATE_PANEL
        ),
    ] = 1e-2
    trace_method: Annotated[
        str,
        typer.Option(
            help="auto, hutchinson, hutch++ or deflated.", rich_help_panel=c.ESTIMATE_PANEL
        ),
    ] = "auto"
    density_probes: Annotated[
        int,
        typer.Option(
            help="Most SLQ probes (0 skips the density).", rich_help_panel=c.ESTIMATE_PANEL
        ),
    ] = 10
    density_tol: Annotated[
        float,
        typer.Option(
            help="Add SLQ probes (at least 2) until the density's estimated Wasserstein-1 error "
            "is at most this fraction of the spectral range (0: use all --density-probes).",
            rich_help_panel=c.ESTIMATE_PANEL,
        ),
    ] = 1e-3
    lanczos_steps: Annotated[
        int, typer.Option(help="SLQ Lanczos steps per probe.", rich_help_panel=c.ESTIMATE_PANEL)
    ] = 90
    density_sigma: Annotated[
        float,
        typer.Option(
            help="Gaussian width, relative to the spectral range.", rich_help_panel=c.ESTIMATE_PANEL
        ),
    ] = 0.005
    per_layer: Annotated[
        bool,
        typer.Option(
            "--per-layer",
            help="λmax and trace of each parameter's block.",
            rich_help_panel=c.ESTIMATE_PANEL,
        ),
    ] = False
    per_layer_probes: Annotated[
        int,
        typer.Option(
            help="--per-layer: Rademacher probes shared by the blocks' traces (at least 2; "
            "each block's standard error shrinks as 1/√probes).",
            rich_help_panel=c.ESTIMATE_PANEL,
        ),
    ] = 20
    eigenvectors: Annotated[
        bool,
        typer.Option(
            "--eigenvectors",
            help="Keep the top-k eigenvectors in the file.",
            rich_help_panel=c.ESTIMATE_PANEL,
        ),
    ] = False


@dataclass(frozen=True)
class Measure:
    """How to measure: the keyword arguments of :func:`~landscape_cli.pipeline.hessian_job`."""

    engine: Annotated[
        str,
        typer.Option(
            help="lanczos (landscape's certified estimators) or pyhessian (PyHessian's power "
            "iteration and Hutchinson with its defaults, to reproduce published numbers).",
            rich_help_panel=c.ESTIMATE_PANEL,
        ),
    ] = "lanczos"
    loss: c.LossOpt = None
    bn_mode: Annotated[
        str,
        typer.Option(
            help="eval (running stats) or train (batch stats).", rich_help_panel=c.MODEL_DATA_PANEL
        ),
    ] = "eval"
    dtype: Annotated[str, typer.Option(help="float32 or float64.", rich_help_panel=c.RUN_PANEL)] = (
        "float32"
    )
    cache_graphs: Annotated[
        bool | None,
        typer.Option(
            "--cache-graphs/--no-cache-graphs",
            help="Keep each batch's first-order graph (default: when it fits in 2 GiB).",
            rich_help_panel=c.RUN_PANEL,
        ),
    ] = None
    device: c.DeviceOpt = "auto"


@dataclass(frozen=True)
class Output:
    """Where the results go and how they are shown."""

    label: Annotated[
        str | None,
        typer.Option(help="Label in the results and figures.", rich_help_panel=c.OUTPUT_PANEL),
    ] = None
    out: c.OutOpt = None
    overwrite: Annotated[
        bool,
        typer.Option(
            "--overwrite",
            help="Replace a /hessian computed with other options, or drop the results of another "
            "checkpoint in --out.",
            rich_help_panel=c.OUTPUT_PANEL,
        ),
    ] = False
    json_out: c.JsonOpt = False


@grouped
def hessian(
    checkpoint: c.Checkpoint,
    estimate: Estimate,
    measure: Measure,
    source: c.SourceOptions,
    output: Output,
) -> None:
    """Top-k Hessian eigenvalues (Lanczos), trace (Hutchinson-type) and density (SLQ).

    With --engine pyhessian the top-k and the trace are PyHessian's (power iteration and
    Hutchinson, its defaults); the density stays landscape's.
    """
    from landscape_cli import hessian as hs
    from landscape_cli.pipeline import hessian_job

    settings = hs.HessianSettings(**asdict(estimate), seed=source.seed)
    with c.progress("hessian", "HVPs (at most)") as progress:
        report, out_path, work = hessian_job(
            checkpoint,
            settings,
            source=source.build(),
            out=output.out,
            label=output.label,
            overwrite=output.overwrite,
            on_phase=lambda name, budget: progress.phase(name, budget),
            on_hvp=progress.advance,
            **asdict(measure),
        )
    _show(report, work, out_path, output.json_out, c.console(), engine=measure.engine)


def _show(report, work, out_path: Path, json_out: bool, console, engine: str = "lanczos") -> None:
    if json_out:
        c.print_json(_as_json(report, work, out_path, engine))
    else:
        console.print(_table(report, work, out_path, engine))


def _as_json(report, work, out_path: Path, engine: str) -> dict:
    """The ``--json`` object of one run."""
    top, tr, dens = report.top, report.trace, report.density
    return {
        "checkpoint": str(work.loaded.path),
        "engine": engine,
        "eigenvalues": top.eigenvalues if top else [],
        "residuals": top.residuals if top else [],
        "converged": top.converged if top else [],
        "lambda_min": top.lambda_min if top else None,
        "lanczos_basis_dtype": top.basis_dtype if top else None,
        "lanczos_orthogonality": top.orthogonality if top else None,
        "trace": tr.estimate if tr else None,
        "trace_stderr": tr.stderr if tr else None,
        "trace_ci95": list(tr.ci95) if tr else None,
        "trace_method": tr.method if tr else None,
        "trace_probes": tr.probes if tr else None,
        "density_probes": dens.probes if dens else 0,
        "density_tol_achieved": dens.achieved_tol if dens else None,
        "per_layer": {
            layer.name: {
                "lambda_max": layer.lambda_max,
                "lambda_max_residual": layer.lambda_max_residual,
                "trace": layer.trace,
                "trace_stderr": layer.trace_stderr,
                "numel": layer.numel,
            }
            for layer in report.per_layer
        },
        "hvp_count": report.hvp_count,
        "samples": report.samples,
        "num_params": report.num_params,
        "skipped_params": list(report.skipped_params),
        "loss": report.loss_value,
        "bn_mode": report.bn_mode,
        "device": report.device,
        "seconds": report.seconds,
        "out": str(out_path),
    }


def _table(report, work, out_path: Path, engine: str):
    """The rich table of one run: each estimate with its uncertainty, then the run's facts."""
    from rich.table import Table

    top, tr, dens = report.top, report.trace, report.density
    by = " by PyHessian" if engine == "pyhessian" else ""
    table = Table(title=f"Hessian of {work.loaded.path.name} ({report.samples} samples){by}")
    table.add_column("measure")
    table.add_column("value", justify="right")
    table.add_column("detail")
    if top is not None:
        for i, (lam, res, ok) in enumerate(
            zip(top.eigenvalues, top.residuals, top.converged, strict=True)
        ):
            flag = "" if ok else " (not converged)"
            table.add_row(f"λ{i + 1}", f"{lam:.6g}", f"residual {res:.2e}{flag}")
        if top.lambda_min == top.lambda_min:  # NaN with --engine pyhessian: no Krylov space
            table.add_row(
                "λmin (Krylov)", f"{top.lambda_min:.6g}", f"residual {top.lambda_min_residual:.2e}"
            )
            table.add_row(
                "Krylov basis",
                f"{top.steps} rows",
                f"{top.basis_dtype}, orthogonality max|QQᵀ − I| {top.orthogonality:.1e}",
            )
    if tr is not None:
        table.add_row(
            "trace",
            f"{tr.estimate:.6g}",
            f"± {tr.stderr:.3g} (95 % CI {tr.ci95[0]:.4g} … {tr.ci95[1]:.4g}), "
            f"{tr.method}, {tr.probes} probes",
        )
    if dens is not None:
        table.add_row(
            "density",
            f"{dens.probes}×{dens.lanczos_steps}",
            f"SLQ nodes in [{dens.nodes.min():.4g}, {dens.nodes.max():.4g}], σ {dens.sigma:.3g}; "
            f"W1 error ≈ {dens.achieved_tol:.2%} of the range ({dens.probes} of at most "
            f"{dens.max_probes} probes)",
        )
    for layer in report.per_layer:
        table.add_row(
            f"  {layer.name}",
            f"{layer.lambda_max:.4g}",
            f"residual {layer.lambda_max_residual:.2e}; trace {layer.trace:.4g} "
            f"± {layer.trace_stderr:.2g} (standard error)",
        )
    table.add_row(
        "loss", f"{report.loss_value:.6g}", f"{report.split} split, {report.bn_mode}-mode BN"
    )
    if report.grad_norm == 0:
        table.add_row("gradient", "0", "exactly zero on these samples (a stationary point)")
    table.add_row("HVPs", str(report.hvp_count), f"{report.seconds:.1f} s on {report.device}")
    if report.skipped_params:
        table.add_row("skipped", str(len(report.skipped_params)), "parameters with no gradient")
    table.add_row("results", str(out_path), "")
    return table
