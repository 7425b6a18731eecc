"""Whole jobs on a checkpoint file, as the commands (and the demo) run them.

Each job validates its options (one-line :class:`LandscapeError` for bad ones), checks that the
results file can be written *before* computing anything, loads the checkpoint and its samples,
computes, and writes its group of the results file. Progress is reported through callbacks; no
job prints.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from landscape_cli import distributed
from landscape_cli.errors import LandscapeError
from landscape_cli.workload import Workload, load_workload


@dataclass(frozen=True)
class Source:
    """How to load a checkpoint's model and samples (the shared options of the commands)."""

    model: str | None = None
    model_options: dict[str, Any] = field(default_factory=dict)
    dataset: str | None = None
    data_root: str | None = None
    split: str = "train"
    samples: int = 1024
    batch_size: int = 128
    trust: bool = False

    def load(self, checkpoint: Path) -> Workload:
        if self.split not in ("train", "test"):
            raise LandscapeError(f"--split must be train or test, got {self.split!r}")
        return load_workload(
            checkpoint,
            model=self.model,
            model_options=self.model_options,
            dataset=self.dataset,
            data_root=self.data_root,
            split=self.split,
            samples=self.samples,
            batch_size=self.batch_size,
            trust=self.trust,
        )


def results_path(checkpoint: Path, out: Path | None) -> Path:
    """``--out``, by default the checkpoint's path with its suffix replaced by ``.h5``."""
    return Path(out) if out is not None else Path(checkpoint).with_suffix(".h5")


def provenance(
    checkpoint: Path, work: Workload, label: str | None, out: Path | None = None
) -> dict[str, Any]:
    """Root attributes of a results file: what was measured, on what, by which tools.

    Without ``label``, a label already in the results file ``out`` is kept (None is not
    written); a new file gets the checkpoint's stem.
    """
    from landscape_cli.results import read_root, sha256_file

    if label is None and not (out is not None and out.exists() and read_root(out).get("label")):
        label = Path(checkpoint).stem
    return {
        "checkpoint": str(checkpoint),
        "checkpoint_sha256": sha256_file(checkpoint),
        "label": label,
        "model": work.loaded.model_spec["name"],
        "dataset": work.dataset,
        "argv": " ".join(sys.argv),
        "torch_version": str(torch.__version__),
        "cuda_version": torch.version.cuda or "",
    }


def _check(checks: list[tuple[bool, str]]) -> None:
    for ok, message in checks:
        if not ok:
            raise LandscapeError(message)


def hessian_job(
    checkpoint: Path,
    settings,
    *,
    source: Source = Source(),
    loss: str = "ce",
    bn_mode: str = "eval",
    dtype: str = "float32",
    cache_graphs: bool | None = None,
    device: str = "auto",
    out: Path | None = None,
    label: str | None = None,
    on_phase: Callable[[str, int], None] | None = None,
    on_hvp: Callable[[int], None] | None = None,
):
    """``landscape hessian``: analyze the Hessian and write ``/hessian``; returns
    ``(report, results path, workload)``. On Ctrl-C, what was computed is written first."""
    from landscape_cli import hessian as hs
    from landscape_cli.results import check_target, write_hessian
    from landscape_cli.training import resolve_device

    s = settings
    _check(
        [
            (s.top_k >= 0, "--top-k must be >= 0"),
            (s.tol > 0, "--tol must be > 0"),
            (s.max_steps >= 1, "--max-steps must be >= 1"),
            (s.trace_probes == 0 or s.trace_probes >= 2, "--trace-probes must be 0 or >= 2"),
            (s.trace_rtol >= 0, "--trace-rtol must be >= 0"),
            (
                s.trace_method in hs.TRACE_METHODS,
                f"--trace-method must be one of {hs.TRACE_METHODS}",
            ),
            (s.density_probes >= 0, "--density-probes must be >= 0"),
            (s.density_tol >= 0, "--density-tol must be >= 0"),
            (s.lanczos_steps >= 1, "--lanczos-steps must be >= 1"),
            (s.density_sigma > 0, "--density-sigma must be > 0"),
            (loss in ("ce", "mse"), "--loss must be ce or mse"),
            (dtype in ("float32", "float64"), "--dtype must be float32 or float64"),
        ]
    )
    distributed.init(device)
    dev = distributed.local_device(resolve_device(device))
    out_path = results_path(checkpoint, out)
    check_target(out_path)
    work = source.load(checkpoint)
    t0 = time.perf_counter()
    op = hs.HessianOperator(
        work.model,
        work.batches,
        loss=loss,
        bn_mode=bn_mode,
        device=dev,
        dtype=getattr(torch, dtype),
        cache_graphs=cache_graphs,
    )
    op.on_hvp = on_hvp
    root = provenance(checkpoint, work, label, out_path)
    results: dict = {}

    def save():
        report = hs.make_report(
            op,
            results,
            s,
            samples=work.samples,
            batch_size=work.batch_size,
            split=work.split,
            loss=loss,
            seconds=time.perf_counter() - t0,
        )
        if distributed.is_main():
            write_hessian(out_path, report, root=root)
        return report

    try:
        hs.analyze(op, s, out=results, on_phase=on_phase)
    except KeyboardInterrupt:
        if any(results.get(k) for k in ("top", "trace", "density", "per_layer")):
            save()  # keep what was computed before the interrupt
        raise
    return save(), out_path, work


@dataclass(frozen=True)
class ScanOptions:
    """The options of ``landscape scan`` that shape the grid and the directions."""

    dim: int = 1
    points: int = 51
    ypoints: int | None = None
    xrange: tuple[float, float] | None = None
    yrange: tuple[float, float] | None = None
    direction: str = "random"
    to: tuple[Path, ...] = ()
    norm: str = "filter"
    ignore: str = "biasbn"
    orthogonalize: bool = False
    name: str | None = None
    overwrite: bool = False
    loss: str = "ce"
    bn_mode: str = "eval"
    seed: int = 0
    fold_every: float = 30.0


def scan_job(
    checkpoint: Path,
    options: ScanOptions,
    *,
    source: Source = Source(samples=0, batch_size=512),
    device: str = "auto",
    out: Path | None = None,
    label: str | None = None,
    on_start: Callable[[str, int, int], None] | None = None,
    on_point: Callable[[int, int, float, float], None] | None = None,
) -> tuple[dict, Path]:
    """``landscape scan``: compute (or resume) a scan into ``/scan/<name>``; returns
    ``(scan as read back, results path)``. ``on_start(name, done, total)`` fires once the
    options are known to be consistent with any scan already in the file."""
    import numpy as np

    from landscape_cli import scan as sc
    from landscape_cli.evaluation import to_device
    from landscape_cli.results import check_target, sha256_file
    from landscape_cli.training import resolve_device

    o = options
    targets = list(o.to)
    kind = "interpolation" if targets else o.direction
    _check(
        [
            (o.dim in (1, 2), "--dim must be 1 or 2"),
            (o.direction in ("random", "eigenvector"), "--direction must be random or eigenvector"),
            (
                not (targets and o.direction != "random"),
                "--to and --direction eigenvector exclude each other",
            ),
            (
                not targets or len(targets) == o.dim,
                f"--dim {o.dim} interpolation needs {o.dim} --to file(s)",
            ),
            (o.loss in ("ce", "mse"), "--loss must be ce or mse"),
            (o.norm in sc.NORMS, f"--norm must be one of {', '.join(sc.NORMS)}"),
            (o.ignore in sc.IGNORES, "--ignore must be biasbn or none"),
        ]
    )
    distributed.init(device)
    dev = distributed.local_device(resolve_device(device))
    out_path = results_path(checkpoint, out)
    check_target(out_path)
    lo, hi = o.xrange if o.xrange is not None else ((-0.5, 1.5) if targets else (-1.0, 1.0))
    x = sc.axis(lo, hi, o.points)
    y = None
    if o.dim == 2:
        ylo, yhi = o.yrange if o.yrange is not None else (lo, hi)
        y = sc.axis(ylo, yhi, o.ypoints if o.ypoints is not None else o.points)
    name = o.name or f"{o.dim}d-{kind}"

    work = source.load(checkpoint)
    net = work.model.to(dev)
    batches = [to_device(b, dev, next(net.parameters()).dtype) for b in work.batches]
    common = {"samples": work.samples, "split": work.split}
    if kind == "interpolation":
        from landscape_cli.checkpoints import load_model

        kwargs = work.loaded.model_spec.get("kwargs", {})
        others = [
            load_model(
                t,
                model=source.model,
                input_shape=tuple(kwargs["input_shape"]) if "input_shape" in kwargs else None,
                num_classes=kwargs.get("num_classes"),
                model_options=source.model_options,
                trust=source.trust,
            ).model.to(dev)
            for t in targets
        ]
        plan = sc.interpolation_plan(
            net,
            others,
            name=name,
            x=x,
            y=y,
            to=[str(t) for t in targets],
            targets_sha256=",".join(sha256_file(t) for t in targets),
            **common,
        )
    elif kind == "eigenvector":
        from landscape_cli.hessian import HessianOperator, lanczos_top

        op = HessianOperator(net, batches, loss=o.loss, bn_mode=o.bn_mode, device=dev)
        top = lanczos_top(op, o.dim, tol=1e-6, max_steps=200, seed=o.seed, eigenvectors=True)
        plan = sc.eigenvector_plan(
            net, top.eigenvectors, top.eigenvalues, op.names, name=name, x=x, y=y,
            seed=o.seed, **common,
        )  # fmt: skip
    else:
        plan = sc.random_plan(
            net,
            name=name,
            x=x,
            y=y,
            seed=o.seed,
            norm=o.norm,
            ignore=o.ignore,
            orthogonalize=o.orthogonalize,
            **common,
        )
    root = provenance(checkpoint, work, label, out_path)
    plan.attrs["checkpoint_sha256"] = root["checkpoint_sha256"]
    total = int(np.prod(plan.shape))
    result = sc.execute(
        net,
        batches,
        plan,
        out=out_path,
        root=root,
        loss=o.loss,
        bn_mode=o.bn_mode,
        overwrite=o.overwrite,
        fold_every=o.fold_every,
        on_start=(lambda done, _: on_start(name, done, total)) if on_start else None,
        on_point=on_point,
    )
    return result, out_path
