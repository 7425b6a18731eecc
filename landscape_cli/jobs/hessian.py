"""The ``landscape hessian`` job: :func:`hessian_job` and the settings its group records.

It validates the options (one-line :class:`LandscapeError` for bad ones), checks that the results
file can be written before computing anything, loads the checkpoint and its samples, runs the
chosen engine and writes ``/hessian``; on Ctrl-C what was computed is written first (marked
partial, never over a complete result). :func:`hessian_settings` and :func:`measure_settings`
are the settings a ``/hessian`` records (the audit's ``/audit/hessian`` too).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from landscape_cli import distributed, files, interrupts, resources
from landscape_cli import hessian as hs
from landscape_cli.devices import resolve_device
from landscape_cli.errors import Interrupted, LandscapeError, check_choice
from landscape_cli.hessian import (
    TRACE_METHODS,
    Collector,
    HessianSettings,
    make_report,
    sample_set_spread,
)
from landscape_cli.hessian.curvature import CURVATURES, curvature_operator
from landscape_cli.hessian.pyhessian_engine import analyze_pyhessian
from landscape_cli.jobs.common import (
    check_all,
    check_same_options,
    group_attrs,
    note_frozen,
    provenance,
    results_file_bytes,
    results_path,
)
from landscape_cli.losses import LOSSES, check_loss_on, check_not_constant
from landscape_cli.params import ParamSelection, select_parameters
from landscape_cli.precision import precision_name, with_precision
from landscape_cli.results import (
    ResultsConflict,
    all_of,
    check_target,
    expect_incomplete,
    expect_settings,
    verify_readable,
    write_hessian,
    write_or_rescue,
)
from landscape_cli.workload import Source, Workload, load_workload

if TYPE_CHECKING:
    from landscape_cli.batches import Batch
    from landscape_cli.hessian import (
        Analysis,
        CurvatureOperator,
        HessianReport,
        SampleSets,
    )
    from landscape_cli.params import SelectedParams


def _hessian_target(
    checkpoint: Path, work: Workload, settings: HessianSettings, out_path: Path, label: str | None,
    overwrite: bool, *, loss: str, bn_mode: str, dtype: str, engine: str,
    curvature: str = "hessian", params: ParamSelection | None = None, allow_tf32: bool = False,
) -> tuple[dict[str, Any], dict[str, Any]]:  # fmt: skip
    """The results file's root attributes and ``/hessian``'s.

    Checks first that the file holds this checkpoint's results and no ``/hessian`` of other
    options (unless ``overwrite``).
    """
    root = provenance(checkpoint, work, label, out_path)
    check_target(out_path, root["checkpoint_sha256"], drop_foreign=overwrite)
    wanted = hessian_settings(settings, work, loss=loss, bn_mode=bn_mode, dtype=dtype)
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
    params = params or ParamSelection()
    _check_hessian_request(
        settings, loss=loss, bn_mode=bn_mode, dtype=dtype, engine=engine, curvature=curvature,
        params=params,
    )  # fmt: skip
    distributed.init(device)
    dev = distributed.local_device(resolve_device(device))
    out_path = results_path(checkpoint, out)
    check_target(out_path)
    work, chosen, loss = _load_checked(
        checkpoint, settings, source, loss, dev, dtype == "float64", params, out_path
    )
    root, attrs = _hessian_target(
        checkpoint, work, settings, out_path, label, overwrite, loss=loss, bn_mode=bn_mode,
        dtype=dtype, engine=engine, curvature=curvature, params=params, allow_tf32=allow_tf32,
    )  # fmt: skip
    t0 = time.perf_counter()

    def make_operator(loaded: Workload) -> CurvatureOperator:
        return _hessian_operator(
            loaded, settings, loss=loss, bn_mode=bn_mode, dev=dev, dtype=dtype,
            cache_graphs=cache_graphs, curvature=curvature, params=params,
        )  # fmt: skip

    op = make_operator(work)
    note_frozen(source, chosen)
    op.on_hvp = on_hvp
    collected = Collector()  # what was computed, also when interrupted
    save = _hessian_saver(op, collected, settings, work, loss, t0, out_path, root, attrs, overwrite)
    _estimate(
        engine, op, settings, work, collected, save, out_path, source=source, on_phase=on_phase,
        on_hvp=on_hvp, make_operator=make_operator,
    )  # fmt: skip
    with interrupts.deferred():  # a signal now waits until the finished result is written
        report = save()[0]
    return report, out_path, work


def _check_hessian_request(
    settings: HessianSettings, *, loss: str | None, bn_mode: str, dtype: str, engine: str,
    curvature: str, params: ParamSelection,
) -> None:  # fmt: skip
    """Every option of ``landscape hessian``, alone and together, before anything is loaded."""
    _check_hessian_options(settings, loss=loss, bn_mode=bn_mode, dtype=dtype)
    check_curvature(curvature, bn_mode=bn_mode)
    _check_engine(engine, settings, bn_mode=bn_mode, dtype=dtype)
    _check_engine_measures(engine, curvature, params)


def _load_checked(
    checkpoint: Path, settings: HessianSettings, source: Source, loss: str | None,
    dev: torch.device, products_float64: bool, params: ParamSelection, out_path: Path,
) -> tuple[Workload, SelectedParams, str]:  # fmt: skip
    """Load the checkpoint and its samples, and check them before any product.

    The chosen parameters against the machine's memory, the results file's disk space, and the
    loss (resolved: by default the checkpoint's training loss) on the samples. Returns the
    workload, the chosen parameters and the loss.
    """
    work = load_workload(checkpoint, source, sample_sets=settings.sample_sets)
    chosen = select_parameters(work.model, params)
    _check_size(settings, chosen.numel, dev, products_float64)
    tensors = len(chosen.names)
    files.require_space(
        out_path, hessian_file_bytes(out_path, settings, chosen.numel, tensors), "results file"
    )
    loss = work.resolve_loss(loss)
    check_loss_on(work.model, work.batches, loss)
    return work, chosen, loss


def _estimate(
    engine: str, op: CurvatureOperator, settings: HessianSettings, work: Workload,
    collected: Collector, save: Callable[..., tuple[HessianReport, str]], out_path: Path, *,
    source: Source, on_phase: Callable[[str, int], None] | None,
    on_hvp: Callable[[int], None] | None, make_operator: Callable[[Workload], CurvatureOperator],
) -> None:  # fmt: skip
    """Run the engine, and on the further sample sets, each estimate into ``collected``.

    On Ctrl-C (or SIGTERM, :mod:`landscape_cli.interrupts`) what was computed is saved first and
    :class:`Interrupted` says where it went; with nothing computed yet, the interrupt goes on.
    """
    try:
        analysis = _run_engine(
            engine, op, settings, source=source, on_phase=on_phase, on_result=collected.record
        )
        if work.sets:  # the same estimates on the further sample sets
            sets = _sample_sets(work, settings, analysis, on_phase, on_hvp, make_operator)
            collected.record("sample_sets", sets)
    except KeyboardInterrupt:  # Ctrl-C, or SIGTERM (landscape_cli.interrupts)
        if not collected.freeze().computed:
            raise
        raise Interrupted(_save_partial(out_path, save)) from None


def _sample_sets(
    work: Workload,
    settings: HessianSettings,
    first: Analysis,
    on_phase: Callable[[str, int], None] | None,
    on_hvp: Callable[[int], None] | None,
    make_op: Callable[[Workload], CurvatureOperator],
) -> SampleSets:
    """:func:`~landscape_cli.hessian.sample_set_spread` of ``work``'s further sample sets."""

    def maker(batches: list[Batch]) -> Callable[[], CurvatureOperator]:
        def make() -> CurvatureOperator:
            op = make_op(replace(work, batches=batches, sets=()))
            op.on_hvp = on_hvp
            return op

        return make

    others = [(one.samples_sha256, maker(one.batches)) for one in work.sets]
    return sample_set_spread(first, work.samples_sha256, others, settings, on_phase=on_phase)


def hessian_file_bytes(out_path: Path, settings: HessianSettings, n: int, tensors: int) -> int:
    """About the bytes ``/hessian`` of these settings adds to ``out_path`` (over-estimated)."""
    new = (
        24 * settings.top_k
        + 8 * settings.trace_probes
        + 16 * settings.density_probes * settings.lanczos_steps
    )
    new += 2 * 8 * 2000  # the density's grid
    if settings.eigenvectors:
        new += 4 * settings.top_k * n + 2048 * tensors
    if settings.per_layer:
        new += 2048 * tensors
    return results_file_bytes(out_path, new)


def _hessian_operator(
    work: Workload, settings: HessianSettings, *, loss: str, bn_mode: str, dev: torch.device,
    dtype: str, cache_graphs: bool | None, curvature: str = "hessian",
    params: ParamSelection | None = None,
) -> CurvatureOperator:  # fmt: skip
    """The curvature operator of the loaded workload, refused if constant or too large."""
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
        settings, op.n, dev, dtype == "float64"
    )  # again: parameters without a gradient are left out
    return op


def _hessian_saver(
    op: CurvatureOperator,
    collected: Collector,
    settings: HessianSettings,
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
    way_out = "pass `overwrite=True` to replace it, or another `out` to keep both"
    same = None if overwrite else expect_settings("hessian", attrs["settings"], way_out)

    def save(partial: bool = False) -> tuple[HessianReport, str]:
        analysis = collected.freeze()
        report = _report_of(op, analysis, settings, work, loss, t0)
        extra = dict(attrs)
        if analysis.pyhessian_stopped is not None:  # its own rule, beside our `converged`
            extra["pyhessian_stopped"] = [int(x) for x in analysis.pyhessian_stopped]
        if not distributed.is_main():
            return report, "the partial result is saved by rank 0"
        check = all_of(same, expect_incomplete("hessian")) if partial else same

        def write(path: Path) -> Path:
            return write_hessian(
                path, report, root=root, partial=partial, attrs=extra, drop_foreign=overwrite,
                check=check,
            )  # fmt: skip

        if not partial:
            write_or_rescue(out_path, write)
            return report, f"the result was saved to {out_path}"
        return report, _write_partial(out_path, write)

    return save


def _report_of(
    op: CurvatureOperator,
    analysis: Analysis,
    settings: HessianSettings,
    work: Workload,
    loss: str,
    t0: float,
) -> HessianReport:
    """The report of ``analysis``, its product count with PyHessian's and the further sets'."""
    report = make_report(
        op,
        analysis,
        settings,
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
    return report


def _write_partial(out_path: Path, write: Callable[[Path], Path]) -> str:
    """Write a partial result to ``out_path``, else to a fresh file; say where it went.

    A fresh ``<stem>.partial-<random>.h5`` when ``out_path`` holds a complete ``/hessian`` (or one
    of other options), a ``<stem>.rescued-<random>.h5`` when the write fails (a full disk).
    """
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
    settings: HessianSettings, *, loss: str | None, bn_mode: str, dtype: str
) -> None:
    """Refuse inconsistent ``landscape hessian`` options before anything is loaded."""
    check_all(
        [
            (settings.top_k >= 0, "`top_k` must be >= 0"),
            (settings.tol > 0, "`tol` must be > 0"),
            (settings.max_steps >= 1, "`max_steps` must be >= 1"),
            (settings.sample_sets >= 1, "`sample_sets` must be >= 1"),
            (
                0 <= settings.block_size <= max(1, settings.max_steps),
                f"`block_size` must be 0 (automatic) or between 1 and `max_steps` "
                f"({settings.max_steps}), got {settings.block_size}",
            ),
            (
                settings.trace_probes == 0 or settings.trace_probes >= 2,
                "`trace_probes` must be 0 or >= 2",
            ),
            (settings.trace_rtol >= 0, "`trace_rtol` must be >= 0"),
        ]
    )
    check_choice("trace_method", settings.trace_method, TRACE_METHODS, one_of=True)
    check_all(
        [
            (settings.density_probes >= 0, "`density_probes` must be >= 0"),
            (settings.density_tol >= 0, "`density_tol` must be >= 0"),
            (settings.lanczos_steps >= 1, "`lanczos_steps` must be >= 1"),
            (settings.density_sigma > 0, "`density_sigma` must be > 0"),
            (
                settings.per_layer_probes >= 2,
                "`per_layer_probes` must be >= 2 (a standard error needs two probes)",
            ),
        ]
    )
    if loss is not None:
        check_choice("loss", loss, LOSSES)
    check_choice("bn_mode", bn_mode, ("eval", "train"))
    check_choice("dtype", dtype, ("float32", "float64"))
    check_all(
        [
            (
                settings.top_k <= settings.max_steps,
                f"`top_k={settings.top_k}` needs at least as many Lanczos steps: raise `max_steps` "
                f"(now {settings.max_steps}) or lower `top_k`",
            ),
        ]
    )
    resources.check_fields(settings)  # every count, tolerance and the seed in its domain


def _run_engine(
    engine: str,
    op: CurvatureOperator,
    settings: HessianSettings,
    *,
    source: Source,
    on_phase: Callable[[str, int], None] | None,
    on_result: Callable[[str, Any], None],
) -> Analysis:
    """The chosen engine's estimates, each also to ``on_result`` (PyHessian notes to ``source``)."""
    if engine == "pyhessian":
        for text in _pyhessian_notes(settings):
            if source.on_note is not None and distributed.is_main():
                source.on_note(text)
        return analyze_pyhessian(op, settings, on_result=on_result, on_phase=on_phase)
    return hs.analyze(op, settings, on_result=on_result, on_phase=on_phase)


ENGINES = ("lanczos", "pyhessian")


def _check_engine(engine: str, settings: HessianSettings, *, bn_mode: str, dtype: str) -> None:
    """PyHessian runs with its own defaults, in eval mode, in float32, in one process.

    Options that would change what it computes are refused rather than silently ignored.
    """
    check_choice("engine", engine, ENGINES, one_of=True)
    if engine != "pyhessian":
        return
    defaults = HessianSettings()
    check_all(
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
                (settings.tol, settings.max_steps, settings.block_size, settings.sample_sets)
                == (defaults.tol, defaults.max_steps, defaults.block_size, defaults.sample_sets),
                "`tol`, `max_steps`, `block_size` and `sample_sets` set landscape's Lanczos; "
                "`engine='pyhessian'` runs PyHessian's power iteration with its defaults "
                "(maxIter=100, tol=1e-3)",
            ),
            (
                settings.trace_probes in (0, defaults.trace_probes)
                and (settings.trace_rtol, settings.trace_method)
                == (defaults.trace_rtol, defaults.trace_method),
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


def check_curvature(curvature: str, *, bn_mode: str) -> None:
    """The curvature matrix asked for exists and is defined in this mode."""
    check_choice("curvature", curvature, CURVATURES, one_of=True)
    check_all(
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
    check_all(
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


def _pyhessian_notes(settings: HessianSettings) -> list[str]:
    """What ``--engine pyhessian`` computes with landscape's estimators instead, one line each."""
    notes = []
    if settings.density_probes > 0:
        notes.append(
            "PyHessian's density() fails on torch >= 2 (it calls torch.eig, which torch 2 "
            "removed): the density is landscape's stochastic Lanczos quadrature"
        )
    if settings.per_layer:
        notes.append("PyHessian has no per-layer estimates: `per_layer=True` uses landscape's")
    return notes


def _check_size(
    settings: HessianSettings, n: int, dev: torch.device, products_float64: bool = False
) -> None:
    """Options against the model's size and the machine's memory, before any allocation."""
    if settings.top_k > n:
        raise LandscapeError(
            f"`top_k={settings.top_k}` exceeds the model's {n} parameters (the Hessian has {n} "
            "eigenvalues); lower `top_k`"
        )
    resources.require(resources.hessian_bytes(settings, n, products_float64, dev), dev)


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
