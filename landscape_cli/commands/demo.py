"""``landscape demo``: the embedded end-to-end reproduction (Figs. 2, 5 and 6 on real digits)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from landscape_cli.commands import _common as c


def demo(
    out: Annotated[
        Path,
        typer.Option(
            help="Folder for checkpoints, results and figures.", rich_help_panel=c.OUTPUT_PANEL
        ),
    ] = Path("demo"),
    quick: Annotated[
        bool,
        typer.Option("--quick", help="A small, fast run (for tests).", rich_help_panel=c.RUN_PANEL),
    ] = False,
    seed: c.SeedOpt = 0,
    device: c.DeviceOpt = "auto",
    json_out: c.JsonOpt = False,
) -> None:
    """Train Adam, DualAdam and Adam + warm-up on digits; Hessians, scans and Figs. 2, 5, 6, 7."""
    from rich.table import Table

    from landscape_cli import resources
    from landscape_cli.devices import resolve_device
    from landscape_cli.jobs.demo import run_demo
    from landscape_cli.results import check_folder

    check_folder(out, "demo folder")  # before any work: an existing file, an unwritable place
    resolve_device(device)
    resources.check_options({"seed": seed})
    with c.progress("demo") as progress:
        summary = run_demo(
            out,
            quick=quick,
            seed=seed,
            device=device,
            on_phase=lambda name, most, unit: progress.phase(name, most, unit),
            on_advance=progress.advance,
        )
    if json_out:
        c.print_json(summary)
        return
    table = Table(title="DualAdam vs Adam on digits (small CNN)" + (" — quick" if quick else ""))
    for head in ("run", "lr", "test acc", "train loss", "λmax", "trace", "results"):
        table.add_column(head, justify="left" if head in ("run", "results") else "right")
    for r in summary["runs"]:
        table.add_row(
            r["label"],
            f"{r['hparams']['lr']:g}",
            f"{r['test_acc']:.3f}",
            f"{r['train_loss']:.4f}",
            f"{r['lambda_max']:.4g}",
            f"{r['trace']:.4g} ± {1.96 * r['trace_stderr']:.2g}",
            Path(r["results"]).name,
        )
    console = c.console()
    console.print(table)
    for name, path in summary["figures"].items():
        console.print(f"{name}: {path}")
