"""``landscape scan CKPT``: 1-D/2-D loss landscapes along filter-normalised or eigen directions."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from landscape_cli.commands import _common as c
from landscape_cli.commands._options import grouped

if TYPE_CHECKING:
    from landscape_cli.results import ScanResult


@dataclass(frozen=True)
class Grid:
    """The grid, the directions and the scan's name: the fields of ``ScanOptions`` but the seed."""

    dim: Annotated[
        int | None,
        typer.Option(
            help="1 or 2 dimensions (default 1; --direction pca: 2).", rich_help_panel=c.SCAN_PANEL
        ),
    ] = None
    points: Annotated[
        int, typer.Option(help="Grid points along x (and y).", rich_help_panel=c.SCAN_PANEL)
    ] = 51
    ypoints: Annotated[
        int | None,
        typer.Option(help="Grid points along y (default --points).", rich_help_panel=c.SCAN_PANEL),
    ] = None
    xrange: Annotated[
        tuple[float, float] | None,
        typer.Option(
            "--range",
            metavar="LO HI",
            help="x range (default -1 1; interpolation -0.5 1.5).",
            rich_help_panel=c.SCAN_PANEL,
        ),
    ] = None
    yrange: Annotated[
        tuple[float, float] | None,
        typer.Option(
            metavar="LO HI", help="y range (default: the x range).", rich_help_panel=c.SCAN_PANEL
        ),
    ] = None
    direction: Annotated[
        str,
        typer.Option(
            help="random, eigenvector, or pca (the plane of a training trajectory's two principal "
            "directions; needs --trajectory).",
            rich_help_panel=c.SCAN_PANEL,
        ),
    ] = "random"
    trajectory: Annotated[
        list[str] | None,
        typer.Option(
            "--trajectory",
            metavar="PATTERN",
            help="--direction pca: the run's snapshots, as files or quoted globs (repeatable), "
            "e.g. 'runs/cnn-epoch*.pt'; ordered by the epoch or step stored in them.",
            rich_help_panel=c.SCAN_PANEL,
        ),
    ] = None
    to: Annotated[
        list[Path] | None,
        typer.Option(
            "--to",
            help="Interpolate towards this checkpoint (twice for a plane).",
            rich_help_panel=c.SCAN_PANEL,
        ),
    ] = None
    norm: Annotated[
        str, typer.Option(help="filter, layer or none.", rich_help_panel=c.SCAN_PANEL)
    ] = "filter"
    ignore: Annotated[
        str,
        typer.Option(help="biasbn (zero 1-D parameters) or none.", rich_help_panel=c.SCAN_PANEL),
    ] = "biasbn"
    orthogonalize: Annotated[
        bool,
        typer.Option(
            "--orthogonalize",
            help="Make the 2-D directions orthogonal.",
            rich_help_panel=c.SCAN_PANEL,
        ),
    ] = False
    name: Annotated[
        str | None,
        typer.Option(
            help="Scan name in the file (default {dim}d-{kind}).", rich_help_panel=c.OUTPUT_PANEL
        ),
    ] = None
    overwrite: Annotated[
        bool,
        typer.Option(
            "--overwrite",
            help="Replace a scan of this name made otherwise, or drop the results of another "
            "checkpoint in --out.",
            rich_help_panel=c.OUTPUT_PANEL,
        ),
    ] = False
    loss: c.LossOpt = None
    bn: Annotated[
        str | None,
        typer.Option(
            "--bn",
            help="Interpolations through BatchNorm: recompute (the statistics of each point's "
            "weights on the scan's samples; the default) or interpolate (the statistics "
            "interpolated too, variances clamped at zero).",
            rich_help_panel=c.MODEL_DATA_PANEL,
        ),
    ] = None
    bn_mode: Annotated[
        str,
        typer.Option(
            help="eval (running stats) or train (batch stats).", rich_help_panel=c.MODEL_DATA_PANEL
        ),
    ] = "eval"
    fold_every: Annotated[
        float,
        typer.Option(
            help="Seconds between folds of computed points into the file.",
            rich_help_panel=c.OUTPUT_PANEL,
        ),
    ] = 30.0


@dataclass(frozen=True)
class ScanSource(c.SourceOptions):
    """The model and data options; a scan takes every sample of the split in batches of 512."""

    samples: c.SamplesOpt = 0
    batch_size: c.BatchSizeOpt = 512


@grouped
def scan(
    checkpoint: c.Checkpoint,
    *,
    grid: Grid,
    label: Annotated[
        str | None,
        typer.Option(help="Label in the results and figures.", rich_help_panel=c.OUTPUT_PANEL),
    ] = None,
    device: c.DeviceOpt = "auto",
    allow_tf32: c.AllowTf32Opt = False,
    source: ScanSource,
    selection: c.ParamOptions,
    out: c.OutOpt = None,
    json_out: c.JsonOpt = False,
) -> None:
    """Loss and accuracy on a 1-D or 2-D grid around a checkpoint (resumable)."""
    from landscape_cli.jobs import ScanOptions, scan_job

    fields = asdict(grid) | {"to": tuple(grid.to or ()), "trajectory": tuple(grid.trajectory or ())}
    fields |= {"params": tuple(selection.params or ()), "include_frozen": selection.include_frozen}

    def on_snapshot(done: int, total: int) -> None:
        if done == 0:
            progress.phase("trajectory snapshots", total, "snapshots")
        else:
            progress.advance(1)

    with c.progress("scan", "points") as progress:
        result, out_path = scan_job(
            checkpoint,
            ScanOptions(**fields, seed=source.seed),
            source=source.build(),
            device=device,
            out=out,
            label=label,
            on_start=lambda name, done, total: progress.phase(name, total, done=done),
            on_point=lambda i, j, loss, acc: progress.advance(1, f"loss {loss:.4g}"),
            allow_tf32=allow_tf32,
            on_snapshot=on_snapshot,
        )
    _show(result, out_path, json_out)


def _show(result: ScanResult, out_path: Path, json_out: bool) -> None:
    import numpy as np
    from rich.table import Table

    loss, x = result.loss, result.x
    origin = loss[np.argmin(np.abs(x))] if result.dim == 1 else None
    nan_points = int(np.sum(~np.isfinite(loss)))
    bn = result.attrs.get("bn")
    skipped = list(result.attrs.get("skipped_params", []))
    reasons = list(result.attrs.get("skipped_reasons", []))
    if json_out:
        c.print_json(
            {
                "name": result.name,
                "dim": result.dim,
                "kind": result.kind,
                "x": x,
                "y": result.y,
                "loss": loss,
                "accuracy": result.accuracy,
                "loss_at_origin": origin,
                "nan_points": nan_points,
                "bn": bn,
                "skipped_params": skipped,
                "skipped_reasons": reasons,
                "float32_precision": result.attrs.get("float32_precision"),
                **_trajectory_json(result),
                "out": str(out_path),
            }
        )
        return
    table = Table(title=f"scan {result.name} ({result.kind}, {result.dim}-D)")
    table.add_column("measure")
    table.add_column("value", justify="right")
    table.add_row("points", " × ".join(str(n) for n in loss.shape[::-1]))
    table.add_row("x range", f"{x[0]:g} … {x[-1]:g}")
    if result.y is not None:
        table.add_row("y range", f"{result.y[0]:g} … {result.y[-1]:g}")
    if origin is not None:
        table.add_row("loss at 0", f"{origin:.6g}")
    if bn is not None:
        table.add_row("BatchNorm statistics", bn)
    if skipped:
        why = ", ".join(f"{reasons.count(r)} {r}" for r in dict.fromkeys(reasons))
        table.add_row("parameters not moved", f"{len(skipped)} ({why})")
    gaps = " (no loss: drawn as gaps)" if nan_points else ""
    table.add_row("NaN points", f"{nan_points} of {loss.size}{gaps}")
    if nan_points < loss.size:
        table.add_row("min loss", f"{np.nanmin(loss):.6g}")
        table.add_row("max loss", f"{np.nanmax(loss):.6g}")
    _trajectory_rows(table, result)
    table.add_row("results", str(out_path))
    tf32 = c.tf32_note(result.attrs.get("float32_precision") == "tf32")
    if tf32:
        table.add_row("TF32", tf32)
    c.console().print(table)


def _trajectory_json(result: ScanResult) -> dict:
    """A trajectory scan's explained variance and snapshots, for ``--json`` (else nothing)."""
    t = result.trajectory
    if t is None:
        return {}
    keys = ("label", "file", "x", "y", "loss", "accuracy", "residual", "distance")
    return {
        "explained_variance": result.attrs.get("explained_variance"),
        "trajectory": {key: t[key] for key in keys if key in t},
    }


def _trajectory_rows(table, result: ScanResult) -> None:
    """A trajectory scan's explained variance and how far its snapshots are from the plane."""
    import numpy as np

    t = result.trajectory
    if t is None:
        return
    ev = np.asarray(result.attrs.get("explained_variance", [np.nan, np.nan]), dtype=np.float64)
    table.add_row("explained variance", f"{ev[0]:.1%}, {ev[1]:.1%} (PCA directions 1, 2)")
    table.add_row("snapshots", f"{len(t['x'])}: {t['label'][0]} … {t['label'][-1]}")
    share = np.asarray(t["residual"]) / np.maximum(np.asarray(t["distance"]), 1e-300)
    worst = int(np.argmax(share))
    table.add_row(
        "farthest from the plane",
        f"{t['label'][worst]}: residual {share[worst]:.1%} of its distance "
        f"{t['distance'][worst]:.4g}",
    )
    table.add_row(
        "snapshot losses",
        f"{t['label'][0]} {t['loss'][0]:.6g} … {t['label'][-1]} {t['loss'][-1]:.6g}",
    )
