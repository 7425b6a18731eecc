"""``landscape hessian CKPT``: top-k eigenvalues, trace and eigenvalue density of the Hessian."""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Annotated

import typer

from landscape_cli.commands import _common as c
from landscape_cli.commands._options import grouped


@dataclass(frozen=True)
class HessianEstimateOptions:
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
    block_size: Annotated[
        int,
        typer.Option(
            help="Block Lanczos width to start from (0: automatic, 1 for one eigenvalue, else 2, "
            "grown while eigenvalues cluster; 1: single-vector Lanczos, which cannot tell "
            "multiplicities).",
            rich_help_panel=c.ESTIMATE_PANEL,
        ),
    ] = 0
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
            help="Add SLQ probes (at least 2) until a 95 % bound of the density's "
            "Wasserstein-1 error is at most this fraction of the spectral range (0: use all "
            "--density-probes).",
            rich_help_panel=c.ESTIMATE_PANEL,
        ),
    ] = 3e-3
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
    sample_sets: Annotated[
        int,
        typer.Option(
            help="Also measure the top-k and the trace on this many disjoint sample sets of "
            "--samples each (seeded, class-stratified; the first is the run's own) and report "
            "their spread.",
            rich_help_panel=c.ESTIMATE_PANEL,
        ),
    ] = 1


@dataclass(frozen=True)
class HessianRunOptions:
    """How to run: the keyword arguments of :func:`~landscape_cli.jobs.hessian_job`."""

    engine: Annotated[
        str,
        typer.Option(
            help="lanczos (landscape's certified estimators) or pyhessian (PyHessian's power "
            "iteration and Hutchinson with its defaults, to reproduce published numbers).",
            rich_help_panel=c.ESTIMATE_PANEL,
        ),
    ] = "lanczos"
    curvature: c.CurvatureOpt = "hessian"
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
    allow_tf32: c.AllowTf32Opt = False


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
    estimate: HessianEstimateOptions,
    run: HessianRunOptions,
    source: c.SourceOptions,
    selection: c.ParamOptions,
    output: Output,
) -> None:
    """Top-k Hessian eigenvalues (Lanczos), trace (Hutchinson-type) and density (SLQ).

    With --engine pyhessian the top-k and the trace are PyHessian's (power iteration and
    Hutchinson, its defaults); the density stays landscape's.
    """
    from landscape_cli import hessian as hs
    from landscape_cli.jobs import hessian_job

    settings = hs.HessianSettings(**asdict(estimate), seed=source.seed)
    unit = "HVPs (at most)" if run.curvature == "hessian" else "products (at most)"
    with c.progress("hessian", unit) as progress:
        report, out_path, work = hessian_job(
            checkpoint,
            settings,
            source=source.build(),
            out=output.out,
            label=output.label,
            overwrite=output.overwrite,
            on_phase=lambda name, budget: progress.phase(name, budget),
            on_hvp=progress.advance,
            params=selection.build(),
            **asdict(run),
        )
    _show(
        report, work, out_path, output.json_out, c.console(), engine=run.engine,
        allow_tf32=run.allow_tf32,
    )  # fmt: skip


def _show(
    report, work, out_path: Path, json_out: bool, console, engine: str = "lanczos",
    allow_tf32: bool = False,
) -> None:  # fmt: skip
    if json_out:
        c.print_json(_as_json(report, work, out_path, engine, allow_tf32))
    else:
        console.print(_table(report, work, out_path, engine, allow_tf32))


def _as_json(report, work, out_path: Path, engine: str, allow_tf32: bool = False) -> dict:
    """The ``--json`` object of one run."""
    from landscape_cli.precision import precision_name

    top, tr, dens = report.top, report.trace, report.density
    return {
        "checkpoint": str(work.loaded.path),
        "engine": engine,
        "curvature": report.curvature,
        "float32_precision": precision_name(allow_tf32),
        "eigenvalues": top.eigenvalues if top else [],
        "sample_sets": _sets_json(report.sample_sets),
        "residuals": top.residuals if top else [],
        "converged": top.converged if top else [],
        "gaps": top.gaps if top is not None and top.gaps is not None else [],
        "multiplicity_resolved": top.multiplicity_resolved if top else None,
        "largest_cluster": top.largest_cluster if top else None,
        "lambda_min": top.lambda_min if top else None,
        **_krylov_json(top),
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
        "param_names": list(report.param_names),
        "skipped_params": list(report.skipped_params),
        "skipped_reasons": list(report.skipped_reasons),
        "loss": report.loss_value,
        "bn_mode": report.bn_mode,
        "device": report.device,
        "seconds": report.seconds,
        "out": str(out_path),
    }


def _sets_json(sets) -> dict | None:
    """The sample sets' values, hashes, means and spreads for ``--json`` (None without)."""
    if sets is None:
        return None
    lam_mean, lam_std = sets.spread(sets.lambda_max)
    tr_mean, tr_std = sets.spread(sets.trace)
    return {
        "sets": sets.sets,
        "lambda_max": sets.lambda_max,
        "eigenvalues": sets.eigenvalues,
        "trace": sets.trace,
        "trace_stderr": sets.trace_stderr,
        "samples_sha256": list(sets.samples_sha256),
        "lambda_max_mean": lam_mean,
        "lambda_max_std": lam_std,
        "trace_mean": tr_mean,
        "trace_std": tr_std,
    }


def _sets_rows(table, sets) -> None:
    """λmax and the trace over the sample sets: mean ± spread, and the range."""
    import numpy as np

    lam_mean, lam_std = sets.spread(sets.lambda_max)
    if lam_mean == lam_mean:
        table.add_row(
            f"λ1 over {sets.sets} sample sets",
            f"{lam_mean:.6g}",
            f"± {lam_std:.3g} (spread), from {sets.lambda_max.min():.6g} to "
            f"{sets.lambda_max.max():.6g}",
        )
    tr_mean, tr_std = sets.spread(sets.trace)
    if tr_mean == tr_mean:
        table.add_row(
            f"trace over {sets.sets} sample sets",
            f"{tr_mean:.6g}",
            f"± {tr_std:.3g} (spread), each ± {np.nanmax(sets.trace_stderr):.2g} at most "
            "(its own standard error)",
        )


def _krylov_json(top) -> dict:
    """The Krylov run's facts for ``--json`` (none for PyHessian, which keeps no basis)."""
    if top is None or not top.basis_dtype:
        return {}
    return {
        "block_size": top.block_size,
        "lanczos_basis_dtype": top.basis_dtype,
        "lanczos_orthogonality": top.orthogonality,
    }


def _top_rows(table, top) -> None:
    """One row per eigenvalue (residual, gap to the next Ritz value), then the multiplicities."""
    gaps = top.gaps if top.gaps is not None else [None] * len(top.eigenvalues)
    for i, (lam, res, ok, gap) in enumerate(
        zip(top.eigenvalues, top.residuals, top.converged, gaps, strict=True)
    ):
        detail = f"residual {res:.2e}"
        if gap is not None:
            detail += f", gap {gap:.2e}"
        table.add_row(f"λ{i + 1}", f"{lam:.6g}", detail + ("" if ok else " (not converged)"))
    if not top.basis_dtype:  # PyHessian: power iteration says nothing of multiplicities
        table.add_row("multiplicities", "not checked", "power iteration finds one copy at most")
    elif top.multiplicity_resolved:
        table.add_row(
            "multiplicities",
            "resolved",
            f"no cluster with a reported value below it filled the block of {top.block_size} "
            f"(largest cluster {top.largest_cluster})",
        )
    else:
        table.add_row(
            "multiplicities",
            "NOT resolved",
            f"a cluster filled the block of {top.block_size}: copies of a repeated eigenvalue "
            "may be missing; raise --max-steps (or --block-size)",
        )


def _table(report, work, out_path: Path, engine: str, allow_tf32: bool = False):
    """The rich table of one run: each estimate with its uncertainty, then the run's facts."""
    from rich.table import Table

    from landscape_cli.hessian.curvature import CURVATURE_NAMES

    top, tr, dens = report.top, report.trace, report.density
    by = " by PyHessian" if engine == "pyhessian" else ""
    what = CURVATURE_NAMES.get(report.curvature, report.curvature)
    table = Table(title=f"{what} of {work.loaded.path.name} ({report.samples} samples){by}")
    table.add_column("measure")
    table.add_column("value", justify="right")
    table.add_column("detail")
    if top is not None:
        _top_rows(table, top)
        if top.lambda_min == top.lambda_min:  # NaN with --engine pyhessian: no Krylov space
            table.add_row(
                "λmin (Krylov)", f"{top.lambda_min:.6g}", f"residual {top.lambda_min_residual:.2e}"
            )
            table.add_row(
                "Krylov basis",
                f"{top.steps} rows",
                f"block {top.block_size}, {top.basis_dtype}, orthogonality max|QQᵀ − I| "
                f"{top.orthogonality:.1e}",
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
    if report.sample_sets is not None:
        _sets_rows(table, report.sample_sets)
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
    products = "HVPs" if report.curvature == "hessian" else "products"
    table.add_row(products, str(report.hvp_count), f"{report.seconds:.1f} s on {report.device}")
    table.add_row(
        "parameters", f"{report.num_params:,}", f"in {len(report.param_names)} tensors measured"
    )
    tf32 = c.tf32_note(allow_tf32, report.device, report.dtype)
    if tf32:
        table.add_row("TF32", "allowed", tf32)
    if report.skipped_params:
        table.add_row("skipped", str(len(report.skipped_params)), _skipped_detail(report))
    table.add_row("results", str(out_path), "")
    return table


def _skipped_detail(report) -> str:
    """How many parameters were left out for each reason, and the first few names."""
    counts = Counter(report.skipped_reasons)
    names = ", ".join(report.skipped_params[:3]) + (", …" if len(report.skipped_params) > 3 else "")
    why = ", ".join(f"{n} {reason}" for reason, n in counts.items())
    return f"tensors left out ({why}): {names}"
