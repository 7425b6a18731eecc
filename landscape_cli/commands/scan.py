"""``landscape scan CKPT``: 1-D/2-D loss landscapes along filter-normalised or eigen directions."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from landscape_cli.commands import _common as c
from landscape_cli.errors import LandscapeError


def scan(
    checkpoint: c.Checkpoint,
    dim: Annotated[int, typer.Option(help="1 or 2 dimensions.")] = 1,
    points: Annotated[int, typer.Option(help="Grid points along x (and y).")] = 51,
    ypoints: Annotated[int | None, typer.Option(help="Grid points along y (default --points).")] = (
        None
    ),
    range_: Annotated[
        tuple[float, float] | None,
        typer.Option("--range", help="x range (default -1 1; interpolation -0.5 1.5)."),
    ] = None,
    yrange: Annotated[
        tuple[float, float] | None, typer.Option(help="y range (default: the x range).")
    ] = None,
    direction: Annotated[str, typer.Option(help="random or eigenvector.")] = "random",
    to: Annotated[
        list[Path] | None,
        typer.Option("--to", help="Interpolate towards this checkpoint (twice for a plane)."),
    ] = None,
    norm: Annotated[str, typer.Option(help="filter, layer or none.")] = "filter",
    ignore: Annotated[str, typer.Option(help="biasbn (zero 1-D parameters) or none.")] = "biasbn",
    orthogonalize: Annotated[
        bool, typer.Option("--orthogonalize", help="Make the 2-D directions orthogonal.")
    ] = False,
    name: Annotated[
        str | None, typer.Option(help="Scan name in the file (default {dim}d-{kind}).")
    ] = None,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace a scan of this name made otherwise.")
    ] = False,
    loss: Annotated[str, typer.Option(help="ce or mse.")] = "ce",
    bn_mode: Annotated[str, typer.Option(help="eval (running stats) or train (batch stats).")] = (
        "eval"
    ),
    label: Annotated[str | None, typer.Option(help="Label in the results and figures.")] = None,
    fold_every: Annotated[
        float, typer.Option(help="Seconds between folds of computed points into the file.")
    ] = 30.0,
    model: c.ModelOpt = None,
    model_option: c.ModelOptionOpt = None,
    dataset: c.DatasetOpt = None,
    data_root: c.DataRootOpt = None,
    split: c.SplitOpt = "train",
    samples: c.SamplesOpt = 0,
    batch_size: c.BatchSizeOpt = 512,
    device: c.DeviceOpt = "auto",
    seed: c.SeedOpt = 0,
    trust_checkpoint: c.TrustOpt = False,
    out: c.OutOpt = None,
    json_out: c.JsonOpt = False,
) -> None:
    """Loss and accuracy on a 1-D or 2-D grid around a checkpoint (resumable)."""
    import numpy as np
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from landscape_cli import scan as sc
    from landscape_cli.commands.train import parse_options
    from landscape_cli.evaluation import to_device
    from landscape_cli.results import check_target, sha256_file
    from landscape_cli.training import resolve_device
    from landscape_cli.workload import load_workload

    targets = list(to or [])
    kind = "interpolation" if targets else direction
    checks = [
        (dim in (1, 2), "--dim must be 1 or 2"),
        (direction in ("random", "eigenvector"), "--direction must be random or eigenvector"),
        (
            not (targets and direction != "random"),
            "--to and --direction eigenvector exclude each other",
        ),
        (not targets or len(targets) == dim, f"--dim {dim} interpolation needs {dim} --to file(s)"),
        (loss in ("ce", "mse"), "--loss must be ce or mse"),
        (split in ("train", "test"), "--split must be train or test"),
        (norm in sc.NORMS, f"--norm must be one of {', '.join(sc.NORMS)}"),
        (ignore in sc.IGNORES, "--ignore must be biasbn or none"),
    ]
    for ok, message in checks:
        if not ok:
            raise LandscapeError(message)
    dev = resolve_device(device)
    out_path = c.results_path(checkpoint, out)
    check_target(out_path)
    lo, hi = range_ if range_ is not None else ((-0.5, 1.5) if targets else (-1.0, 1.0))
    x = sc.axis(lo, hi, points)
    y = None
    if dim == 2:
        ylo, yhi = yrange if yrange is not None else (lo, hi)
        y = sc.axis(ylo, yhi, ypoints if ypoints is not None else points)
    scan_name = name or f"{dim}d-{kind}"

    options = parse_options(model_option, "--model-option")
    work = load_workload(
        checkpoint,
        model=model,
        model_options=options,
        dataset=dataset,
        data_root=data_root,
        split=split,
        samples=samples,
        batch_size=batch_size,
        trust=trust_checkpoint,
    )
    net = work.model.to(dev)
    batches = [to_device(b, dev, next(net.parameters()).dtype) for b in work.batches]
    common = {"samples": work.samples, "split": split}
    if kind == "interpolation":
        from landscape_cli.checkpoints import load_model

        others = [
            load_model(
                t,
                model=model,
                input_shape=tuple(work.loaded.model_spec.get("kwargs", {}).get("input_shape", ()))
                or None,
                num_classes=work.loaded.model_spec.get("kwargs", {}).get("num_classes"),
                model_options=options,
                trust=trust_checkpoint,
            ).model.to(dev)
            for t in targets
        ]
        plan = sc.interpolation_plan(
            net,
            others,
            name=scan_name,
            x=x,
            y=y,
            to=[str(t) for t in targets],
            targets_sha256=",".join(sha256_file(t) for t in targets),
            **common,
        )
    elif kind == "eigenvector":
        from landscape_cli.hessian import HessianOperator, lanczos_top

        op = HessianOperator(net, batches, loss=loss, bn_mode=bn_mode, device=dev)
        top = lanczos_top(op, dim, tol=1e-6, max_steps=200, seed=seed, eigenvectors=True)
        plan = sc.eigenvector_plan(
            net,
            top.eigenvectors,
            top.eigenvalues,
            op.names,
            name=scan_name,
            x=x,
            y=y,
            seed=seed,
            **common,
        )
    else:
        plan = sc.random_plan(
            net,
            name=scan_name,
            x=x,
            y=y,
            seed=seed,
            norm=norm,
            ignore=ignore,
            orthogonalize=orthogonalize,
            **common,
        )
    root = {
        **c.provenance(checkpoint),
        "label": label or checkpoint.stem,
        "model": work.loaded.model_spec["name"],
        "dataset": work.dataset,
    }
    plan.attrs["checkpoint_sha256"] = root["checkpoint_sha256"]

    err = Console(stderr=True)
    progress = Progress(
        TextColumn(f"[bold]{scan_name}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("points · loss {task.fields[loss]:.4g}"),
        TimeElapsedColumn(),
        console=err,
    )
    task = progress.add_task("", total=int(np.prod(plan.shape)), loss=float("nan"))

    def on_start(done: int, total: int) -> None:
        progress.start()  # only now: option errors found by execute stay one clean line
        progress.update(task, completed=done)

    try:
        result = sc.execute(
            net,
            batches,
            plan,
            out=out_path,
            root=root,
            loss=loss,
            bn_mode=bn_mode,
            overwrite=overwrite,
            fold_every=fold_every,
            on_start=on_start,
            on_point=lambda i, j, lv, av: progress.update(task, advance=1, loss=lv),
        )
    finally:
        if progress.live.is_started:
            progress.stop()
    _show(result, out_path, json_out)


def _show(result: dict, out_path: Path, json_out: bool) -> None:
    import numpy as np
    from rich.console import Console
    from rich.table import Table

    loss, x = result["loss"], result["x"]
    origin = loss[np.argmin(np.abs(x))] if result["dim"] == 1 else None
    if json_out:
        c.print_json(
            {
                "name": result["name"],
                "dim": result["dim"],
                "kind": result["kind"],
                "x": x,
                "y": result["y"],
                "loss": loss,
                "accuracy": result["accuracy"],
                "loss_at_origin": origin,
                "out": str(out_path),
            }
        )
        return
    table = Table(title=f"scan {result['name']} ({result['kind']}, {result['dim']}-D)")
    table.add_column("measure")
    table.add_column("value", justify="right")
    table.add_row("points", " × ".join(str(n) for n in loss.shape[::-1]))
    table.add_row("x range", f"{x[0]:g} … {x[-1]:g}")
    if result["y"] is not None:
        table.add_row("y range", f"{result['y'][0]:g} … {result['y'][-1]:g}")
    if origin is not None:
        table.add_row("loss at 0", f"{origin:.6g}")
    table.add_row("min loss", f"{np.nanmin(loss):.6g}")
    table.add_row("max loss", f"{np.nanmax(loss):.6g}")
    table.add_row("results", str(out_path))
    Console().print(table)
