"""The ``landscape scan`` job: :class:`ScanOptions` and :func:`scan_job`.

It checks the options and the results file before loading anything, loads the checkpoint and its
samples, plans the directions (random, Hessian eigenvectors, interpolation towards other
checkpoints, or the PCA plane of a training trajectory, :mod:`landscape_cli.jobs.trajectory`) and
runs the plan into ``/scan/<name>``, resumably (:mod:`landscape_cli.jobs.scan_journal`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from landscape_cli import distributed, files, resources
from landscape_cli.batches import to_device
from landscape_cli.checkpoints import load_model, read_file, sha256
from landscape_cli.devices import resolve_device
from landscape_cli.errors import LandscapeError, check_choice
from landscape_cli.hessian import HessianOperator, lanczos_top
from landscape_cli.jobs import scan_journal
from landscape_cli.jobs.common import (
    check_all,
    note_frozen,
    provenance,
    results_file_bytes,
    results_path,
)
from landscape_cli.jobs.scan_journal import check_resumable, journal_names
from landscape_cli.jobs.trajectory import (
    default_axes,
    evaluate_snapshots,
    read_trajectory,
    snapshot_files,
    trajectory_plan,
)
from landscape_cli.losses import LOSSES, check_loss_on, check_not_constant, loss_and_accuracy
from landscape_cli.models.hf import load_hf_folder
from landscape_cli.params import ParamSelection, select_parameters
from landscape_cli.precision import precision_name, with_precision
from landscape_cli.results import check_scan_name, check_target
from landscape_cli.scan import (
    IGNORES,
    NORMS,
    axis,
    eigenvector_plan,
    interpolation_plan,
    random_plan,
)
from landscape_cli.scan.grid import BN_CHOICES, has_batchnorm
from landscape_cli.workload import Source, Workload, load_workload

if TYPE_CHECKING:
    import numpy as np
    from torch import nn

    from landscape_cli.batches import Batch
    from landscape_cli.params import SelectedParams
    from landscape_cli.results import ScanResult
    from landscape_cli.scan.grid import ScanPlan


@dataclass(frozen=True)
class ScanOptions:
    """The options of ``landscape scan`` that shape the grid and the directions."""

    dim: int | None = None  # 1, or 2 for direction="pca" (the plane of a trajectory)
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
    trajectory: tuple[str | Path, ...] = ()  # direction="pca": the snapshots (files or globs)
    params: tuple[str, ...] = ()  # shell-style patterns on parameter names (landscape_cli.params)
    include_frozen: bool = False

    @property
    def selection(self) -> ParamSelection:
        """The parameters the directions move (:mod:`landscape_cli.params`)."""
        return ParamSelection(tuple(self.params), self.include_frozen)


@with_precision
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
    allow_tf32: bool = False,
    on_snapshot: Callable[[int, int], None] | None = None,
) -> tuple[ScanResult, Path]:
    """Run ``landscape scan``.

    Compute (or resume) a scan into ``/scan/<name>``; returns ``(scan as read back, results path)``.
    ``on_start(name, done, total)`` fires once the options are known to be consistent with any scan
    already in the file. It runs in IEEE float32 unless ``allow_tf32``
    (:mod:`landscape_cli.precision`), recorded as the scan's ``float32_precision``. A trajectory
    scan (``direction="pca"``) first reads its snapshots, telling ``on_snapshot(done, total)``
    (:mod:`landscape_cli.jobs.trajectory`).
    """
    if options.dim is None:
        options = replace(options, dim=2 if options.direction == "pca" else 1)
    targets = list(options.to)
    kind = "interpolation" if targets else options.direction
    _check_scan_options(options, targets)
    snapshots = _snapshot_files(options) if kind == "pca" else []
    distributed.init(device)
    dev = distributed.local_device(resolve_device(device))
    out_path = results_path(checkpoint, out)
    check_target(out_path)
    x, y = _scan_axes(options, targets)
    name = options.name or f"{options.dim}d-{kind}"
    points = len(x) * (1 if y is None else len(y))
    _check_scan_output(out_path, name, points)
    centre = _load_centre(checkpoint, options, source, dev, out_path, label, points)
    plan, bn = _plan(
        kind, options, targets, snapshots, source, centre, dev, name, x, y, out_path,
        precision_name(allow_tf32), on_snapshot,
    )  # fmt: skip
    total = int(math.prod(plan.shape))

    def started(done: int, _total: int) -> None:  # the options passed every check: tell, start
        if kind != "interpolation" or options.params:  # an interpolation moves all by default
            note_frozen(source, centre.chosen)
        if on_start is not None:
            on_start(name, done, total)

    result = scan_journal.execute(
        centre.net,
        centre.batches,
        plan,
        out=out_path,
        root=centre.root,
        loss=centre.loss,
        bn_mode=options.bn_mode,
        bn=bn,
        overwrite=options.overwrite,
        fold_every=options.fold_every,
        on_start=started,
        on_point=on_point,
    )
    return result, out_path


def _check_scan_output(out_path: Path, name: str, points: int) -> None:
    """The grid against the memory, and the results file, the journal and its lock writable."""
    resources.require(resources.scan_bytes(points), "cpu")
    journal = journal_names(out_path, name)  # the journal and its lock: names checked
    files.check_output(out_path, "results file", lock=True, extra_names=journal)


@dataclass(frozen=True)
class _Centre:
    """The checkpoint a scan is centred on, loaded and checked, on the scan's device.

    Its workload, the loss (resolved), the results file's root attributes, the parameters the
    directions move, the model and its samples on the device.
    """

    work: Workload
    loss: str
    root: dict[str, Any]
    chosen: SelectedParams
    net: nn.Module
    batches: list[Batch]


def _load_centre(
    checkpoint: Path, options: ScanOptions, source: Source, dev: torch.device, out_path: Path,
    label: str | None, points: int,
) -> _Centre:  # fmt: skip
    """Load the checkpoint and its samples and check them before any point is computed.

    The loss on the samples (finite at the centre), the results file (this checkpoint's, unless
    ``overwrite``) and its disk space.
    """
    work = load_workload(checkpoint, source)
    loss = work.resolve_loss(options.loss)
    check_loss_on(work.model, work.batches, loss)
    root = provenance(checkpoint, work, label, out_path)
    check_target(out_path, root["checkpoint_sha256"], drop_foreign=options.overwrite)
    chosen = select_parameters(work.model, options.selection)
    files.require_space(
        out_path, _scan_file_bytes(out_path, options.dim, points, work.model), "results file"
    )
    net = work.model.to(dev)
    batches = [to_device(b, dev, next(net.parameters()).dtype) for b in work.batches]
    _check_base_loss(checkpoint, net, batches, loss, options.bn_mode)
    return _Centre(work, loss, root, chosen, net, batches)


def _plan(
    kind: str, options: ScanOptions, targets: list[Path], snapshots: list[Path], source: Source,
    centre: _Centre, dev: torch.device, name: str, x: np.ndarray, y: np.ndarray | None,
    out_path: Path, precision: str, on_snapshot: Callable[[int, int], None] | None,
) -> tuple[ScanPlan, str | None]:  # fmt: skip
    """The scan's plan for its ``kind`` of directions, and the BatchNorm handling (or ``None``).

    Every plan records the checkpoint, the parameters its directions move and the float32
    precision beside its own attributes.
    """
    fixed = {  # what every plan records beside its directions
        "checkpoint_sha256": centre.root["checkpoint_sha256"],
        **_scan_selection_attrs(options, kind, centre.chosen),
        "float32_precision": precision,
    }
    if kind == "pca":  # the plane and its grid come from the snapshots
        plan, bn = _pca_plan(
            options, snapshots, source, centre.work, centre.net, centre.batches, centre.loss, dev,
            name, out_path, fixed, on_snapshot,
        )  # fmt: skip
    else:
        plan, bn = _scan_plan(
            kind, options, targets, source, centre.work, centre.net, centre.batches, centre.loss,
            dev, name, x, y,
        )  # fmt: skip
    plan.attrs.update(fixed)
    return plan, bn


def _scan_selection_attrs(
    options: ScanOptions, kind: str, chosen: SelectedParams
) -> dict[str, Any]:
    """What ``/scan/<name>`` records of the parameters its directions move.

    ``skipped_params`` and ``skipped_reasons`` (the parameters that stay put: none for an
    interpolation without ``params``), and the options ``params``/``include_frozen`` when given
    (both identify the scan, :data:`landscape_cli.scan.grid.IDENTITY`).
    """
    out: dict[str, Any] = ParamSelection(tuple(options.params), options.include_frozen).settings()
    moved_all = kind == "interpolation" and not options.params
    out["skipped_params"] = [] if moved_all else list(chosen.skipped)
    out["skipped_reasons"] = [] if moved_all else list(chosen.reasons)
    return out


def _scan_file_bytes(out_path: Path, dim: int, points: int, model: nn.Module) -> int:
    """About the bytes a scan adds to ``out_path``: its grids, its directions, its journal."""
    tensors = [t for t in model.state_dict().values() if t.is_floating_point()]
    directions = dim * sum(t.numel() * 8 + 2048 for t in tensors)  # float64 at most
    return results_file_bytes(out_path, 16 * points + directions) + 64 * points  # + journal


def _scan_plan(
    kind: str, options: ScanOptions, targets: list[Path], source: Source, work: Workload,
    net: nn.Module, batches: list[Batch], loss: str, dev: torch.device, name: str,
    x: np.ndarray, y: np.ndarray | None,
) -> tuple[ScanPlan, str | None]:  # fmt: skip
    """The scan's plan for its ``kind`` of directions, and the BatchNorm handling (or ``None``)."""
    common = _samples_attrs(work)
    if kind == "interpolation":
        return _interpolation_plan(options, targets, source, work, net, dev, name, x, y, common)
    if kind == "eigenvector":
        return _eigenvector_plan(options, net, batches, loss, dev, name, x, y, common), None
    plan = random_plan(
        net,
        name=name,
        x=x,
        y=y,
        seed=options.seed,
        norm=options.norm,
        ignore=options.ignore,
        orthogonalize=options.orthogonalize,
        selection=options.selection,
        **common,
    )
    return plan, None


def _check_scan_options(options: ScanOptions, targets: list[Path]) -> None:
    """Refuse inconsistent scan options before anything is loaded."""
    check_choice("dim", options.dim, (1, 2))
    check_choice("direction", options.direction, ("random", "eigenvector", "pca"))
    check_all(
        [
            (
                options.direction != "pca" or bool(options.trajectory),
                "`direction='pca'` needs the run's snapshots: `trajectory` (files or globs)",
            ),
            (
                not options.trajectory or options.direction == "pca",
                "`trajectory` gives the snapshots of `direction='pca'`",
            ),
            (
                options.direction != "pca" or options.dim == 2,
                "`direction='pca'` scans the plane of the trajectory's two principal directions: "
                "`dim` must be 2",
            ),
            (
                not (targets and options.direction != "random"),
                f"`to` and `direction={options.direction!r}` exclude each other",
            ),
            (
                not targets or len(targets) == options.dim,
                f"`dim={options.dim}` interpolation needs {options.dim} `to` file(s)",
            ),
        ]
    )
    if options.loss is not None:
        check_choice("loss", options.loss, LOSSES)
    check_choice("norm", options.norm, NORMS, one_of=True)
    check_choice("ignore", options.ignore, IGNORES)
    check_all(
        [
            (
                isinstance(options.fold_every, (int, float))
                and 0 < options.fold_every < float("inf"),
                f"`fold_every` must be a number of seconds > 0, got {options.fold_every}",
            ),
        ]
    )
    if options.bn is not None:
        check_choice("bn", options.bn, BN_CHOICES)
    check_all([(options.bn is None or bool(targets), "`bn` applies to interpolations (`to`)")])
    resources.check_fields(options)  # the grid's counts and ranges, the seed
    if options.name is not None:
        check_scan_name(options.name)


def _scan_axes(options: ScanOptions, targets: list[Path]):
    """The grid's x axis and, for ``dim == 2``, its y axis (else ``None``)."""
    lo, hi = (
        options.xrange if options.xrange is not None else ((-0.5, 1.5) if targets else (-1.0, 1.0))
    )
    x = axis(lo, hi, options.points)
    y = None
    if options.dim == 2:
        ylo, yhi = options.yrange if options.yrange is not None else (lo, hi)
        y = axis(ylo, yhi, options.ypoints if options.ypoints is not None else options.points)
    return x, y


def _snapshot_files(options: ScanOptions) -> list[Path]:
    """The trajectory's snapshot files, and its grid ranges checked, before anything is loaded."""
    for rng, n in (
        (options.xrange, options.points),
        (options.yrange, options.ypoints or options.points),
    ):
        if rng is not None:
            axis(rng[0], rng[1], n)
    return snapshot_files(options.trajectory)


def _pca_plan(options: ScanOptions, snapshots: list[Path], source: Source, work: Workload,
              net: nn.Module, batches: list[Batch], loss: str, dev: torch.device, name: str,
              out_path: Path, fixed: dict[str, Any],
              on_snapshot: Callable[[int, int], None] | None,
              ) -> tuple[ScanPlan, None]:  # fmt: skip
    """The plane of the trajectory's two principal directions around the checkpoint.

    Snapshots are read as ``to`` targets are (the checkpoint loader and key matching; code in a
    file runs only with ``trust``) and checked, and the scan's options checked against any scan
    of the same name, before anything is shown; then each snapshot is evaluated exactly on the
    scan's samples (not again when the scan is resumed: its stored trajectory is kept).
    """
    load = _snapshot_loader(work, source)
    dtype = next(net.parameters()).dtype

    def evaluate(model: nn.Module) -> tuple[float, float]:
        return loss_and_accuracy(
            model.to(device=dev, dtype=dtype), batches, LOSSES[loss], options.bn_mode
        )

    trajectory = read_trajectory(
        snapshots, checkpoint=work.loaded.path, model=net, load=load, ignore=options.ignore
    )
    x, y = default_axes(trajectory, options.points, options.ypoints, options.xrange, options.yrange)
    plan = trajectory_plan(
        net, trajectory, name=name, x=x, y=y, ignore=options.ignore, **_samples_attrs(work)
    )
    plan.attrs.update(fixed)
    attrs = {**plan.attrs, "loss": loss, "bn_mode": options.bn_mode}  # as execute() stores
    if not check_resumable(out_path, name, attrs, options.overwrite):
        trajectory = evaluate_snapshots(
            trajectory,
            load=lambda path: load(path, note=False),
            evaluate=evaluate,
            on_snapshot=on_snapshot,
        )
        plan = replace(plan, trajectory=trajectory.datasets())
    return plan, None


def _snapshot_loader(work: Workload, source: Source) -> Callable[..., tuple[nn.Module, Any]]:
    """``load(path, note=True)``: a snapshot of ``work``'s model, and the file's contents.

    Read as the checkpoint was (its model options; Hugging Face folders as folders); with
    ``note``, what the loader noted goes to ``source.on_note``.
    """
    kwargs = work.loaded.model_spec.get("kwargs", {})

    def load(path: Path, note: bool = True) -> tuple[nn.Module, Any]:
        if work.loaded.kind == "hf":  # snapshots of a fine-tune: folders too
            return load_hf_folder(path, trust=source.trust).model, None
        raw = read_file(path, trust=source.trust)
        loaded = load_model(
            path,
            model=source.model,
            input_shape=tuple(kwargs["input_shape"]) if "input_shape" in kwargs else None,
            num_classes=kwargs.get("num_classes"),
            model_options=source.model_options,
            trust=source.trust,
            contents=raw,
        )
        if note:
            source.note(loaded)
        return loaded.model, raw

    return load


def _samples_attrs(work: Workload) -> dict[str, Any]:
    """What a scan records of the samples it was computed on."""
    return {
        "dataset": work.dataset,
        "samples": work.samples,
        "split": work.split,
        "samples_sha256": work.samples_sha256,
    }


def _check_base_loss(
    checkpoint: Path, net: nn.Module, batches: list[Batch], loss: str, bn_mode: str
) -> None:
    """Refuse a checkpoint whose loss at the centre is not finite."""
    base_loss, _ = loss_and_accuracy(net, batches, LOSSES[loss], bn_mode)
    if not math.isfinite(base_loss):
        raise LandscapeError(
            f"the loss of {checkpoint} is not finite ({base_loss}) on these samples; "
            "a scan around it would be all NaN"
        )


def _interpolation_plan(
    options: ScanOptions, targets: list[Path], source: Source, work: Workload, net: nn.Module,
    dev: torch.device, name: str, x: np.ndarray, y: np.ndarray | None, common: dict[str, Any],
) -> tuple[ScanPlan, str | None]:  # fmt: skip
    """The plan towards the ``--to`` checkpoints, and the BatchNorm handling (or ``None``)."""
    bn = None
    if has_batchnorm(net):
        bn = options.bn or "recompute"

    kwargs = work.loaded.model_spec.get("kwargs", {})
    if work.loaded.kind == "hf":  # another fine-tune of the same base: a folder too
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
    names = select_parameters(net, options.selection).names if options.params else None
    plan = interpolation_plan(
        net,
        others,
        name=name,
        x=x,
        y=y,
        names=names,
        to=[str(t) for t in targets],
        targets_sha256=",".join(sha256(t) for t in targets),
        **common,
    )
    return plan, bn


def _eigenvector_plan(
    options: ScanOptions, net: nn.Module, batches: list[Batch], loss: str, dev: torch.device,
    name: str, x: np.ndarray, y: np.ndarray | None, common: dict[str, Any],
) -> ScanPlan:  # fmt: skip
    """The plan along the top Hessian eigenvectors (seeded Lanczos start vector)."""
    op = HessianOperator(
        net, batches, loss=loss, bn_mode=options.bn_mode, device=dev, params=options.selection
    )
    check_not_constant(op)
    top = lanczos_top(
        op,
        options.dim,
        tol=1e-6,
        max_steps=200,
        generator=torch.Generator().manual_seed(options.seed),
        eigenvectors=True,
    )
    return eigenvector_plan(
        net, top.eigenvectors, top.eigenvalues, op.names, name=name, x=x, y=y,
        seed=options.seed, **common,
    )  # fmt: skip
