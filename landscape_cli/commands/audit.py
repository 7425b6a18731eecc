"""``landscape audit CKPT...``: flatness measures of several checkpoints, ranked, in one table."""

from __future__ import annotations

import time
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
    top_k: Annotated[int, typer.Option(help="Top eigenvalues per checkpoint.")] = 5,
    trace_probes: Annotated[int, typer.Option(help="Most trace probes.")] = 50,
    density_probes: Annotated[int, typer.Option(help="SLQ probes (0 skips).")] = 5,
    lanczos_steps: Annotated[int, typer.Option(help="SLQ steps per probe.")] = 40,
    epsilon: Annotated[
        float, typer.Option(help="Radius of the 1-D sharpness (filter-normalised units).")
    ] = 0.05,
    rho: Annotated[float, typer.Option(help="Radius of the adaptive sharpness.")] = 0.05,
    rank_by: Annotated[
        str, typer.Option(help="lambda_max, trace, sharpness_1d or adaptive_sharpness.")
    ] = "lambda_max",
    match_loss: Annotated[
        bool,
        typer.Option(
            "--match-loss", help="Also measure with logits scaled to a common training loss."
        ),
    ] = False,
    loss: Annotated[str, typer.Option(help="ce or mse.")] = "ce",
    report: Annotated[
        Path | None, typer.Option("--report", help="Also write a markdown report here.")
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
    out: Annotated[
        Path | None, typer.Option("--out", help="Markdown report (same as --report).")
    ] = None,
    json_out: c.JsonOpt = False,
) -> None:
    """Rank checkpoints from flattest to sharpest; each one's numbers go to its results file."""
    from rich.progress import TextColumn

    from landscape_cli import audit as au
    from landscape_cli import distributed
    from landscape_cli.hessian import HessianSettings, make_report
    from landscape_cli.pipeline import provenance
    from landscape_cli.results import (
        check_output_file,
        check_target,
        write_audit,
        write_hessian,
        write_or_rescue,
    )
    from landscape_cli.training import resolve_device

    report_path = report or out
    checks = [
        (len(checkpoints) >= 1, "give at least one checkpoint"),
        (rank_by in au.MEASURES, f"--rank-by must be one of {', '.join(au.MEASURES)}"),
        (loss in ("ce", "mse"), "--loss must be ce or mse"),
        (not (match_loss and loss != "ce"), "--match-loss needs --loss ce"),
        (top_k >= 1, "--top-k must be >= 1"),
        (epsilon > 0 and rho > 0, "--epsilon and --rho must be > 0"),
        (report_path is None or report_path.suffix == ".md", "the report must be a .md file"),
    ]
    for ok, message in checks:
        if not ok:
            raise LandscapeError(message)
    distributed.init(device)
    dev = distributed.local_device(resolve_device(device))
    for ck in checkpoints:
        check_target(ck.with_suffix(".h5"))
    if report_path is not None:
        check_output_file(report_path, "report")
    source = c.source(
        model, model_option, dataset, data_root, split, samples, batch_size, trust_checkpoint
    )
    works = [source.load(ck) for ck in checkpoints]
    from landscape_cli import resources

    for ck, work in zip(checkpoints, works, strict=True):
        n = sum(p.numel() for p in work.model.parameters() if p.requires_grad)
        if top_k > n:
            raise LandscapeError(f"--top-k {top_k} exceeds the {n} parameters of {ck}")
        guess = HessianSettings(
            top_k=top_k,
            max_steps=max(100, top_k),
            trace_probes=trace_probes,
            density_probes=density_probes,
            lanczos_steps=lanczos_steps,
        )
        resources.require(resources.hessian_bytes(guess, n), dev)
    settings = au.AuditSettings(
        top_k=top_k,
        trace_probes=trace_probes,
        density_probes=density_probes,
        lanczos_steps=lanczos_steps,
        epsilon=epsilon,
        rho=rho,
        seed=seed,
        loss=loss,
    )
    progress = c.progress_bar(TextColumn("[bold]audit"), TextColumn("{task.fields[what]}"))
    rows: list[dict[str, Any]] = []
    steps = len(works) * (2 if match_loss else 1)
    with progress:
        task = progress.add_task("", total=steps, what="")
        for ck, work in zip(checkpoints, works, strict=True):
            progress.update(task, what=ck.name)
            t0 = time.perf_counter()
            m = au.measure(work.model, work.batches, settings, device=dev)
            op, analysis = m.pop("operator"), m.pop("analysis")
            row = {"checkpoint": str(ck), **m}
            root = provenance(ck, work, None, ck.with_suffix(".h5"))
            hsettings = HessianSettings(
                top_k=top_k,
                trace_probes=trace_probes,
                density_probes=density_probes,
                lanczos_steps=lanczos_steps,
                seed=seed,
            )
            rep = make_report(
                op,
                analysis,
                hsettings,
                samples=work.samples,
                batch_size=work.batch_size,
                split=split,
                loss=loss,
                seconds=time.perf_counter() - t0,
            )
            if distributed.is_main():
                write_or_rescue(
                    ck.with_suffix(".h5"),
                    lambda p, rep=rep, root=root: write_hessian(p, rep, root=root),
                )
            row["results"] = str(ck.with_suffix(".h5"))
            row["_root"] = root
            rows.append(row)
            progress.advance(task)
        if match_loss:
            target = max(r["train_loss"] for r in rows)
            for row, work in zip(rows, works, strict=True):
                progress.update(task, what=f"{Path(row['checkpoint']).name} (matched loss)")
                temp = au.temperature_for_loss(work.model, work.batches, target)
                m = au.measure(
                    work.model, work.batches, settings, device=dev, temperature=temp, density=False
                )
                m.pop("operator"), m.pop("analysis")
                row["matched"] = {k: m[k] for k in ("temperature", "train_loss", *au.MEASURES)}
                progress.advance(task)

    for row in rows:
        root = row.pop("_root")
        stored = {k: v for k, v in row.items() if k not in ("matched", "checkpoint", "results")}
        for k, v in row.get("matched", {}).items():
            stored[f"matched_{k}"] = v
        stored["epsilon"], stored["rho"], stored["samples"] = epsilon, rho, works[0].samples
        if distributed.is_main():
            write_audit(row["results"], root, stored)
    order = au.ranking(rows, rank_by)
    payload = {
        "checkpoints": rows,
        "ranking": [rows[i]["checkpoint"] for i in order],
        "rank_by": rank_by,
        "samples": works[0].samples,
        "epsilon": epsilon,
        "rho": rho,
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
    _table(rows, order, rank_by, match_loss)


def survival(rows: list[dict]) -> dict[str, dict[str, Any]]:
    """For each measure: the sharpest/flattest ratio raw and loss-matched, and whether the
    ranking of the checkpoints stays the same once the training losses are matched."""
    from landscape_cli.audit import MEASURES, ranking

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
            "same_order": ranking(rows, key) == ranking(matched, key),
        }
    return out


def _fmt(value: Any, spec: str) -> str:
    return "–" if value is None else spec.format(value)


def _table(rows, order, rank_by, match_loss) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"flatness audit, flattest first by {rank_by}")
    table.add_column("#", justify="right")
    table.add_column("checkpoint")
    for _, head, _ in COLUMNS:
        table.add_column(head, justify="right")
    if match_loss:
        table.add_column(f"{rank_by} @ matched loss", justify="right")
    for rank, i in enumerate(order, 1):
        r = rows[i]
        cells = [_fmt(r.get(k), spec) for k, _, spec in COLUMNS]
        if r.get("trace_stderr") is not None and r.get("trace") is not None:
            cells[1] = f"{r['trace']:.4g} ± {1.96 * r['trace_stderr']:.2g}"
        if match_loss:
            cells.append(_fmt(r["matched"].get(rank_by), "{:.4g}"))
        table.add_row(str(rank), Path(r["checkpoint"]).name, *cells)
    Console().print(table)


def report_figures(report: Path, rows: list[dict]) -> dict[str, str]:
    """Fig. 5 of the audited checkpoints beside the report (when their densities were measured)."""
    from landscape_cli import plotting
    from landscape_cli.results import read_hessian

    results = [read_hessian(r["results"]) for r in rows]
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
        f"sharpness radius ρ = {payload['rho']}.",
        "",
        "| # | checkpoint | " + " | ".join(h for _, h, _ in COLUMNS) + " |",
        "|---|---|" + "---|" * len(COLUMNS),
    ]
    index = {r["checkpoint"]: r for r in rows}
    for rank, ck in enumerate(payload["ranking"], 1):
        r = index[ck]
        cells = [_fmt(r.get(k), spec) for k, _, spec in COLUMNS]
        lines.append(f"| {rank} | `{Path(ck).name}` | " + " | ".join(cells) + " |")
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
        "- Negative mass: the share of the SLQ spectrum below zero (a saddle or an unconverged "
        "point has some).",
        "",
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines), encoding="utf-8")
