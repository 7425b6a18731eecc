"""The embedded end-to-end reproduction behind ``landscape demo`` (and ``make demo``).

On scikit-learn's real 8×8 digits (no download), train the small CNN three ways:

- **Adam** at the paper's baseline rate (1e-3);
- **DualAdam** at the authors' rate (1e-2), α reaching 0 after a sixth of training;
- **Adam + warm-up**: Adam at DualAdam's rate with a linear warm-up over the same 1/ξ steps, the
  matched baseline (with the paper's ξ the InvAdam term is tiny, so DualAdam ≈ this);

then run ``hessian`` (top-5, trace, density), a 1-D filter-normalised scan and a trajectory scan
(the plane of the run's two principal directions through its per-epoch snapshots) on each, and
draw Fig. 2 (the 2-parameter simulation), Fig. 5 (spectra), Fig. 6 (1-D loss curves) and Fig. 7
(each run's path over the loss in its own plane).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from landscape_cli import plotting
from landscape_cli.data import load_dataset
from landscape_cli.hessian import HessianSettings
from landscape_cli.jobs.fig2_simulation import simulate
from landscape_cli.jobs.hessian import hessian_job
from landscape_cli.jobs.scan import ScanOptions, scan_job
from landscape_cli.results import HessianResult, ScanResult
from landscape_cli.training import Callbacks, TrainConfig, train
from landscape_cli.workload import Source


@dataclass(frozen=True)
class DemoSize:
    """The size of a demo run: epochs, samples and Hessian/scan settings."""

    epochs: int
    samples: int
    top_k: int
    trace_probes: int
    density_probes: int
    lanczos_steps: int
    scan_points: int
    scan_samples: int
    fig2_steps: int | None
    fig2_resolution: int
    trajectory_points: int  # the trajectory plane's grid, each way
    trajectory_samples: int


FULL = DemoSize(20, 512, 5, 100, 10, 60, 41, 0, None, 300, 17, 512)
QUICK = DemoSize(3, 128, 3, 10, 2, 12, 9, 128, 60, 60, 5, 128)


def runs(epochs: int, seed: int) -> list[tuple[str, TrainConfig]]:
    """The three training runs of the demo, with the matched warm-up computed from ξ."""
    train_size = len(load_dataset("digits", "train").dataset)
    steps = epochs * math.ceil(train_size / TrainConfig.batch_size)
    warmup = round(steps / 6)  # 1/ξ for DualAdam's default ξ = 6 / total steps
    return [
        ("Adam", TrainConfig(optimizer="adam", epochs=epochs, seed=seed)),
        ("DualAdam", TrainConfig(optimizer="dualadam", epochs=epochs, seed=seed)),
        (
            "Adam + warm-up",
            TrainConfig(optimizer="adam", lr=1e-2, warmup_steps=warmup, epochs=epochs, seed=seed),
        ),
    ]


def run_demo(
    out: str | Path = "demo",
    *,
    quick: bool = False,
    seed: int = 0,
    device: str = "auto",
    on_step: Callable[[str], None] | None = None,
    on_phase: Callable[[str, int, str], None] | None = None,
    on_advance: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Run the whole demo into ``out``; returns a summary (numbers and every file written).

    Progress: ``on_step(what)`` at each of its :data:`STEPS_PER_RUN` steps per run and
    :data:`EXTRA_STEPS` figures; ``on_phase(name, most work, unit)`` before each phase within
    them (a training run, each Hessian estimator, a scan, a figure) and ``on_advance(k)`` as the
    work is done.
    """
    size = QUICK if quick else FULL
    progress = _Progress(
        on_step or (lambda what: None),
        on_phase or (lambda name, most, unit: None),
        on_advance or (lambda k: None),
    )
    folder = Path(out)
    rows: list[dict[str, Any]] = []
    hessians, scans, planes = [], [], []
    for label, config in runs(size.epochs, seed):
        row, hessian, scan, plane = _one_run(label, config, folder, size, seed, device, progress)
        hessians.append(hessian)
        scans.append(scan)
        planes.append(plane)
        rows.append(row)
    labels = [r["label"] for r in rows]
    figures = _figures(hessians, scans, planes, labels, folder, size, progress)
    return {"runs": rows, "figures": {k: str(v) for k, v in figures.items()}, "quick": quick}


@dataclass(frozen=True)
class _Progress:
    """The demo's three progress callbacks, each a no-op when not given."""

    tell: Callable[[str], None]
    phase: Callable[[str, int, str], None]
    advance: Callable[[int], None]

    def step(self, what: str, most: int = 0, unit: str = "") -> None:
        """Announce a step and, when its work is known, open a phase for it."""
        self.tell(what)
        if most:
            self.phase(what, most, unit)


class _Show(Callbacks):
    """Training progress of one run as a phase of optimizer steps."""

    def __init__(self, label: str, progress: _Progress) -> None:
        self.label = label
        self.progress = progress

    def on_start(
        self, cfg: TrainConfig, *, epochs: int, steps_per_epoch: int, first_epoch: int
    ) -> None:
        self.progress.phase(
            f"train {self.label}", (epochs - first_epoch) * steps_per_epoch, "steps"
        )

    def on_batch(self, epoch: int, batch: int, loss: float) -> None:
        self.progress.advance(1)


def _one_run(
    label: str,
    config: TrainConfig,
    folder: Path,
    size: DemoSize,
    seed: int,
    device: str,
    progress: _Progress,
):
    """Train one configuration (a snapshot each epoch), analyze its Hessian, scan it.

    Returns ``(summary row, Hessian result, 1-D scan, trajectory scan)``.
    """
    stem = f"cnn-digits-{config.optimizer}" + ("-warmup" if config.warmup_steps else "")
    ckpt = folder / f"{stem}-s{seed}.pt"
    progress.step(f"train {label}")
    trained = train(config, out=ckpt, device=device, callbacks=_Show(label, progress), save_every=1)
    progress.step(f"hessian {label}")
    report, results = _hessian(ckpt, label, size, seed, device, progress)
    progress.step(f"scan {label}")
    scan = _scan_1d(ckpt, label, size, seed, device, progress)
    progress.step(f"trajectory {label}")
    plane = _trajectory_scan(ckpt, trained.snapshots, label, size, seed, device, progress)
    row = {
        "label": label,
        "optimizer": config.optimizer,
        "hparams": trained.hparams,
        "test_acc": trained.final.test_acc,
        "train_loss": trained.final.train_loss,
        "lambda_max": float(report.top.eigenvalues[0]),
        "top_eigenvalues": [float(v) for v in report.top.eigenvalues],
        "trace": report.trace.estimate,
        "trace_stderr": report.trace.stderr,
        "checkpoint": str(ckpt),
        "results": str(results),
    }
    row["explained_variance"] = [float(v) for v in plane.attrs["explained_variance"]]
    return row, HessianResult(report), scan, plane  # what was written, without reading it back


def _hessian(ckpt: Path, label: str, size: DemoSize, seed: int, device: str, progress: _Progress):
    """The run's top-k, trace and density into its results file; ``(report, results path)``."""
    settings = HessianSettings(
        top_k=size.top_k,
        trace_probes=size.trace_probes,
        density_probes=size.density_probes,
        lanczos_steps=size.lanczos_steps,
        seed=seed,
    )
    report, results, _ = hessian_job(
        ckpt,
        settings,
        source=Source(samples=size.samples),
        device=device,
        label=label,
        on_phase=lambda name, most: progress.phase(
            f"hessian {label}: {name}", most, "HVPs (at most)"
        ),
        on_hvp=progress.advance,
    )
    return report, results


def _scan_1d(ckpt: Path, label: str, size: DemoSize, seed: int, device: str, progress: _Progress):
    """The run's 1-D filter-normalised random scan (Fig. 6)."""
    scan, _ = scan_job(
        ckpt,
        ScanOptions(points=size.scan_points, seed=seed, overwrite=True),
        source=Source(samples=size.scan_samples, batch_size=512),
        device=device,
        label=label,
        on_start=lambda name, done, total: progress.phase(f"scan {label}", total - done, "points"),
        on_point=lambda i, j, loss, acc: progress.advance(1),
    )
    return scan


def _trajectory_scan(
    ckpt: Path,
    snapshots: tuple[Path, ...],
    label: str,
    size: DemoSize,
    seed: int,
    device: str,
    progress: _Progress,
):
    """The run's path over the plane of its two principal directions (Fig. 7)."""

    def on_snapshot(done: int, total: int) -> None:
        if done == 0:
            progress.phase(f"trajectory {label}: snapshots", total, "snapshots")
        else:
            progress.advance(1)

    plane, _ = scan_job(
        ckpt,
        ScanOptions(
            direction="pca",
            trajectory=tuple(str(p) for p in snapshots),
            points=size.trajectory_points,
            seed=seed,
            overwrite=True,
        ),
        source=Source(samples=size.trajectory_samples, batch_size=512),
        device=device,
        label=label,
        on_start=lambda name, done, total: progress.phase(
            f"trajectory {label}", total - done, "points"
        ),
        on_point=lambda i, j, loss, acc: progress.advance(1),
        on_snapshot=on_snapshot,
    )
    return plane


def _figures(
    hessians: list[HessianResult],
    scans: list[ScanResult],
    planes: list[ScanResult],
    labels: list[str],
    folder: Path,
    size: DemoSize,
    progress: _Progress,
):
    """Draw Fig. 5, Fig. 6, Fig. 7 and Fig. 2 into ``folder``; returns ``{name: path}``."""
    figures = {}
    progress.step("figure 5", 1, "figure")
    figures["fig5"] = plotting.save_figure(
        plotting.draw_spectra(hessians, labels), folder / "fig5.png"
    )
    progress.advance(1)
    progress.step("figure 6", 1, "figure")
    figures["fig6"] = plotting.save_figure(
        plotting.draw_loss_curves(scans, labels), folder / "fig6.png"
    )
    progress.advance(1)
    progress.step("figure 7", 1, "figure")
    figures["fig7"] = plotting.save_figure(
        plotting.trajectories(planes, labels), folder / "fig7.png"
    )
    progress.advance(1)
    progress.step("figure 2", 1, "figure")
    sim = simulate(steps=size.fig2_steps, resolution=size.fig2_resolution)
    figures["fig2"] = plotting.save_figure(
        plotting.draw_optimizer_trajectories(sim), folder / "fig2.png"
    )
    progress.advance(1)
    return figures


STEPS_PER_RUN = 4
EXTRA_STEPS = 4  # the four figures
