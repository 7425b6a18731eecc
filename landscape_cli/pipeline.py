"""Whole jobs on a checkpoint file, as the commands (and the demo) run them.

Each job validates its options (one-line :class:`LandscapeError` for bad ones), checks that the
results file can be written *before* computing anything, loads the checkpoint and its samples,
computes, and writes its group of the results file. Progress is reported through callbacks; no
job prints.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from landscape_cli import distributed, resources
from landscape_cli.errors import Interrupted, LandscapeError
from landscape_cli.evaluation import check_loss_on, check_not_constant
from landscape_cli.workload import Workload, load_workload

if TYPE_CHECKING:
    from landscape_cli.audit import AuditRow
    from landscape_cli.results import ScanResult


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
    seed: int = 0  # of the sample selection
    text_columns: tuple[str, ...] = ("text",)  # text:FILE data of Hugging Face folders
    label_column: str = "label"
    seq_len: int | None = None  # causal language models: tokens per sequence (or block)
    pack: bool = False  # causal language models: blocks of seq_len tokens, not one per text
    # told what the user should know about how a file was read (a prefix removed from its keys)
    on_note: Callable[[str], None] | None = field(default=None, compare=False, repr=False)

    def note(self, loaded: Any) -> None:
        """Pass the notes of a :class:`~landscape_cli.checkpoints.LoadedModel` to ``on_note``."""
        if self.on_note is None or not distributed.is_main():
            return
        for text in getattr(loaded, "notes", ()):
            self.on_note(f"{loaded.path.name}: {text}")

    def load(self, checkpoint: Path) -> Workload:
        """Load ``checkpoint`` and its samples as a :class:`Workload` with these settings."""
        if self.split not in ("train", "test"):
            raise LandscapeError(f"`split` must be train or test, got {self.split!r}")
        work = load_workload(
            checkpoint,
            model=self.model,
            model_options=self.model_options,
            dataset=self.dataset,
            data_root=self.data_root,
            split=self.split,
            samples=self.samples,
            batch_size=self.batch_size,
            trust=self.trust,
            seed=self.seed,
            text_columns=self.text_columns,
            label_column=self.label_column,
            seq_len=self.seq_len,
            pack=self.pack,
        )
        self.note(work.loaded)
        return work


def results_path(checkpoint: Path, out: Path | None) -> Path:
    """The results path ``--out``, by default beside the checkpoint with suffix ``.h5``.

    ``--out``, by default the checkpoint's path with its suffix replaced by ``.h5`` (for a
    model folder: ``FOLDER.h5`` beside it).
    """
    if out is not None:
        return Path(out)
    path = Path(checkpoint)
    return path.with_name(path.name + ".h5") if path.is_dir() else path.with_suffix(".h5")


def provenance(
    checkpoint: Path, work: Workload, label: str | None, out: Path | None = None
) -> dict[str, Any]:
    """Root attributes of a results file: what was measured, on what, by which tools.

    Without ``label``, a label already in the results file ``out`` is kept (None is not
    written); a new file gets the checkpoint's stem.
    """
    from landscape_cli.results import read_root, sha256_file

    if label is None and not (out is not None and out.exists() and read_root(out).get("label")):
        label = Path(checkpoint).name if Path(checkpoint).is_dir() else Path(checkpoint).stem
    return {
        "checkpoint": str(checkpoint),
        "checkpoint_sha256": sha256_file(checkpoint),
        "label": label,
        "model": work.loaded.model_spec["name"],
        "dataset": work.dataset,
        "state_dict_prefix": work.loaded.prefix or None,  # removed from the file's keys
        "argv": " ".join(sys.argv),
        "torch_version": str(torch.__version__),
        "cuda_version": torch.version.cuda or "",
    }


def group_attrs(root: dict[str, Any], work: Workload, settings: dict[str, Any]) -> dict[str, Any]:
    """What every results group records.

    The checkpoint's and the samples' SHA-256 and the settings it was computed with (so that a later
    run can tell whether it may reuse, resume or must refuse it).
    """
    return {
        "checkpoint_sha256": root["checkpoint_sha256"],
        "samples_sha256": work.samples_sha256,
        "settings": settings,
    }


def check_same_options(
    out_path: Path, group: str, wanted: dict[str, Any], overwrite: bool, what: str
) -> None:
    """Refuse a group computed with other options, unless ``overwrite`` (one rule for all).

    The same command with the same options recomputes (or resumes) it in place; other options on an
    existing group is an error unless ``overwrite``.
    """
    from landscape_cli.results import group_settings, settings_mismatch

    if overwrite:
        return
    diff = settings_mismatch(group_settings(out_path, group), wanted)
    if diff:
        raise LandscapeError(
            f"/{group} in {out_path} was computed with other options ({'; '.join(diff[:3])}); "
            f"pass `overwrite=True` to replace it{what}"
        )


def _check(checks: list[tuple[bool, str]]) -> None:
    for ok, message in checks:
        if not ok:
            raise LandscapeError(message)


def _hessian_target(
    checkpoint, work, s, out_path, label, overwrite, *, loss, bn_mode, dtype, engine
) -> tuple[dict, dict]:
    """The results file's root attributes and ``/hessian``'s.

    Checks first that the file holds this checkpoint's results and no ``/hessian`` of other
    options (unless ``overwrite``).
    """
    from landscape_cli.results import check_target

    root = provenance(checkpoint, work, label, out_path)
    check_target(out_path, root["checkpoint_sha256"], drop_foreign=overwrite)
    wanted = hessian_settings(s, work, loss=loss, bn_mode=bn_mode, dtype=dtype)
    if engine != "lanczos":  # files written before there were engines record none
        wanted["engine"] = engine
    check_same_options(out_path, "hessian", wanted, overwrite, ", or another `out` to keep both")
    return root, {**group_attrs(root, work, wanted), "engine": engine}


def hessian_job(
    checkpoint: Path,
    settings,
    *,
    source: Source = Source(),
    loss: str | None = None,
    bn_mode: str = "eval",
    dtype: str = "float32",
    cache_graphs: bool | None = None,
    device: str = "auto",
    out: Path | None = None,
    label: str | None = None,
    overwrite: bool = False,
    on_phase: Callable[[str, int], None] | None = None,
    on_hvp: Callable[[int], None] | None = None,
    engine: str = "lanczos",
):
    """Run ``landscape hessian``.

    Analyze the Hessian and write ``/hessian``; returns ``(report, results path, workload)``. On
    Ctrl-C, what was computed is written first.

    A file of another checkpoint, or a ``/hessian`` computed with other options, is refused
    before computing unless ``overwrite``. ``engine="pyhessian"`` takes the top-k and the trace
    from PyHessian with its defaults (:mod:`landscape_cli.hessian.pyhessian_engine`); the group
    records its ``engine`` either way.
    """
    from landscape_cli.devices import resolve_device
    from landscape_cli.results import check_target

    s = settings
    _check_hessian_options(s, loss=loss, bn_mode=bn_mode, dtype=dtype)
    _check_engine(engine, s, bn_mode=bn_mode, dtype=dtype)
    distributed.init(device)
    dev = distributed.local_device(resolve_device(device))
    out_path = results_path(checkpoint, out)
    check_target(out_path)
    work = source.load(checkpoint)
    n_grad = sum(p.numel() for p in work.model.parameters() if p.requires_grad)
    _check_size(s, n_grad, dev, dtype == "float64")
    loss = work.resolve_loss(loss)
    check_loss_on(work.model, work.batches, loss)
    root, attrs = _hessian_target(
        checkpoint, work, s, out_path, label, overwrite, loss=loss, bn_mode=bn_mode, dtype=dtype,
        engine=engine,
    )  # fmt: skip
    t0 = time.perf_counter()
    op = _hessian_operator(
        work, s, loss=loss, bn_mode=bn_mode, dev=dev, dtype=dtype, cache_graphs=cache_graphs
    )
    op.on_hvp = on_hvp
    results: dict = {}
    save = _hessian_saver(op, results, s, work, loss, t0, out_path, root, attrs, overwrite)
    try:
        _run_engine(engine, op, s, results, source=source, on_phase=on_phase)
    except KeyboardInterrupt:
        if not any(results.get(k) for k in ("top", "trace", "density", "per_layer")):
            raise
        raise Interrupted(_save_partial(out_path, save)) from None
    return save(), out_path, work


def _hessian_operator(work, s, *, loss: str, bn_mode: str, dev, dtype: str, cache_graphs):
    """The Hessian operator of the loaded workload, refused if constant or too large."""
    from landscape_cli import hessian as hs

    op = hs.HessianOperator(
        work.model,
        work.batches,
        loss=loss,
        bn_mode=bn_mode,
        device=dev,
        dtype=getattr(torch, dtype),
        cache_graphs=cache_graphs,
    )
    check_not_constant(op)
    _check_size(
        s, op.n, dev, dtype == "float64"
    )  # again: parameters without a gradient are left out
    return op


def _hessian_saver(
    op, results: dict, s, work, loss: str, t0: float, out_path, root, attrs, overwrite
):
    """The saver of an interrupted or finished ``hessian``: ``save(partial=False, to=None)``.

    The report of ``results`` so far, written on the main process (to ``to`` or the results file,
    rescued elsewhere if that fails); returns it.
    """
    from landscape_cli import hessian as hs
    from landscape_cli.results import write_hessian, write_or_rescue

    def save(partial: bool = False, to: Path | None = None):
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
        if results.get("pyhessian_hvp_count"):  # PyHessian's products, which op does not count
            report = replace(report, hvp_count=report.hvp_count + results["pyhessian_hvp_count"])
        if distributed.is_main():
            write_or_rescue(
                to or out_path,
                lambda p: write_hessian(
                    p, report, root=root, partial=partial, attrs=attrs, drop_foreign=overwrite
                ),
            )
        return report

    return save


def _check_hessian_options(s, *, loss: str | None, bn_mode: str, dtype: str) -> None:
    """Refuse inconsistent ``landscape hessian`` options before anything is loaded."""
    from landscape_cli import hessian as hs

    _check(
        [
            (s.top_k >= 0, "`top_k` must be >= 0"),
            (s.tol > 0, "`tol` must be > 0"),
            (s.max_steps >= 1, "`max_steps` must be >= 1"),
            (s.trace_probes == 0 or s.trace_probes >= 2, "`trace_probes` must be 0 or >= 2"),
            (s.trace_rtol >= 0, "`trace_rtol` must be >= 0"),
            (
                s.trace_method in hs.TRACE_METHODS,
                f"`trace_method` must be one of {hs.TRACE_METHODS}",
            ),
            (s.density_probes >= 0, "`density_probes` must be >= 0"),
            (s.density_tol >= 0, "`density_tol` must be >= 0"),
            (s.lanczos_steps >= 1, "`lanczos_steps` must be >= 1"),
            (s.density_sigma > 0, "`density_sigma` must be > 0"),
            (loss in (None, "ce", "mse"), "`loss` must be ce or mse"),
            (bn_mode in ("eval", "train"), "`bn_mode` must be eval or train"),
            (dtype in ("float32", "float64"), "`dtype` must be float32 or float64"),
            (
                s.top_k <= s.max_steps,
                f"`top_k={s.top_k}` needs at least as many Lanczos steps: raise `max_steps` "
                f"(now {s.max_steps}) or lower `top_k`",
            ),
        ]
    )


def _run_engine(engine: str, op, s, results: dict, *, source: Source, on_phase) -> None:
    """Fill ``results`` with the chosen engine's estimates (PyHessian notes go to ``source``)."""
    from landscape_cli import hessian as hs

    if engine == "pyhessian":
        from landscape_cli.hessian.pyhessian_engine import analyze_pyhessian

        for text in _pyhessian_notes(s):
            if source.on_note is not None and distributed.is_main():
                source.on_note(text)
        analyze_pyhessian(op, s, out=results, on_phase=on_phase)
    else:
        hs.analyze(op, s, out=results, on_phase=on_phase)


ENGINES = ("lanczos", "pyhessian")


def _check_engine(engine: str, s, *, bn_mode: str, dtype: str) -> None:
    """PyHessian runs with its own defaults, in eval mode, in float32, in one process.

    Options that would change what it computes are refused rather than silently ignored.
    """
    from landscape_cli.hessian import HessianSettings

    _check([(engine in ENGINES, f"`engine` must be one of {', '.join(ENGINES)}, got {engine!r}")])
    if engine != "pyhessian":
        return
    d = HessianSettings()
    _check(
        [
            (
                bn_mode == "eval",
                "`engine='pyhessian'` runs in eval mode (PyHessian calls model.eval()); "
                "`bn_mode='train'` needs `engine='lanczos'`",
            ),
            (
                dtype == "float32",
                "`engine='pyhessian'` computes in float32, as PyHessian does; `dtype='float64'` "
                "needs `engine='lanczos'`",
            ),
            (
                (s.tol, s.max_steps) == (d.tol, d.max_steps),
                "`tol` and `max_steps` set landscape's Lanczos; `engine='pyhessian'` runs "
                "PyHessian's power iteration with its defaults (maxIter=100, tol=1e-3)",
            ),
            (
                s.trace_probes in (0, d.trace_probes)
                and (s.trace_rtol, s.trace_method) == (d.trace_rtol, d.trace_method),
                "`engine='pyhessian'` runs PyHessian's trace() with its defaults (at most 100 "
                "probes, tol=1e-3): `trace_probes` takes 0 (no trace) or 100, and "
                "`trace_rtol` and `trace_method` apply to `engine='lanczos'`",
            ),
            (
                not distributed.launched(),
                "`engine='pyhessian'` runs in one process: launch it without torchrun",
            ),
        ]
    )


def _pyhessian_notes(s) -> list[str]:
    """What ``--engine pyhessian`` computes with landscape's estimators instead, one line each."""
    notes = []
    if s.density_probes > 0:
        notes.append(
            "PyHessian's density() fails on torch >= 2 (it calls torch.eig, which torch 2 "
            "removed): the density is landscape's stochastic Lanczos quadrature"
        )
    if s.per_layer:
        notes.append("PyHessian has no per-layer estimates: `per_layer=True` uses landscape's")
    return notes


def _check_size(s, n: int, dev, products_float64: bool = False) -> None:
    """Options against the model's size and the machine's memory, before any allocation."""
    if s.top_k > n:
        raise LandscapeError(
            f"`top_k={s.top_k}` exceeds the model's {n} parameters (the Hessian has {n} "
            "eigenvalues); lower `top_k`"
        )
    resources.require(resources.hessian_bytes(s, n, products_float64), dev)


def _save_partial(out_path: Path, save: Callable[..., Any]) -> str:
    """Keep what an interrupted ``hessian`` computed without ever replacing a complete result.

    Into ``out_path`` when it holds no complete ``/hessian``, else into a fresh file beside it;
    either way marked ``partial``. Returns the sentence that says where it went.
    """
    from landscape_cli.results import has_hessian, rescue_path

    if not distributed.is_main():
        save(partial=True)  # rank 0 writes; the others only take part in the collectives
        return "the partial result is saved by rank 0"
    if not has_hessian(out_path):
        save(partial=True)
        return f"the partial result was saved to {out_path} (marked partial)"
    target = rescue_path(out_path.with_name(out_path.stem + ".partial.h5"))
    save(partial=True, to=target)
    return (
        f"the complete /hessian in {out_path} was kept; the partial result was saved to "
        f"{target} (marked partial)"
    )


def hessian_settings(
    settings, work: Workload, *, loss: str, bn_mode: str, dtype: str
) -> dict[str, Any]:
    """The options a ``/hessian`` group was computed with (stored as its ``settings``)."""
    from dataclasses import asdict

    return {
        **asdict(settings),
        "loss": loss,
        "bn_mode": bn_mode,
        "dtype": dtype,
        "dataset": work.dataset,
        "split": work.split,
        "samples": work.samples,
        "samples_sha256": work.samples_sha256,
    }


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
    loss: str | None = None  # default: the checkpoint's training loss, else ce
    bn_mode: str = "eval"
    bn: str | None = None  # interpolations: recompute (default with BatchNorm) or interpolate
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
) -> tuple[ScanResult, Path]:
    """Run ``landscape scan``.

    Compute (or resume) a scan into ``/scan/<name>``; returns ``(scan as read back, results path)``.
    ``on_start(name, done, total)`` fires once the options are known to be consistent with any scan
    already in the file.
    """
    from landscape_cli import scan_store
    from landscape_cli.devices import resolve_device
    from landscape_cli.evaluation import to_device
    from landscape_cli.results import check_target

    o = options
    targets = list(o.to)
    kind = "interpolation" if targets else o.direction
    _check_scan_options(o, targets)
    distributed.init(device)
    dev = distributed.local_device(resolve_device(device))
    out_path = results_path(checkpoint, out)
    check_target(out_path)
    x, y = _scan_axes(o, targets)
    name = o.name or f"{o.dim}d-{kind}"
    resources.require(resources.scan_bytes(len(x) * (1 if y is None else len(y))), "cpu")

    work = source.load(checkpoint)
    loss = work.resolve_loss(o.loss)
    check_loss_on(work.model, work.batches, loss)
    root = provenance(checkpoint, work, label, out_path)
    check_target(out_path, root["checkpoint_sha256"], drop_foreign=o.overwrite)
    net = work.model.to(dev)
    batches = [to_device(b, dev, next(net.parameters()).dtype) for b in work.batches]
    _check_base_loss(checkpoint, net, batches, loss, o.bn_mode)
    plan, bn = _scan_plan(kind, o, targets, source, work, net, batches, loss, dev, name, x, y)
    plan.attrs["checkpoint_sha256"] = root["checkpoint_sha256"]
    total = int(math.prod(plan.shape))
    result = scan_store.execute(
        net,
        batches,
        plan,
        out=out_path,
        root=root,
        loss=loss,
        bn_mode=o.bn_mode,
        bn=bn,
        overwrite=o.overwrite,
        fold_every=o.fold_every,
        on_start=(lambda done, _: on_start(name, done, total)) if on_start else None,
        on_point=on_point,
    )
    return result, out_path


def _scan_plan(
    kind: str, o: ScanOptions, targets, source: Source, work, net, batches, loss, dev, name, x, y
):
    """The scan's plan for its ``kind`` of directions, and the BatchNorm handling (or ``None``)."""
    from landscape_cli import scan as sc

    common = {"samples": work.samples, "split": work.split, "samples_sha256": work.samples_sha256}
    if kind == "interpolation":
        return _interpolation_plan(o, targets, source, work, net, dev, name, x, y, common)
    if kind == "eigenvector":
        return _eigenvector_plan(o, net, batches, loss, dev, name, x, y, common), None
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
    return plan, None


def _check_scan_options(o: ScanOptions, targets: list[Path]) -> None:
    """Refuse inconsistent scan options before anything is loaded."""
    from landscape_cli import scan as sc

    _check(
        [
            (o.dim in (1, 2), "`dim` must be 1 or 2"),
            (o.direction in ("random", "eigenvector"), "`direction` must be random or eigenvector"),
            (
                not (targets and o.direction != "random"),
                "`to` and `direction='eigenvector'` exclude each other",
            ),
            (
                not targets or len(targets) == o.dim,
                f"`dim={o.dim}` interpolation needs {o.dim} `to` file(s)",
            ),
            (o.loss in (None, "ce", "mse"), "`loss` must be ce or mse"),
            (o.norm in sc.NORMS, f"`norm` must be one of {', '.join(sc.NORMS)}"),
            (o.ignore in sc.IGNORES, "`ignore` must be biasbn or none"),
            (
                isinstance(o.fold_every, (int, float)) and 0 < o.fold_every < float("inf"),
                f"`fold_every` must be a number of seconds > 0, got {o.fold_every}",
            ),
            (o.bn in (None, "recompute", "interpolate"), "`bn` must be recompute or interpolate"),
            (o.bn is None or bool(targets), "`bn` applies to interpolations (`to`)"),
        ]
    )


def _scan_axes(o: ScanOptions, targets: list[Path]):
    """The grid's x axis and, for ``dim == 2``, its y axis (else ``None``)."""
    from landscape_cli import scan as sc

    lo, hi = o.xrange if o.xrange is not None else ((-0.5, 1.5) if targets else (-1.0, 1.0))
    x = sc.axis(lo, hi, o.points)
    y = None
    if o.dim == 2:
        ylo, yhi = o.yrange if o.yrange is not None else (lo, hi)
        y = sc.axis(ylo, yhi, o.ypoints if o.ypoints is not None else o.points)
    return x, y


def _check_base_loss(checkpoint: Path, net, batches, loss: str, bn_mode: str) -> None:
    """Refuse a checkpoint whose loss at the centre is not finite."""
    from landscape_cli.evaluation import LOSSES, loss_and_accuracy

    base_loss, _ = loss_and_accuracy(net, batches, LOSSES[loss], bn_mode)
    if not math.isfinite(base_loss):
        raise LandscapeError(
            f"the loss of {checkpoint} is not finite ({base_loss}) on these samples; "
            "a scan around it would be all NaN"
        )


def _interpolation_plan(
    o: ScanOptions, targets, source: Source, work, net, dev, name, x, y, common
):
    """The plan towards the ``--to`` checkpoints, and the BatchNorm handling (or ``None``)."""
    from landscape_cli import scan as sc
    from landscape_cli.checkpoints import load_model
    from landscape_cli.results import sha256_file
    from landscape_cli.scan.grid import has_batchnorm

    bn = None
    if has_batchnorm(net):
        bn = o.bn or "recompute"

    kwargs = work.loaded.model_spec.get("kwargs", {})
    if work.loaded.kind == "hf":  # another fine-tune of the same base: a folder too
        from landscape_cli.models.hf import load_hf_folder

        others = [load_hf_folder(t, trust=source.trust).model.to(dev) for t in targets]
    else:
        loaded_targets = [
            load_model(
                t,
                model=source.model,
                input_shape=tuple(kwargs["input_shape"]) if "input_shape" in kwargs else None,
                num_classes=kwargs.get("num_classes"),
                model_options=source.model_options,
                trust=source.trust,
            )
            for t in targets
        ]
        for other in loaded_targets:
            source.note(other)
        others = [other.model.to(dev) for other in loaded_targets]
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
    return plan, bn


def _eigenvector_plan(o: ScanOptions, net, batches, loss: str, dev, name, x, y, common):
    """The plan along the top Hessian eigenvectors (seeded Lanczos start vector)."""
    from landscape_cli import scan as sc
    from landscape_cli.hessian import HessianOperator, lanczos_top

    op = HessianOperator(net, batches, loss=loss, bn_mode=o.bn_mode, device=dev)
    check_not_constant(op)
    top = lanczos_top(
        op,
        o.dim,
        tol=1e-6,
        max_steps=200,
        generator=torch.Generator().manual_seed(o.seed),
        eigenvectors=True,
    )
    return sc.eigenvector_plan(
        net, top.eigenvectors, top.eigenvalues, op.names, name=name, x=x, y=y,
        seed=o.seed, **common,
    )  # fmt: skip


def audit_settings(settings, work: Workload, match_loss: bool) -> dict[str, Any]:
    """The options an ``/audit`` group was computed with (stored as its ``settings``)."""
    from dataclasses import asdict

    return {
        **asdict(settings),
        "match_loss": match_loss,
        "dataset": work.dataset,
        "split": work.split,
        "samples": work.samples,
        "samples_sha256": work.samples_sha256,
    }


@dataclass(frozen=True)
class _Audited:
    """A checkpoint the audit measures, once it passed its checks.

    Its results file, samples, provenance and the settings its ``/audit`` records.
    """

    checkpoint: Path
    path: Path
    work: Workload
    root: dict[str, Any]
    wanted: dict[str, Any]


def audit_job(
    checkpoints: list[Path],
    settings,
    *,
    source: Source = Source(),
    match_loss: bool = False,
    device: str = "auto",
    overwrite: bool = False,
    on_phase: Callable[[str, int, str], None] | None = None,
    on_advance: Callable[[int], None] | None = None,
) -> tuple[list[AuditRow], list[Workload]]:
    """Run ``landscape audit``.

    Measure each checkpoint (and, with ``match_loss``, again at a common training loss) and write
    its ``/audit``; returns ``(rows, workloads)``.

    Hessian measures come from the checkpoint's ``/hessian`` when it is compatible
    (:func:`landscape_cli.audit.reusable`); otherwise the audit computes them and stores them in
    ``/audit/hessian``: an audit never replaces a ``/hessian``. With ``match_loss``, the
    checkpoint whose loss is the target (temperature 1) keeps its unmatched measures instead of
    measuring them again. Every results file is checked before anything is computed.

    Progress: ``on_phase(name, most work, unit)`` before each phase of each checkpoint (its
    name says which checkpoint, ``i/N``, and which measure) and ``on_advance(k)`` as work is done;
    the first phase starts only once every checkpoint and results file passed its checks.
    """
    from landscape_cli.devices import resolve_device

    _check_audit_settings(checkpoints, settings)
    distributed.init(device)
    dev = distributed.local_device(resolve_device(device))
    s, targets = _audit_targets(checkpoints, settings, source, match_loss, dev, overwrite)

    def phases(what: str) -> Callable[[str, int, str], None] | None:
        if on_phase is None:
            return None
        return lambda name, most, unit: on_phase(f"{what}: {name}", most, unit)

    rows, reports = [], []
    for i, t in enumerate(targets, 1):
        where = phases(f"checkpoint {i}/{len(targets)} {t.checkpoint.name}")
        row, report = _audit_one(t, s, dev, overwrite, where, on_advance)
        rows.append(row)
        reports.append(report)
    if match_loss:
        rows = _match_losses(rows, targets, s, dev, phases, on_advance)
    _write_audits(rows, targets, reports, s, overwrite)
    return rows, [t.work for t in targets]


def _check_audit_settings(checkpoints: list[Path], s) -> None:
    """Refuse an empty audit or inconsistent measure settings before anything is loaded."""
    _check(
        [
            (len(checkpoints) >= 1, "give at least one checkpoint"),
            (s.loss in ("", "ce", "mse"), "`loss` must be ce or mse"),
            (s.top_k >= 1, "`top_k` must be >= 1"),
            (s.tol > 0, "`tol` must be > 0"),
            (s.max_steps >= 1, "`max_steps` must be >= 1"),
            (
                s.top_k <= s.max_steps,
                f"`top_k={s.top_k}` needs at least as many Lanczos steps: raise `max_steps` "
                f"(now {s.max_steps}) or lower `top_k`",
            ),
            (s.epsilon > 0 and s.rho > 0, "`epsilon` and `rho` must be > 0"),
            (0 <= s.tau < 1, "`tau` must be in [0, 1)"),
        ]
    )


def _audit_targets(
    checkpoints: list[Path], settings, source: Source, match_loss: bool, dev, overwrite: bool
) -> tuple[Any, list[_Audited]]:
    """Load and check every checkpoint before any measuring.

    Load every checkpoint and check it, its loss, its size and its results file, before any
    measuring; returns the settings with the loss resolved, and the checked checkpoints.
    """
    from landscape_cli.results import check_target

    s = settings
    paths = [results_path(ck, None) for ck in checkpoints]
    for path in paths:
        check_target(path)
    works = [source.load(ck) for ck in checkpoints]
    if not s.loss:  # the checkpoints' own training loss
        losses = {work.resolve_loss(None) for work in works}
        if len(losses) > 1:
            raise LandscapeError(
                "the checkpoints were trained with different losses "
                f"({', '.join(sorted(losses))}); pass `loss` to audit them alike"
            )
        s = replace(s, loss=losses.pop())
    if match_loss and s.loss != "ce":
        raise LandscapeError("`match_loss=True` needs `loss='ce'`")
    for ck, work in zip(checkpoints, works, strict=True):
        check_loss_on(work.model, work.batches, s.loss)
        n = sum(p.numel() for p in work.model.parameters() if p.requires_grad)
        if s.top_k > n:
            raise LandscapeError(f"`top_k={s.top_k}` exceeds the {n} parameters of {ck}")
        resources.require(resources.hessian_bytes(s.hessian(), n), dev)
    way_out = "move or rename the checkpoint, or pass `overwrite=True` to drop them"
    targets = []
    for ck, path, work in zip(checkpoints, paths, works, strict=True):
        root = provenance(ck, work, None, path)
        check_target(path, root["checkpoint_sha256"], drop_foreign=overwrite, way_out=way_out)
        want = audit_settings(s, work, match_loss)
        check_same_options(path, "audit", want, overwrite, "")
        targets.append(_Audited(ck, path, work, root, want))
    return s, targets


def _reusable_hessian(t: _Audited, s, overwrite: bool) -> dict | None:
    """The checkpoint's ``/hessian`` read back when the audit may reuse it, else None."""
    from landscape_cli import audit as au
    from landscape_cli.results import list_groups, read_hessian

    if not t.path.exists() or (overwrite and _foreign_file(t.path, t.root)):
        return None
    if "hessian" not in list_groups(t.path):
        return None
    h = read_hessian(t.path)
    work = t.work
    ok = au.reusable(
        h, s, samples_sha256=work.samples_sha256, split=work.split, dataset=work.dataset
    )
    return h if ok else None


def _audit_one(t: _Audited, s, dev, overwrite: bool, on_phase, on_advance):
    """Measure one checkpoint.

    Its :class:`AuditRow`, and the report of the Hessian measures it computed (None when it reused
    ``/hessian``).
    """
    from landscape_cli import audit as au
    from landscape_cli.hessian import make_report

    t0 = time.perf_counter()
    stored = _reusable_hessian(t, s, overwrite)
    m = au.measure(
        t.work.model,
        t.work.batches,
        s,
        device=dev,
        stored=stored,
        on_phase=on_phase,
        on_advance=on_advance,
    )
    report = None
    if m.analysis is not None:
        report = make_report(
            m.operator,
            m.analysis,
            s.hessian(),
            samples=t.work.samples,
            batch_size=t.work.batch_size,
            split=t.work.split,
            loss=s.loss,
            seconds=time.perf_counter() - t0,
        )
    source = "hessian" if stored is not None else "audit/hessian"
    return au.AuditRow(str(t.checkpoint), str(t.path), m.measures, source), report


def _match_losses(
    rows: list[AuditRow], targets: list[_Audited], s, dev, phases, on_advance
) -> list[AuditRow]:
    """Measure the rows again at a common training loss (``--match-loss``).

    Each row with its measures at the group's largest training loss (its logits tempered to it; the
    checkpoint already there keeps its own measures).
    """
    from landscape_cli import audit as au

    ref = max(range(len(rows)), key=lambda i: rows[i].measures.train_loss)
    target = rows[ref].measures.train_loss
    out = []
    for i, (row, t) in enumerate(zip(rows, targets, strict=True)):
        work = t.work
        temp = 1.0 if i == ref else au.temperature_for_loss(work.model, work.batches, target)
        if temp == 1.0:  # already at the target loss: the unmatched measures are these
            out.append(replace(row, matched=row.measures))
            continue
        m = au.measure(
            work.model,
            work.batches,
            s,
            device=dev,
            temperature=temp,
            density=False,
            on_phase=phases(
                f"checkpoint {i + 1}/{len(rows)} {Path(row.checkpoint).name} at matched loss"
            ),
            on_advance=on_advance,
        ).measures
        hvps = row.measures.hvp_count + m.hvp_count
        out.append(replace(row, measures=replace(row.measures, hvp_count=hvps), matched=m))
    return out


def _write_audits(rows: list[AuditRow], targets: list[_Audited], reports, s, overwrite) -> None:
    """Write each row to its checkpoint's ``/audit`` (rank 0 only).

    A failed write is raised once the other checkpoints' results are written.
    """
    from landscape_cli.results import write_audit, write_or_rescue

    if not distributed.is_main():
        return
    failures: list[LandscapeError] = []
    for row, t, report in zip(rows, targets, reports, strict=True):
        attrs = {
            "checkpoint_sha256": t.root["checkpoint_sha256"],
            "samples_sha256": t.wanted["samples_sha256"],
            "settings": t.wanted,
            "samples": t.wanted["samples"],
            "epsilon": s.epsilon,
            "rho": s.rho,
        }
        stored_row = row.stored()

        def write(p: Path, root=t.root, stored_row=stored_row, report=report, attrs=attrs):
            return write_audit(
                p, root, stored_row, hessian=report, attrs=attrs, drop_foreign=overwrite
            )

        try:
            write_or_rescue(row.results, write)
        except LandscapeError as exc:  # write the other checkpoints' results first
            failures.append(exc)
    if failures:
        raise failures[0]


def _foreign_file(path: Path, root: dict[str, Any]) -> bool:
    from landscape_cli.results import read_root

    stored = read_root(path).get("checkpoint_sha256")
    return bool(stored) and stored != root["checkpoint_sha256"]
