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

from landscape_cli import distributed, files, interrupts, resources
from landscape_cli.errors import Interrupted, LandscapeError, check_choice
from landscape_cli.evaluation import LOSSES, check_loss_on, check_not_constant
from landscape_cli.params import ParamSelection, frozen_note, select_parameters
from landscape_cli.precision import precision_name, with_precision
from landscape_cli.workload import Workload, load_workload

if TYPE_CHECKING:
    import numpy as np
    from torch import nn

    from landscape_cli.audit import AuditRow, AuditSettings
    from landscape_cli.evaluation import Batch
    from landscape_cli.hessian import (
        Analysis,
        Collector,
        CurvatureOperator,
        HessianReport,
        HessianSettings,
        SampleSets,
    )
    from landscape_cli.params import SelectedParams
    from landscape_cli.results import HessianResult, ScanResult
    from landscape_cli.results.store import Check
    from landscape_cli.scan.grid import ScanPlan


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

    def load(self, checkpoint: Path, sample_sets: int = 1) -> Workload:
        """Load ``checkpoint`` and its samples as a :class:`Workload` with these settings.

        With ``sample_sets`` > 1, also the further disjoint sample sets (``Workload.sets``).
        """
        self.check()
        check_choice("split", self.split, ("train", "test"))
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
            sample_sets=sample_sets,
            seq_len=self.seq_len,
            pack=self.pack,
        )
        self.note(work.loaded)
        return work

    def check(self) -> None:
        """The counts and the seed against their domains (:func:`resources.check_options`)."""
        resources.check_options(
            {"samples": self.samples, "batch_size": self.batch_size, "seed": self.seed}
        )


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
    from landscape_cli.checkpoints import sha256
    from landscape_cli.results import read_root

    if label is None and not (out is not None and out.exists() and read_root(out).get("label")):
        label = Path(checkpoint).name if Path(checkpoint).is_dir() else Path(checkpoint).stem
    return {
        "checkpoint": str(checkpoint),
        "checkpoint_sha256": sha256(checkpoint),
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
    checkpoint: Path, work: Workload, s: HessianSettings, out_path: Path, label: str | None,
    overwrite: bool, *, loss: str, bn_mode: str, dtype: str, engine: str,
    curvature: str = "hessian", params: ParamSelection | None = None, allow_tf32: bool = False,
) -> tuple[dict[str, Any], dict[str, Any]]:  # fmt: skip
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
    wanted.update(measure_settings(curvature, params))
    if allow_tf32:  # files written before TF32 was a choice record none
        wanted["allow_tf32"] = True
    check_same_options(out_path, "hessian", wanted, overwrite, ", or another `out` to keep both")
    attrs = {**group_attrs(root, work, wanted), "engine": engine}
    return root, {**attrs, "float32_precision": precision_name(allow_tf32)}


@with_precision
def hessian_job(
    checkpoint: Path,
    settings: HessianSettings,
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
    curvature: str = "hessian",
    params: ParamSelection | None = None,
    allow_tf32: bool = False,
) -> tuple[HessianReport, Path, Workload]:
    """Run ``landscape hessian``.

    Analyze the Hessian (or the ``curvature`` ``ggn`` or ``fisher``) and write ``/hessian``;
    returns ``(report, results path, workload)``. On Ctrl-C, what was computed is written first.

    A file of another checkpoint, or a ``/hessian`` computed with other options, is refused
    before computing unless ``overwrite``. ``engine="pyhessian"`` takes the top-k and the trace
    from PyHessian with its defaults (:mod:`landscape_cli.hessian.pyhessian_engine`); the group
    records its ``engine`` either way. ``params`` chooses the parameters
    (:mod:`landscape_cli.params`); frozen ones left out are told to ``source.on_note``. It runs
    in IEEE float32 unless ``allow_tf32`` (:mod:`landscape_cli.precision`), recorded as the
    group's ``float32_precision``.
    """
    from landscape_cli import hessian as hs
    from landscape_cli.devices import resolve_device
    from landscape_cli.results import check_target

    s = settings
    params = params or ParamSelection()
    _check_hessian_options(s, loss=loss, bn_mode=bn_mode, dtype=dtype)
    _check_curvature(curvature, bn_mode=bn_mode)
    _check_engine(engine, s, bn_mode=bn_mode, dtype=dtype)
    _check_engine_measures(engine, curvature, params)
    distributed.init(device)
    dev = distributed.local_device(resolve_device(device))
    out_path = results_path(checkpoint, out)
    check_target(out_path)
    work = source.load(checkpoint, sample_sets=s.sample_sets)
    chosen = select_parameters(work.model, params)
    _check_size(s, chosen.numel, dev, dtype == "float64")
    tensors = len(chosen.names)
    files.require_space(
        out_path, _hessian_file_bytes(out_path, s, chosen.numel, tensors), "results file"
    )
    loss = work.resolve_loss(loss)
    check_loss_on(work.model, work.batches, loss)
    root, attrs = _hessian_target(
        checkpoint, work, s, out_path, label, overwrite, loss=loss, bn_mode=bn_mode, dtype=dtype,
        engine=engine, curvature=curvature, params=params, allow_tf32=allow_tf32,
    )  # fmt: skip
    t0 = time.perf_counter()
    op = _hessian_operator(
        work, s, loss=loss, bn_mode=bn_mode, dev=dev, dtype=dtype, cache_graphs=cache_graphs,
        curvature=curvature, params=params,
    )  # fmt: skip
    _note_frozen(source, chosen)
    op.on_hvp = on_hvp
    collected = hs.Collector()  # what was computed, also when interrupted
    save = _hessian_saver(op, collected, s, work, loss, t0, out_path, root, attrs, overwrite)
    try:
        analysis = _run_engine(
            engine, op, s, source=source, on_phase=on_phase, on_result=collected.record
        )
        if work.sets:  # the same estimates on the further sample sets
            sets = _sample_sets(
                work, s, analysis, on_phase, on_hvp,
                lambda w: _hessian_operator(
                    w, s, loss=loss, bn_mode=bn_mode, dev=dev, dtype=dtype,
                    cache_graphs=cache_graphs, curvature=curvature, params=params,
                ),
            )  # fmt: skip
            collected.record("sample_sets", sets)
    except KeyboardInterrupt:  # Ctrl-C, or SIGTERM (landscape_cli.interrupts)
        if not collected.freeze().computed:
            raise
        raise Interrupted(_save_partial(out_path, save)) from None
    with interrupts.deferred():  # a signal now waits until the finished result is written
        report = save()[0]
    return report, out_path, work


def _sample_sets(
    work: Workload,
    s: HessianSettings,
    first: Analysis,
    on_phase: Callable[[str, int], None] | None,
    on_hvp: Callable[[int], None] | None,
    make_op: Callable[[Workload], CurvatureOperator],
) -> SampleSets:
    """:func:`~landscape_cli.hessian.sample_set_spread` of ``work``'s further sample sets."""
    from landscape_cli import hessian as hs

    def maker(batches: list[Batch]) -> Callable[[], CurvatureOperator]:
        def make() -> CurvatureOperator:
            op = make_op(replace(work, batches=batches, sets=()))
            op.on_hvp = on_hvp
            return op

        return make

    others = [(one.samples_sha256, maker(one.batches)) for one in work.sets]
    return hs.sample_set_spread(first, work.samples_sha256, others, s, on_phase=on_phase)


def _results_file_bytes(out_path: Path, new: int) -> int:
    """The disk space a rewrite of ``out_path`` with ``new`` more bytes of data takes."""
    try:
        existing = out_path.stat().st_size
    except OSError:
        existing = 0
    return existing + int(new) + 16 * 1024  # HDF5's own metadata and the attributes


def _hessian_file_bytes(out_path: Path, s: HessianSettings, n: int, tensors: int) -> int:
    """About the bytes ``/hessian`` of these settings adds to ``out_path`` (over-estimated)."""
    new = 24 * s.top_k + 8 * s.trace_probes + 16 * s.density_probes * s.lanczos_steps
    new += 2 * 8 * 2000  # the density's grid
    if s.eigenvectors:
        new += 4 * s.top_k * n + 2048 * tensors
    if s.per_layer:
        new += 2048 * tensors
    return _results_file_bytes(out_path, new)


def _hessian_operator(
    work: Workload, s: HessianSettings, *, loss: str, bn_mode: str, dev: torch.device,
    dtype: str, cache_graphs: bool | None, curvature: str = "hessian",
    params: ParamSelection | None = None,
) -> CurvatureOperator:  # fmt: skip
    """The curvature operator of the loaded workload, refused if constant or too large."""
    from landscape_cli.hessian.curvature import curvature_operator

    op = curvature_operator(
        curvature,
        work.model,
        work.batches,
        loss=loss,
        bn_mode=bn_mode,
        device=dev,
        dtype=getattr(torch, dtype),
        cache_graphs=cache_graphs,
        params=params,
    )
    check_not_constant(op)
    _check_size(
        s, op.n, dev, dtype == "float64"
    )  # again: parameters without a gradient are left out
    return op


def _hessian_saver(
    op: CurvatureOperator,
    collected: Collector,
    s: HessianSettings,
    work: Workload,
    loss: str,
    t0: float,
    out_path: Path,
    root: dict[str, Any],
    attrs: dict[str, Any],
    overwrite: bool,
) -> Callable[..., tuple[HessianReport, str]]:
    """The saver of an interrupted or finished ``hessian``: ``save(partial=False)``.

    Makes the report of what was ``collected`` so far and, on the main process, writes it to the
    results file (rescued elsewhere if that fails, or if another run wrote ``/hessian`` meanwhile
    with other options; a partial one never replaces a complete ``/hessian``). Returns the report
    and the sentence that says where it went.
    """
    from landscape_cli import hessian as hs
    from landscape_cli.results import (
        all_of,
        expect_incomplete,
        expect_settings,
        write_hessian,
        write_or_rescue,
    )

    way_out = "pass `overwrite=True` to replace it, or another `out` to keep both"
    same = None if overwrite else expect_settings("hessian", attrs["settings"], way_out)

    def save(partial: bool = False) -> tuple[HessianReport, str]:
        analysis = collected.freeze()
        report = hs.make_report(
            op,
            analysis,
            s,
            samples=work.samples,
            batch_size=work.batch_size,
            split=work.split,
            loss=loss,
            seconds=time.perf_counter() - t0,
        )
        if analysis.pyhessian_hvp_count:  # PyHessian's products, which op does not count
            report = replace(report, hvp_count=report.hvp_count + analysis.pyhessian_hvp_count)
        if report.sample_sets is not None:  # the further sets' products, on their operators
            report = replace(report, hvp_count=report.hvp_count + report.sample_sets.hvp_count)
        extra = dict(attrs)
        if analysis.pyhessian_stopped is not None:  # its own rule, beside our `converged`
            extra["pyhessian_stopped"] = [int(x) for x in analysis.pyhessian_stopped]
        if not distributed.is_main():
            return report, "the partial result is saved by rank 0"
        check = all_of(same, expect_incomplete("hessian")) if partial else same

        def write(p: Path) -> Path:
            return write_hessian(
                p, report, root=root, partial=partial, attrs=extra, drop_foreign=overwrite,
                check=check,
            )  # fmt: skip

        if not partial:
            write_or_rescue(out_path, write)
            return report, f"the result was saved to {out_path}"
        return report, _write_partial(out_path, write)

    return save


def _write_partial(out_path: Path, write: Callable[[Path], Path]) -> str:
    """Write a partial result to ``out_path``, else to a fresh file; say where it went.

    A fresh ``<stem>.partial-<random>.h5`` when ``out_path`` holds a complete ``/hessian`` (or one
    of other options), a ``<stem>.rescued-<random>.h5`` when the write fails (a full disk).
    """
    from landscape_cli.results import ResultsConflict, verify_readable

    try:
        write(out_path)
        return f"the partial result was saved to {out_path} (marked partial)"
    except ResultsConflict as exc:  # a complete /hessian (or one of other options) stays
        lead, label = str(exc), "partial"
    except files.WriteError as exc:
        lead, label = str(exc), "rescued"
    try:
        saved = files.rescue(
            out_path, write, what="results file", verify=verify_readable, label=label
        )
    except files.WriteError as again:
        return f"{lead}; {again}: the partial result is lost"
    return f"{lead}; the partial result was saved to {saved} (marked partial)"


def _check_hessian_options(
    s: HessianSettings, *, loss: str | None, bn_mode: str, dtype: str
) -> None:
    """Refuse inconsistent ``landscape hessian`` options before anything is loaded."""
    from landscape_cli import hessian as hs

    _check(
        [
            (s.top_k >= 0, "`top_k` must be >= 0"),
            (s.tol > 0, "`tol` must be > 0"),
            (s.max_steps >= 1, "`max_steps` must be >= 1"),
            (s.sample_sets >= 1, "`sample_sets` must be >= 1"),
            (
                0 <= s.block_size <= max(1, s.max_steps),
                f"`block_size` must be 0 (automatic) or between 1 and `max_steps` "
                f"({s.max_steps}), got {s.block_size}",
            ),
            (s.trace_probes == 0 or s.trace_probes >= 2, "`trace_probes` must be 0 or >= 2"),
            (s.trace_rtol >= 0, "`trace_rtol` must be >= 0"),
        ]
    )
    check_choice("trace_method", s.trace_method, hs.TRACE_METHODS, one_of=True)
    _check(
        [
            (s.density_probes >= 0, "`density_probes` must be >= 0"),
            (s.density_tol >= 0, "`density_tol` must be >= 0"),
            (s.lanczos_steps >= 1, "`lanczos_steps` must be >= 1"),
            (s.density_sigma > 0, "`density_sigma` must be > 0"),
            (
                s.per_layer_probes >= 2,
                "`per_layer_probes` must be >= 2 (a standard error needs two probes)",
            ),
        ]
    )
    if loss is not None:
        check_choice("loss", loss, LOSSES)
    check_choice("bn_mode", bn_mode, ("eval", "train"))
    check_choice("dtype", dtype, ("float32", "float64"))
    _check(
        [
            (
                s.top_k <= s.max_steps,
                f"`top_k={s.top_k}` needs at least as many Lanczos steps: raise `max_steps` "
                f"(now {s.max_steps}) or lower `top_k`",
            ),
        ]
    )
    resources.check_fields(s)  # every count, tolerance and the seed in its domain


def _run_engine(
    engine: str,
    op: CurvatureOperator,
    s: HessianSettings,
    *,
    source: Source,
    on_phase: Callable[[str, int], None] | None,
    on_result: Callable[[str, Any], None],
) -> Analysis:
    """The chosen engine's estimates, each also to ``on_result`` (PyHessian notes to ``source``)."""
    from landscape_cli import hessian as hs

    if engine == "pyhessian":
        from landscape_cli.hessian.pyhessian_engine import analyze_pyhessian

        for text in _pyhessian_notes(s):
            if source.on_note is not None and distributed.is_main():
                source.on_note(text)
        return analyze_pyhessian(op, s, on_result=on_result, on_phase=on_phase)
    return hs.analyze(op, s, on_result=on_result, on_phase=on_phase)


ENGINES = ("lanczos", "pyhessian")


def _check_engine(engine: str, s: HessianSettings, *, bn_mode: str, dtype: str) -> None:
    """PyHessian runs with its own defaults, in eval mode, in float32, in one process.

    Options that would change what it computes are refused rather than silently ignored.
    """
    from landscape_cli.hessian import HessianSettings

    check_choice("engine", engine, ENGINES, one_of=True)
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
                (s.tol, s.max_steps, s.block_size, s.sample_sets)
                == (d.tol, d.max_steps, d.block_size, d.sample_sets),
                "`tol`, `max_steps`, `block_size` and `sample_sets` set landscape's Lanczos; "
                "`engine='pyhessian'` runs PyHessian's power iteration with its defaults "
                "(maxIter=100, tol=1e-3)",
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


def _check_curvature(curvature: str, *, bn_mode: str) -> None:
    """The curvature matrix asked for exists and is defined in this mode."""
    from landscape_cli.hessian.curvature import CURVATURES

    check_choice("curvature", curvature, CURVATURES, one_of=True)
    _check(
        [
            (
                not (curvature == "fisher" and bn_mode == "train"),
                "`curvature='fisher'` needs per-sample gradients, which `bn_mode='train'` does "
                "not give (BatchNorm normalises each sample by its batch's statistics); use "
                "`bn_mode='eval'`",
            ),
        ]
    )


def _check_engine_measures(engine: str, curvature: str, params: ParamSelection) -> None:
    """PyHessian measures the Hessian of every trainable parameter, nothing else."""
    if engine != "pyhessian":
        return
    _check(
        [
            (
                curvature == "hessian",
                f"`engine='pyhessian'` computes the Hessian only; `curvature={curvature!r}` "
                "needs `engine='lanczos'`",
            ),
            (
                params == ParamSelection(),
                "`engine='pyhessian'` measures every trainable parameter; `params` and "
                "`include_frozen` need `engine='lanczos'`",
            ),
        ]
    )


def measure_settings(curvature: str, params: ParamSelection | None) -> dict[str, Any]:
    """The curvature and parameter options as a group's settings: only what is not the default.

    ``curvature`` (when not ``hessian``), ``params`` and ``include_frozen``
    (:meth:`~landscape_cli.params.ParamSelection.settings`), so that groups written before these
    options existed keep matching the same command.
    """
    out: dict[str, Any] = {} if curvature == "hessian" else {"curvature": curvature}
    return {**out, **(params or ParamSelection()).settings()}


def _note_frozen(source: Source, chosen: SelectedParams) -> None:
    """Tell ``source.on_note`` (main process) which frozen parameters are left out."""
    text = frozen_note(chosen.skipped, chosen.reasons, chosen.skipped_numel)
    if text and source.on_note is not None and distributed.is_main():
        source.on_note(text)


def _pyhessian_notes(s: HessianSettings) -> list[str]:
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


def _check_size(
    s: HessianSettings, n: int, dev: torch.device, products_float64: bool = False
) -> None:
    """Options against the model's size and the machine's memory, before any allocation."""
    if s.top_k > n:
        raise LandscapeError(
            f"`top_k={s.top_k}` exceeds the model's {n} parameters (the Hessian has {n} "
            "eigenvalues); lower `top_k`"
        )
    resources.require(resources.hessian_bytes(s, n, products_float64), dev)


def _save_partial(out_path: Path, save: Callable[..., Any]) -> str:
    """Keep what an interrupted ``hessian`` computed without ever replacing a complete result.

    Into ``out_path`` when it holds no complete ``/hessian``, else into a fresh
    ``<stem>.partial-<random>.h5`` beside it; either way marked ``partial``. Returns the sentence
    that says where it went. A second signal while it is written waits (``interrupts``).
    """
    return save(partial=True)[1]


def hessian_settings(
    settings: HessianSettings, work: Workload, *, loss: str, bn_mode: str, dtype: str
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
    (:mod:`landscape_cli.trajectory`).
    """
    from landscape_cli import scan_store
    from landscape_cli.devices import resolve_device
    from landscape_cli.evaluation import to_device
    from landscape_cli.results import check_target

    o = options
    if o.dim is None:
        o = replace(o, dim=2 if o.direction == "pca" else 1)
    targets = list(o.to)
    kind = "interpolation" if targets else o.direction
    _check_scan_options(o, targets)
    snapshots = _snapshot_files(o) if kind == "pca" else []
    distributed.init(device)
    dev = distributed.local_device(resolve_device(device))
    out_path = results_path(checkpoint, out)
    check_target(out_path)
    x, y = _scan_axes(o, targets)
    name = o.name or f"{o.dim}d-{kind}"
    points = len(x) * (1 if y is None else len(y))
    resources.require(resources.scan_bytes(points), "cpu")
    journal = scan_store.journal_names(out_path, name)  # the journal and its lock: names checked
    files.check_output(out_path, "results file", lock=True, extra_names=journal)

    work = source.load(checkpoint)
    loss = work.resolve_loss(o.loss)
    check_loss_on(work.model, work.batches, loss)
    root = provenance(checkpoint, work, label, out_path)
    check_target(out_path, root["checkpoint_sha256"], drop_foreign=o.overwrite)
    chosen = select_parameters(work.model, o.selection)
    files.require_space(
        out_path, _scan_file_bytes(out_path, o.dim, points, work.model), "results file"
    )
    net = work.model.to(dev)
    batches = [to_device(b, dev, next(net.parameters()).dtype) for b in work.batches]
    _check_base_loss(checkpoint, net, batches, loss, o.bn_mode)
    fixed = {  # what every plan records beside its directions
        "checkpoint_sha256": root["checkpoint_sha256"],
        **_scan_selection_attrs(o, kind, chosen),
        "float32_precision": precision_name(allow_tf32),
    }
    if kind == "pca":  # the plane and its grid come from the snapshots
        plan, bn = _pca_plan(
            o, snapshots, source, work, net, batches, loss, dev, name, out_path, fixed,
            on_snapshot,
        )  # fmt: skip
    else:
        plan, bn = _scan_plan(kind, o, targets, source, work, net, batches, loss, dev, name, x, y)
    plan.attrs.update(fixed)
    total = int(math.prod(plan.shape))

    def started(done: int, _total: int) -> None:  # the options passed every check: tell, start
        if kind != "interpolation" or o.params:  # an interpolation moves everything by default
            _note_frozen(source, chosen)
        if on_start is not None:
            on_start(name, done, total)

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
        on_start=started,
        on_point=on_point,
    )
    return result, out_path


def _scan_selection_attrs(o: ScanOptions, kind: str, chosen: SelectedParams) -> dict[str, Any]:
    """What ``/scan/<name>`` records of the parameters its directions move.

    ``skipped_params`` and ``skipped_reasons`` (the parameters that stay put: none for an
    interpolation without ``params``), and the options ``params``/``include_frozen`` when given
    (both identify the scan, :data:`landscape_cli.scan.grid.IDENTITY`).
    """
    out: dict[str, Any] = ParamSelection(tuple(o.params), o.include_frozen).settings()
    moved_all = kind == "interpolation" and not o.params
    out["skipped_params"] = [] if moved_all else list(chosen.skipped)
    out["skipped_reasons"] = [] if moved_all else list(chosen.reasons)
    return out


def _scan_file_bytes(out_path: Path, dim: int, points: int, model: nn.Module) -> int:
    """About the bytes a scan adds to ``out_path``: its grids, its directions, its journal."""
    tensors = [t for t in model.state_dict().values() if t.is_floating_point()]
    directions = dim * sum(t.numel() * 8 + 2048 for t in tensors)  # float64 at most
    return _results_file_bytes(out_path, 16 * points + directions) + 64 * points  # + journal


def _scan_plan(
    kind: str, o: ScanOptions, targets: list[Path], source: Source, work: Workload,
    net: nn.Module, batches: list[Batch], loss: str, dev: torch.device, name: str,
    x: np.ndarray, y: np.ndarray | None,
) -> tuple[ScanPlan, str | None]:  # fmt: skip
    """The scan's plan for its ``kind`` of directions, and the BatchNorm handling (or ``None``)."""
    from landscape_cli import scan as sc

    common = {
        "dataset": work.dataset,
        "samples": work.samples,
        "split": work.split,
        "samples_sha256": work.samples_sha256,
    }
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
        selection=o.selection,
        **common,
    )
    return plan, None


def _check_scan_options(o: ScanOptions, targets: list[Path]) -> None:
    """Refuse inconsistent scan options before anything is loaded."""
    from landscape_cli import scan as sc
    from landscape_cli.results import check_scan_name
    from landscape_cli.scan.grid import BN_CHOICES

    check_choice("dim", o.dim, (1, 2))
    check_choice("direction", o.direction, ("random", "eigenvector", "pca"))
    _check(
        [
            (
                o.direction != "pca" or bool(o.trajectory),
                "`direction='pca'` needs the run's snapshots: `trajectory` (files or globs)",
            ),
            (
                not o.trajectory or o.direction == "pca",
                "`trajectory` gives the snapshots of `direction='pca'`",
            ),
            (
                o.direction != "pca" or o.dim == 2,
                "`direction='pca'` scans the plane of the trajectory's two principal directions: "
                "`dim` must be 2",
            ),
            (
                not (targets and o.direction != "random"),
                f"`to` and `direction={o.direction!r}` exclude each other",
            ),
            (
                not targets or len(targets) == o.dim,
                f"`dim={o.dim}` interpolation needs {o.dim} `to` file(s)",
            ),
        ]
    )
    if o.loss is not None:
        check_choice("loss", o.loss, LOSSES)
    check_choice("norm", o.norm, sc.NORMS, one_of=True)
    check_choice("ignore", o.ignore, sc.IGNORES)
    _check(
        [
            (
                isinstance(o.fold_every, (int, float)) and 0 < o.fold_every < float("inf"),
                f"`fold_every` must be a number of seconds > 0, got {o.fold_every}",
            ),
        ]
    )
    if o.bn is not None:
        check_choice("bn", o.bn, BN_CHOICES)
    _check([(o.bn is None or bool(targets), "`bn` applies to interpolations (`to`)")])
    resources.check_fields(o)  # the grid's counts and ranges, the seed
    if o.name is not None:
        check_scan_name(o.name)


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


def _snapshot_files(o: ScanOptions) -> list[Path]:
    """The trajectory's snapshot files, and its grid ranges checked, before anything is loaded."""
    from landscape_cli import scan as sc
    from landscape_cli.trajectory import snapshot_files

    for rng, n in ((o.xrange, o.points), (o.yrange, o.ypoints or o.points)):
        if rng is not None:
            sc.axis(rng[0], rng[1], n)
    return snapshot_files(o.trajectory)


def _pca_plan(o: ScanOptions, snapshots: list[Path], source: Source, work: Workload,
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
    from landscape_cli import scan_store
    from landscape_cli import trajectory as tj
    from landscape_cli.checkpoints import load_model, read_file
    from landscape_cli.evaluation import LOSSES, loss_and_accuracy

    kwargs = work.loaded.model_spec.get("kwargs", {})

    def load(path: Path, note: bool = True) -> tuple[nn.Module, Any]:
        if work.loaded.kind == "hf":  # snapshots of a fine-tune: folders too
            from landscape_cli.models.hf import load_hf_folder

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

    dtype = next(net.parameters()).dtype

    def evaluate(model: nn.Module) -> tuple[float, float]:
        return loss_and_accuracy(
            model.to(device=dev, dtype=dtype), batches, LOSSES[loss], o.bn_mode
        )

    trajectory = tj.read_trajectory(
        snapshots, checkpoint=work.loaded.path, model=net, load=load, ignore=o.ignore
    )
    x, y = tj.default_axes(trajectory, o.points, o.ypoints, o.xrange, o.yrange)
    common = {
        "dataset": work.dataset,
        "samples": work.samples,
        "split": work.split,
        "samples_sha256": work.samples_sha256,
    }
    plan = tj.trajectory_plan(net, trajectory, name=name, x=x, y=y, ignore=o.ignore, **common)
    plan.attrs.update(fixed)
    attrs = {**plan.attrs, "loss": loss, "bn_mode": o.bn_mode}  # as scan_store.execute stores
    if not scan_store.check_resumable(out_path, name, attrs, o.overwrite):
        trajectory = tj.evaluate_snapshots(
            trajectory,
            load=lambda path: load(path, note=False),
            evaluate=evaluate,
            on_snapshot=on_snapshot,
        )
        plan = replace(plan, trajectory=trajectory.datasets())
    return plan, None


def _check_base_loss(
    checkpoint: Path, net: nn.Module, batches: list[Batch], loss: str, bn_mode: str
) -> None:
    """Refuse a checkpoint whose loss at the centre is not finite."""
    from landscape_cli.evaluation import LOSSES, loss_and_accuracy

    base_loss, _ = loss_and_accuracy(net, batches, LOSSES[loss], bn_mode)
    if not math.isfinite(base_loss):
        raise LandscapeError(
            f"the loss of {checkpoint} is not finite ({base_loss}) on these samples; "
            "a scan around it would be all NaN"
        )


def _interpolation_plan(
    o: ScanOptions, targets: list[Path], source: Source, work: Workload, net: nn.Module,
    dev: torch.device, name: str, x: np.ndarray, y: np.ndarray | None, common: dict[str, Any],
) -> tuple[ScanPlan, str | None]:  # fmt: skip
    """The plan towards the ``--to`` checkpoints, and the BatchNorm handling (or ``None``)."""
    from landscape_cli import scan as sc
    from landscape_cli.checkpoints import load_model, sha256
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
    names = select_parameters(net, o.selection).names if o.params else None
    plan = sc.interpolation_plan(
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
    o: ScanOptions, net: nn.Module, batches: list[Batch], loss: str, dev: torch.device,
    name: str, x: np.ndarray, y: np.ndarray | None, common: dict[str, Any],
) -> ScanPlan:  # fmt: skip
    """The plan along the top Hessian eigenvectors (seeded Lanczos start vector)."""
    from landscape_cli import scan as sc
    from landscape_cli.hessian import HessianOperator, lanczos_top

    op = HessianOperator(net, batches, loss=loss, bn_mode=o.bn_mode, device=dev, params=o.selection)
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


def audit_settings(settings: AuditSettings, work: Workload, match_loss: bool) -> dict[str, Any]:
    """The options an ``/audit`` group was computed with (stored as its ``settings``)."""
    from dataclasses import asdict

    options = asdict(settings)
    # The curvature and parameter options only when set: audits made before they existed match.
    for key in ("curvature", "params", "include_frozen"):
        options.pop(key, None)
    options.update(measure_settings(settings.curvature, settings.selection))
    return {
        **options,
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


@with_precision
def audit_job(
    checkpoints: list[Path],
    settings: AuditSettings,
    *,
    source: Source = Source(),
    match_loss: bool = False,
    device: str = "auto",
    overwrite: bool = False,
    on_phase: Callable[[str, int, str], None] | None = None,
    on_advance: Callable[[int], None] | None = None,
    allow_tf32: bool = False,
) -> tuple[list[AuditRow], list[Workload]]:
    """Run ``landscape audit``.

    Measure each checkpoint (and, with ``match_loss``, again at a common training loss) and write
    its ``/audit``; returns ``(rows, workloads)``.

    Hessian measures come from the checkpoint's ``/hessian`` when it is compatible
    (:meth:`landscape_cli.results.HessianResult.covers`); otherwise the audit computes them and
    stores them in ``/audit/hessian``: an audit never replaces a ``/hessian``. With ``match_loss``,
    the checkpoint whose loss is the target (temperature 1) keeps its unmatched measures instead of
    measuring them again. Every results file is checked before anything is computed.

    Progress: ``on_phase(name, most work, unit)`` before each phase of each checkpoint (its
    name says which checkpoint, ``i/N``, and which measure) and ``on_advance(k)`` as work is done;
    the first phase starts only once every checkpoint and results file passed its checks. It runs
    in IEEE float32 unless ``allow_tf32`` (:mod:`landscape_cli.precision`), recorded as
    ``/audit``'s ``float32_precision``; an exact audit never reuses a ``/hessian`` made with TF32.
    """
    from landscape_cli.devices import resolve_device

    _check_audit_settings(checkpoints, settings)
    distributed.init(device)
    dev = distributed.local_device(resolve_device(device))
    s, targets = _audit_targets(
        checkpoints, settings, source, match_loss, dev, overwrite, allow_tf32=allow_tf32
    )

    def phases(what: str) -> Callable[[str, int, str], None] | None:
        if on_phase is None:
            return None
        return lambda name, most, unit: on_phase(f"{what}: {name}", most, unit)

    rows, reports = [], []
    for i, t in enumerate(targets, 1):
        where = phases(f"checkpoint {i}/{len(targets)} {t.checkpoint.name}")
        row, report = _audit_one(t, s, dev, overwrite, where, on_advance, allow_tf32=allow_tf32)
        rows.append(row)
        reports.append(report)
    if match_loss:
        rows = _match_losses(rows, targets, s, dev, phases, on_advance)
    with interrupts.deferred():  # a signal now waits until the measures are written
        _write_audits(rows, targets, reports, s, overwrite, precision_name(allow_tf32))
    return rows, [t.work for t in targets]


def _check_audit_settings(checkpoints: list[Path], s: AuditSettings) -> None:
    """Refuse an empty audit or inconsistent measure settings before anything is loaded."""
    _check(
        [
            (len(checkpoints) >= 1, "give at least one checkpoint"),
        ]
    )
    if s.loss != "":  # "": the checkpoints' own training loss
        check_choice("loss", s.loss, LOSSES)
    _check(
        [
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
    _check_curvature(s.curvature, bn_mode="eval")
    resources.check_fields(s)  # every count, radius, tolerance and the seed in its domain


def _audit_targets(
    checkpoints: list[Path],
    settings: AuditSettings,
    source: Source,
    match_loss: bool,
    dev: torch.device,
    overwrite: bool,
    allow_tf32: bool = False,
) -> tuple[AuditSettings, list[_Audited]]:
    """Load and check every checkpoint before any measuring.

    Load every checkpoint and check it, its loss, its size and its results file, before any
    measuring; returns the settings with the loss resolved, and the checked checkpoints.
    """
    from landscape_cli.results import check_target

    s = settings
    paths = [results_path(ck, None) for ck in checkpoints]
    for path in paths:
        check_target(path)
    works = [source.load(ck, sample_sets=s.sample_sets) for ck in checkpoints]
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
    chosen = []
    for ck, work in zip(checkpoints, works, strict=True):
        check_loss_on(work.model, work.batches, s.loss)
        chosen.append(select_parameters(work.model, s.selection))
        n = chosen[-1].numel
        if s.top_k > n:
            raise LandscapeError(f"`top_k={s.top_k}` exceeds the {n} parameters of {ck}")
        resources.require(resources.hessian_bytes(s.hessian(), n), dev)
        path = results_path(ck, None)
        tensors = sum(1 for p in work.model.parameters() if p.requires_grad)
        files.require_space(
            path, _hessian_file_bytes(path, s.hessian(), n, tensors), "results file"
        )
    way_out = "move or rename the checkpoint, or pass `overwrite=True` to drop them"
    targets = []
    for ck, path, work in zip(checkpoints, paths, works, strict=True):
        root = provenance(ck, work, None, path)
        check_target(path, root["checkpoint_sha256"], drop_foreign=overwrite, way_out=way_out)
        want = audit_settings(s, work, match_loss)
        if allow_tf32:  # files written before TF32 was a choice record none
            want["allow_tf32"] = True
        check_same_options(path, "audit", want, overwrite, "")
        targets.append(_Audited(ck, path, work, root, want))
    for ck, c in zip(checkpoints, chosen, strict=True):
        text = frozen_note(c.skipped, c.reasons, c.skipped_numel)
        if text and source.on_note is not None and distributed.is_main():
            source.on_note(f"{Path(ck).name}: {text}")
    return s, targets


def _reusable_hessian(
    t: _Audited, s: AuditSettings, overwrite: bool, allow_tf32: bool = False
) -> HessianResult | None:
    """The checkpoint's ``/hessian`` read back when the audit may reuse it, else None."""
    from landscape_cli.results import list_groups, read_hessian

    if not t.path.exists() or (overwrite and _foreign_file(t.path, t.root)):
        return None
    if "hessian" not in list_groups(t.path):
        return None
    h = read_hessian(t.path)
    work = t.work
    ok = h.covers(
        s,
        samples_sha256=work.samples_sha256,
        split=work.split,
        dataset=work.dataset,
        allow_tf32=allow_tf32,
        set_hashes=[one.samples_sha256 for one in work.sets],
    )
    return h if ok else None


def _audit_one(
    t: _Audited,
    s: AuditSettings,
    dev: torch.device,
    overwrite: bool,
    on_phase: Callable[[str, int, str], None] | None,
    on_advance: Callable[[int], None] | None,
    allow_tf32: bool = False,
) -> tuple[AuditRow, HessianReport | None]:
    """Measure one checkpoint.

    Its :class:`AuditRow`, and the report of the Hessian measures it computed (None when it reused
    ``/hessian``).
    """
    from landscape_cli import audit as au
    from landscape_cli.hessian import make_report

    t0 = time.perf_counter()
    stored = _reusable_hessian(t, s, overwrite, allow_tf32)
    m = au.measure(
        t.work.model,
        t.work.batches,
        s,
        device=dev,
        stored=stored,
        on_phase=on_phase,
        on_advance=on_advance,
        sets=[(one.batches, one.samples_sha256) for one in t.work.sets],
        samples_sha256=t.work.samples_sha256,
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
    rows: list[AuditRow],
    targets: list[_Audited],
    s: AuditSettings,
    dev: torch.device,
    phases: Callable[[str], Callable[[str, int, str], None] | None],
    on_advance: Callable[[int], None] | None,
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


def _write_audits(
    rows: list[AuditRow],
    targets: list[_Audited],
    reports: list[HessianReport | None],
    s: AuditSettings,
    overwrite: bool,
    precision: str = "ieee",
) -> None:
    """Write each row to its checkpoint's ``/audit`` (rank 0 only).

    A failed write is raised once the other checkpoints' results are written.
    """
    from landscape_cli.results import expect_settings, write_audit, write_or_rescue

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
            "float32_precision": precision,
        }
        stored_row = row.stored()
        way_out = "pass `overwrite=True` to replace it"
        check = None if overwrite else expect_settings("audit", t.wanted, way_out)

        def write(
            p: Path,
            root: dict[str, Any] = t.root,
            stored_row: dict[str, Any] = stored_row,
            report: HessianReport | None = report,
            attrs: dict[str, Any] = attrs,
            check: Check | None = check,
        ) -> Path:
            return write_audit(
                p, root, stored_row, hessian=report, attrs=attrs, drop_foreign=overwrite,
                check=check,
            )  # fmt: skip

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
