"""The ``/hessian`` group (and ``/audit/hessian``, the same layout).

A :class:`~landscape_cli.hessian.types.HessianReport` written and read back.

:func:`write_hessian` takes a ``HessianReport`` (or a :class:`HessianResult`, the report with the
group's other attributes); :func:`read_hessian` returns a :class:`HessianResult` whose ``report``
is the report written, up to what the file keeps: ``param_shapes`` are stored only with the
eigenvectors, and eigenvectors come back as float32. Files written before ``curvature``,
``skipped_reasons`` and the group's ``param_names`` existed read back as the Hessian, each skipped
parameter with the reason ``no gradient`` (the only one they skipped), and the parameter names of
the eigenvectors (else none).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import h5py
import numpy as np

from landscape_cli.errors import LandscapeError
from landscape_cli.results import store
from landscape_cli.results import typed as t
from landscape_cli.results.store import DictView, member_name, open_read, plain, set_attr

if TYPE_CHECKING:
    # not at run time: importing landscape_cli.hessian imports torch
    from landscape_cli.hessian.types import (
        DensityResult,
        HessianReport,
        LanczosResult,
        LayerCurvature,
        SampleSets,
        TraceResult,
    )

__all__ = ["HessianResult", "has_hessian", "read_hessian", "write_hessian"]

_INTS = ("samples", "batch_size", "seed", "hvp_count", "num_params")
_FLOATS = ("seconds", "loss_value", "grad_norm")
_STRS = ("device", "dtype", "loss", "split", "bn_mode")
_TOP = (
    "lambda_min",
    "lambda_min_residual",
    "lanczos_top_steps",
    "lanczos_top_hvp_count",
    "tol",
    "lanczos_basis_dtype",
    "lanczos_orthogonality",
    "lanczos_block_size",
    "multiplicity_resolved",
    "largest_cluster",
)
_DENSITY_ARRAYS = ("grid", "density", "nodes", "weights")


@dataclass(frozen=True)
class HessianResult(DictView):
    """A ``/hessian`` group as stored.

    The report, the group's other attributes, and whether the run was cut short.

    ``attrs`` holds the attributes that are not part of the report (``checkpoint_sha256``,
    ``samples_sha256``, ``settings`` as JSON text, ``engine``, ...), as plain values: a mapping
    given to the writer comes back as its JSON text. ``partial`` is True only for a run cut short
    by Ctrl-C.

    ``result["key"]`` (:class:`~landscape_cli.results.store.DictView`) gives the dict the reader
    returned before: ``attrs`` (every group attribute), ``eigenvalues``, ``residuals``,
    ``converged`` (arrays or None), ``lambda_min``, ``lambda_min_residual``, ``trace``,
    ``trace_stderr`` (floats or None), ``method`` (str or None), ``trace_attrs`` (dict, empty
    without a trace), ``trace_samples`` (array or None), ``density`` (grid, density, nodes,
    weights and the group's attributes, or None), ``per_layer`` ({name: attributes}, in parameter
    order) and, only with eigenvectors, ``eigenvectors`` ({name: (k, *shape) float32 array}).
    """

    report: HessianReport
    attrs: Mapping[str, Any] = field(default_factory=dict)
    partial: bool = False

    @property
    def settings(self) -> dict[str, Any]:
        """The options the group was computed with (its ``settings``; ``{}`` when none)."""
        raw = self.attrs.get("settings")
        if not raw:
            return {}
        return json.loads(raw) if isinstance(raw, str) else dict(raw)

    @property
    def engine(self) -> str:
        """Whose estimators computed it: ``lanczos`` (landscape's, also when none is recorded)."""
        return str(self.attrs.get("engine", "lanczos"))

    def covers(
        self,
        wanted: HessianQuestions,
        *,
        samples_sha256: str,
        split: str,
        dataset: str | None = None,
        allow_tf32: bool = False,
        set_hashes: Sequence[str] = (),
    ) -> bool:
        """Whether this result answers ``wanted``'s Hessian questions (the audit's reuse rule).

        It does when computed by landscape's own estimators (:attr:`engine` ``lanczos``), of the
        same curvature matrix and parameters (``curvature``, ``params``, ``include_frozen``), on
        the same samples (``samples_sha256``), ``split``, ``dataset`` (when given), loss and seed,
        with eval-mode BatchNorm, and with enough of each estimate: at least ``top_k``
        eigenvalues from a Lanczos run at least as strict (a ``tol`` no looser and a
        ``max_steps`` no smaller) whose multiplicities were resolved (with ``top_k`` > 1), a
        trace with at least as many probes or a relative standard error within ``trace_rtol``,
        a density (when ``density_probes``) with at least as many Lanczos steps and probes or
        one that reached ``density_tol``, and (with ``sample_sets`` > 1) at least as many
        further sample sets, the same as ``set_hashes``. One computed with TF32
        (``float32_precision`` "tf32") answers only when ``allow_tf32``.
        """
        opts = self.settings
        if not opts or self.attrs.get("samples_sha256") != samples_sha256:
            return False
        if self.engine != "lanczos":  # PyHessian's numbers are not certified
            return False
        if self.attrs.get("float32_precision") == "tf32" and not allow_tf32:  # approximate
            return False
        same = (
            opts.get("loss") == wanted.loss
            and opts.get("bn_mode") == "eval"
            and opts.get("seed") == wanted.seed
            and opts.get("split") == split
            and (dataset is None or opts.get("dataset") == dataset)
            and self.report.curvature == wanted.curvature
            and opts.get("params", []) == list(wanted.params)
            and bool(opts.get("include_frozen", False)) == wanted.include_frozen
        )
        return (
            same
            and self._covers_top(wanted, opts)
            and self._covers_trace(wanted)
            and self._covers_density(wanted)
            and self._covers_sets(wanted, set_hashes)
        )

    def _covers_top(self, wanted: HessianQuestions, opts: Mapping[str, Any]) -> bool:
        top = self.report.top
        if top is None or len(top.eigenvalues) < wanted.top_k:
            return False
        # a top-k whose multiplicities were not resolved may miss copies (files before block
        # Lanczos record none): recompute rather than rank on it
        if wanted.top_k > 1 and not top.multiplicity_resolved:
            return False
        tol, max_steps = _number(opts.get("tol")), _number(opts.get("max_steps"))
        return not (
            tol is None or max_steps is None or tol > wanted.tol or max_steps < wanted.max_steps
        )

    def _covers_trace(self, wanted: HessianQuestions) -> bool:
        tr = self.report.trace
        if not wanted.trace_probes:
            return True
        if tr is None:
            return False
        estimate, stderr = float(tr.estimate), float(tr.stderr)
        return tr.probes >= wanted.trace_probes or stderr <= wanted.trace_rtol * abs(estimate)

    def _covers_density(self, wanted: HessianQuestions) -> bool:
        d = self.report.density
        if not wanted.density_probes:
            return True
        if d is None or d.lanczos_steps < wanted.lanczos_steps:
            return False
        # an adaptive density that stopped early is enough when it reached the tolerance
        return d.probes >= wanted.density_probes or d.achieved_tol <= wanted.density_tol

    def _covers_sets(self, wanted: HessianQuestions, set_hashes: Sequence[str]) -> bool:
        if wanted.sample_sets <= 1:
            return True
        sets = self.report.sample_sets
        hashes = [] if sets is None else list(sets.samples_sha256)
        if hashes[1 : wanted.sample_sets] != list(set_hashes)[: wanted.sample_sets - 1]:
            return False
        return len(hashes) >= wanted.sample_sets

    @property
    def all_attrs(self) -> dict[str, Any]:
        """Every attribute of the group, as read back (the report's and ``attrs``)."""
        out = dict(self.attrs)
        out.update({k: plain(v) for k, v in _report_attrs(self.report).items()})
        if self.partial:
            out["partial"] = True
        return out

    def _view(self) -> dict[str, Any]:
        r = self.report
        top, tr, den = r.top, r.trace, r.density
        trace_attrs = {k: plain(v) for k, v in _trace_attrs(tr).items()} if tr else {}
        out: dict[str, Any] = {
            "attrs": self.all_attrs,
            "eigenvalues": None if top is None else top.eigenvalues,
            "residuals": None if top is None else top.residuals,
            "converged": None if top is None else top.converged,
            "gaps": None if top is None else top.gaps,
            "lambda_min": None if top is None else float(top.lambda_min),
            "lambda_min_residual": None if top is None else float(top.lambda_min_residual),
            "trace": None if tr is None else float(tr.estimate),
            "trace_stderr": trace_attrs.get("stderr"),
            "method": trace_attrs.get("method"),
            "trace_attrs": trace_attrs,
            "trace_samples": None if tr is None else tr.samples,
            "density": None,
            "sample_sets": None if r.sample_sets is None else _sets_view(r.sample_sets),
            "per_layer": {
                layer.name: {k: plain(v) for k, v in _layer_attrs(layer).items()}
                for layer in r.per_layer
            },
        }
        if den is not None:
            density = {key: getattr(den, key) for key in _DENSITY_ARRAYS}
            density.update({k: plain(v) for k, v in _density_attrs(den).items()})
            out["density"] = density
        if top is not None and top.eigenvectors is not None:
            out["eigenvectors"] = dict(_split_vectors(r, np.asarray(top.eigenvectors)))
        return out


class HessianQuestions(Protocol):
    """What :meth:`HessianResult.covers` asks of a stored result (an ``audit.AuditSettings``)."""

    loss: str
    seed: int
    curvature: str
    params: tuple[str, ...]
    include_frozen: bool
    top_k: int
    tol: float
    max_steps: int
    trace_probes: int
    trace_rtol: float
    density_probes: int
    density_tol: float
    lanczos_steps: int
    sample_sets: int


def _number(value: Any) -> float | None:
    """``value`` when it is a real number (a stored setting), else None."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and value == value
    return value if ok else None


def _sets_view(sets: SampleSets) -> dict[str, Any]:
    """``/hessian/sample_sets`` as the dict view shows it: values, hashes, mean and spread."""
    out = {k: plain(v) for k, v in _sample_set_attrs(sets).items()}
    out.update(
        lambda_max=sets.lambda_max,
        eigenvalues=sets.eigenvalues,
        trace=sets.trace,
        trace_stderr=sets.trace_stderr,
        samples_sha256=list(sets.samples_sha256),
    )
    return out


# -- attributes, shared by the writer and the dict view ---------------------------------------


def _report_attrs(report: HessianReport) -> dict[str, Any]:
    """The group attributes of ``report`` (numpy scalars, str, a list of str)."""
    out: dict[str, Any] = {key: np.int64(getattr(report, key)) for key in _INTS}
    out.update({key: np.float64(getattr(report, key)) for key in _FLOATS})
    out.update({key: str(getattr(report, key)) for key in _STRS})
    out["skipped_params"] = list(report.skipped_params)
    out["skipped_reasons"] = list(report.skipped_reasons)
    out["curvature"] = str(report.curvature)
    if report.param_names:
        out["param_names"] = list(report.param_names)
    top = report.top
    if top is not None:
        out["lambda_min"] = np.float64(top.lambda_min)
        out["lambda_min_residual"] = np.float64(top.lambda_min_residual)
        out["lanczos_top_steps"] = np.int64(top.steps)
        out["lanczos_top_hvp_count"] = np.int64(top.hvp_count)
        out["tol"] = np.float64(top.tol)
        out["lanczos_block_size"] = np.int64(top.block_size)
        out["multiplicity_resolved"] = np.bool_(top.multiplicity_resolved)
        out["largest_cluster"] = np.int64(top.largest_cluster)
        if top.basis_dtype:  # not with --engine pyhessian (no Krylov basis)
            out["lanczos_basis_dtype"] = str(top.basis_dtype)
            out["lanczos_orthogonality"] = np.float64(top.orthogonality)
    return out


def _trace_attrs(tr: TraceResult) -> dict[str, Any]:
    return {
        "stderr": np.float64(tr.stderr),
        "probes": np.int64(tr.probes),
        "method": str(tr.method),
        "ci95_low": np.float64(tr.ci95[0]),
        "ci95_high": np.float64(tr.ci95[1]),
        "hvp_count": np.int64(tr.hvp_count),
        "converged": np.bool_(tr.converged),
        "rtol": np.float64(tr.rtol),
        "note": str(tr.note),
    }


def _density_attrs(den: DensityResult) -> dict[str, Any]:
    return {
        "sigma": np.float64(den.sigma),
        "lanczos_steps": np.int64(den.lanczos_steps),
        "probes": np.int64(den.probes),
        "hvp_count": np.int64(den.hvp_count),
        "tol": np.float64(den.tol),  # W1 error / range asked for (0: fixed probes)
        "achieved_tol": np.float64(den.achieved_tol),  # estimated W1 error / range
        "max_probes": np.int64(den.max_probes),
        "krylov_start": np.bool_(den.krylov_start),
    }


def _layer_attrs(layer: LayerCurvature) -> dict[str, Any]:
    return {
        "lambda_max": np.float64(layer.lambda_max),
        "lambda_max_residual": np.float64(layer.lambda_max_residual),
        "trace": np.float64(layer.trace),
        "trace_stderr": np.float64(layer.trace_stderr),
        "numel": np.int64(layer.numel),
    }


def _split_vectors(report: HessianReport, vectors: np.ndarray) -> list[tuple[str, np.ndarray]]:
    """The (k, n) eigenvectors cut into one float32 (k, *shape) block per parameter."""
    names, shapes = report.param_names, report.param_shapes
    if len(names) != len(shapes):
        raise ValueError(f"{len(names)} param_names but {len(shapes)} param_shapes")
    if vectors.ndim != 2:
        raise ValueError(f"eigenvectors must be (k, n), got shape {vectors.shape}")
    sizes = [int(np.prod(shape, dtype=np.int64)) for shape in shapes]
    if sum(sizes) != vectors.shape[1]:
        raise ValueError(
            f"eigenvectors have {vectors.shape[1]} entries per vector but the parameter shapes "
            f"add up to {sum(sizes)}"
        )
    k, offset, out = vectors.shape[0], 0, []
    for name, shape, size in zip(names, shapes, sizes, strict=True):
        block = vectors[:, offset : offset + size].astype(np.float32, copy=False)
        out.append((name, block.reshape((k, *shape))))
        offset += size
    return out


# -- writing ---------------------------------------------------------------------------------


def write_group(
    f: h5py.File,
    report: HessianReport | HessianResult,
    at: str = "hessian",
    attrs: Mapping[str, Any] | None = None,
) -> None:
    """Write ``report`` as the group ``at`` of ``f`` (replacing it), with ``attrs`` added."""
    partial = False
    if isinstance(report, HessianResult):
        attrs = {**report.attrs, **(attrs or {})}
        report, partial = report.report, report.partial
    if at in f:
        del f[at]
    g = f.create_group(at)
    for key, value in {**(attrs or {}), **_report_attrs(report)}.items():
        set_attr(g, key, value)
    if partial:
        g.attrs["partial"] = np.bool_(True)
    top = report.top
    if top is not None:
        g.create_dataset("eigenvalues", data=np.asarray(top.eigenvalues, dtype=np.float64))
        g.create_dataset("residuals", data=np.asarray(top.residuals, dtype=np.float64))
        g.create_dataset("converged", data=np.asarray(top.converged, dtype=bool))
        if top.gaps is not None:
            g.create_dataset("gaps", data=np.asarray(top.gaps, dtype=np.float64))
        if top.eigenvectors is not None:
            blocks = _split_vectors(report, np.asarray(top.eigenvectors))
            eg = g.create_group("eigenvectors", track_order=True)
            set_attr(eg, "param_names", list(report.param_names))
            for name, block in blocks:
                eg.create_dataset(member_name(name), data=block)
    tr = report.trace
    if tr is not None:
        d = g.create_dataset("trace", data=np.float64(tr.estimate))
        for key, value in _trace_attrs(tr).items():
            set_attr(d, key, value)
        g.create_dataset("trace_samples", data=np.asarray(tr.samples, dtype=np.float64))
    den = report.density
    if den is not None:
        dg = g.create_group("density")
        for key in _DENSITY_ARRAYS:
            dg.create_dataset(key, data=np.asarray(getattr(den, key), dtype=np.float64))
        for key, value in _density_attrs(den).items():
            set_attr(dg, key, value)
    if report.per_layer:
        pg = g.create_group("per_layer", track_order=True)
        for layer in report.per_layer:
            lg = pg.create_group(member_name(layer.name))
            for key, value in _layer_attrs(layer).items():
                set_attr(lg, key, value)
    if report.sample_sets is not None:
        _write_sample_sets(g.create_group("sample_sets"), report.sample_sets)


def _write_sample_sets(g: h5py.Group, sets: SampleSets) -> None:
    """``/hessian/sample_sets``: each set's values and hash, and their mean and spread."""
    for key, values in (
        ("lambda_max", sets.lambda_max),
        ("eigenvalues", sets.eigenvalues),
        ("trace", sets.trace),
        ("trace_stderr", sets.trace_stderr),
    ):
        g.create_dataset(key, data=np.asarray(values, dtype=np.float64))
    g.create_dataset(
        "samples_sha256", data=list(sets.samples_sha256), dtype=h5py.string_dtype("utf-8")
    )
    for key, value in _sample_set_attrs(sets).items():
        set_attr(g, key, value)


def _sample_set_attrs(sets: SampleSets) -> dict[str, Any]:
    lam_mean, lam_std = sets.spread(sets.lambda_max)
    tr_mean, tr_std = sets.spread(sets.trace)
    return {
        "sets": np.int64(sets.sets),
        "hvp_count": np.int64(sets.hvp_count),
        "lambda_max_mean": np.float64(lam_mean),
        "lambda_max_std": np.float64(lam_std),
        "trace_mean": np.float64(tr_mean),
        "trace_std": np.float64(tr_std),
    }


def write_hessian(
    path: str | os.PathLike[str],
    report: HessianReport | HessianResult,
    *,
    root: Mapping[str, Any],
    partial: bool = False,
    attrs: Mapping[str, Any] | None = None,
    drop_foreign: bool = False,
    check: store.Check | None = None,
) -> Path:
    """Write ``report`` as the ``/hessian`` group of ``path``, replacing any earlier one.

    ``root`` supplies the root attributes (checkpoint, checkpoint_sha256, label, model, dataset,
    and any provenance such as argv, torch_version, cuda_version); None values are not written.
    ``attrs`` adds attributes to the group (checkpoint_sha256, samples_sha256, settings); a
    :class:`HessianResult` brings its own ``attrs`` and ``partial`` (``attrs`` wins over them).
    Other groups of an existing file (scans) are kept. See
    :func:`~landscape_cli.results.store.update_file` for the guarantees. ``partial`` marks a
    result cut short by an interrupt (attribute ``partial=True``). ``check`` runs under the
    file's lock right before the write (:func:`~landscape_cli.results.store.expect_settings`).
    """
    if partial:
        result = report if isinstance(report, HessianResult) else HessianResult(report)
        report = HessianResult(result.report, result.attrs, partial=True)

    def mutate(f: h5py.File) -> None:
        write_group(f, report, "hessian", attrs)

    return store.update_file(path, root, mutate, drop_foreign=drop_foreign, check=check)


# -- reading ---------------------------------------------------------------------------------


def has_hessian(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` exists and holds a complete ``/hessian`` (not one marked partial)."""
    if not Path(path).exists():
        return False
    with open_read(path) as f:
        g = t.group(f, "hessian", None)
        return g is not None and not t.attr(g, "partial", t.BOOL, False)


def read_hessian(path: str | os.PathLike[str], group: str = "hessian") -> HessianResult:
    """Read ``/hessian`` (or a group of the same layout) back as a :class:`HessianResult`.

    Read ``/hessian`` (or another group of the same layout, such as ``audit/hessian``) back
    as the :class:`HessianResult` that was written.
    """
    with open_read(path) as f:
        g = t.group(f, group, None)
        if g is None:
            raise LandscapeError(
                f"{path} has no Hessian results; run `landscape hessian` on its checkpoint first"
            )
        return read_group(g)


def read_group(g: h5py.Group) -> HessianResult:
    """The :class:`HessianResult` stored in the open group ``g``.

    Every attribute and dataset is read through :mod:`.typed` (type, shape, finiteness): a
    value that landscape does not write there is one error line naming it.
    """
    # lazy: results/ imports no torch (hessian/ does)
    from landscape_cli.hessian.types import HessianReport, LayerCurvature

    attrs = t.attrs(g, {**_GROUP_KINDS, **_TOP_KINDS, **_OTHER_KINDS}, others=True)
    partial = bool(attrs.pop("partial", False))
    names, shapes, top = _read_top(g, attrs)
    trace = _read_trace(g)
    density = _read_density(g)
    sets = _read_sample_sets(g)
    per_layer = tuple(
        LayerCurvature(name=name, **{key: a.get(key, default) for key, default in _LAYER})
        for name, a in _read_layers(g)
    )
    fields = {key: attrs.pop(key, 0) for key in _INTS}
    fields.update({key: attrs.pop(key, np.nan) for key in _FLOATS})
    fields.update({key: attrs.pop(key, "") for key in _STRS})
    skipped = tuple(attrs.pop("skipped_params", ()))
    reasons = attrs.pop("skipped_reasons", None)
    stored_names = attrs.pop("param_names", None)
    report = HessianReport(
        top=top,
        trace=trace,
        density=density,
        per_layer=per_layer,
        skipped_params=skipped,
        param_names=tuple(stored_names) if stored_names is not None else names,
        param_shapes=shapes,
        curvature=str(attrs.pop("curvature", "hessian")),
        skipped_reasons=tuple(reasons) if reasons is not None else ("no gradient",) * len(skipped),
        sample_sets=sets,
        **fields,
    )
    return HessianResult(report, attrs, partial)


# The kinds of every attribute the readers take (:mod:`.typed`); a new field is one line here.
_GROUP_KINDS = {
    **{key: t.COUNT for key in _INTS if key != "seed"},
    "seed": t.INT,
    **{key: t.FLOAT for key in _FLOATS},
    **{key: t.STR for key in _STRS},
    "skipped_params": t.STRS,
    "skipped_reasons": t.STRS,
    "param_names": t.STRS,
    "curvature": t.STR,
    "partial": t.BOOL,
}
_TOP_KINDS = {
    "lambda_min": t.FLOAT,
    "lambda_min_residual": t.SPREAD,
    "lanczos_top_steps": t.COUNT,
    "lanczos_top_hvp_count": t.COUNT,
    "tol": t.FLOAT,
    "lanczos_basis_dtype": t.STR,
    "lanczos_orthogonality": t.FLOAT,
    "lanczos_block_size": t.COUNT,
    "multiplicity_resolved": t.BOOL,
    "largest_cluster": t.COUNT,
}
_OTHER_KINDS = {
    "checkpoint_sha256": t.STR,
    "samples_sha256": t.STR,
    "settings": t.JSON_TEXT,
    "engine": t.STR,
    "float32_precision": t.STR,
    "pyhessian_stopped": t.NUMBERS,
}
_TRACE_KINDS = {
    "stderr": t.SPREAD,
    "probes": t.COUNT,
    "method": t.STR,
    "ci95_low": t.FLOAT,
    "ci95_high": t.FLOAT,
    "hvp_count": t.COUNT,
    "converged": t.BOOL,
    "rtol": t.SPREAD,
    "note": t.STR,
}
_DENSITY_KINDS = {
    "sigma": t.SPREAD,
    "lanczos_steps": t.COUNT,
    "probes": t.COUNT,
    "hvp_count": t.COUNT,
    "tol": t.SPREAD,
    "achieved_tol": t.SPREAD,
    "max_probes": t.COUNT,
    "krylov_start": t.BOOL,
}
_SETS_KINDS = {
    "sets": t.COUNT,
    "hvp_count": t.COUNT,
    "lambda_max_mean": t.FLOAT,
    "lambda_max_std": t.FLOAT,
    "trace_mean": t.FLOAT,
    "trace_std": t.FLOAT,
}
#: Per-layer attributes and their defaults (kinds in :data:`_LAYER_KINDS`).
_LAYER = (
    ("numel", 0),
    ("lambda_max", np.nan),
    ("lambda_max_residual", np.nan),
    ("trace", np.nan),
    ("trace_stderr", np.nan),
)
_LAYER_KINDS = {
    "numel": t.COUNT,
    "lambda_max": t.FLOAT,
    "lambda_max_residual": t.SPREAD,
    "trace": t.FLOAT,
    "trace_stderr": t.SPREAD,
}


def _read_layers(g: h5py.Group) -> list[tuple[str, dict[str, Any]]]:
    """``(parameter name, attributes)`` of each ``per_layer`` member, in stored order."""
    pg = t.group(g, "per_layer", None)
    if pg is None:
        return []
    return [(name, t.attrs(t.group(pg, name), _LAYER_KINDS)) for name in pg]


def _read_top(
    g: h5py.Group, attrs: dict[str, Any]
) -> tuple[tuple[str, ...], tuple[tuple[int, ...], ...], LanczosResult | None]:
    """Parameter names and shapes (from the eigenvectors) and the top-k result.

    The top-k attributes are taken out of ``attrs``.
    """
    # lazy: results/ imports no torch (hessian/ does)
    from landscape_cli.hessian.types import LanczosResult

    names: tuple[str, ...] = ()
    shapes: tuple[tuple[int, ...], ...] = ()
    if "eigenvalues" not in g:
        return names, shapes, None
    top = {key: attrs.pop(key) for key in _TOP_KINDS if key in attrs}
    eigenvalues = t.array(g, "eigenvalues", finite=True)
    k = len(eigenvalues)
    residuals = t.array(g, "residuals", shape=(k,))
    if (residuals < 0).any():
        raise t.fail(g, f"{g.name}/residuals", "holds a negative value", "residuals >= 0")
    converged = t.array(g, "converged", dtype="b", shape=(k,))
    vectors = None
    eg = t.group(g, "eigenvectors", None)
    if eg is not None:
        order = t.attr(eg, "param_names", t.STRS, [])
        order = [n for n in order if n in eg] + [n for n in eg if n not in order]
        blocks = [t.array(eg, name, ndim=range(1, 33), shape=(k,)) for name in order]
        names = tuple(order)
        shapes = tuple(tuple(int(s) for s in b.shape[1:]) for b in blocks)
        flat = [b.astype(np.float32).reshape(k, -1) for b in blocks]
        vectors = np.concatenate(flat, axis=1) if flat else np.zeros((k, 0), np.float32)
    result = LanczosResult(
        eigenvalues=eigenvalues,
        residuals=residuals,
        converged=converged,
        lambda_min=top.get("lambda_min", np.nan),
        lambda_min_residual=top.get("lambda_min_residual", np.nan),
        steps=top.get("lanczos_top_steps", 0),
        hvp_count=top.get("lanczos_top_hvp_count", 0),
        tol=top.get("tol", np.nan),
        eigenvectors=vectors,
        basis_dtype=top.get("lanczos_basis_dtype", ""),
        orthogonality=top.get("lanczos_orthogonality", 0.0),
        gaps=t.array(g, "gaps", shape=(k,)) if "gaps" in g else None,
        block_size=top.get("lanczos_block_size", 1),  # files before block Lanczos: 1
        multiplicity_resolved=top.get("multiplicity_resolved", False),
        largest_cluster=top.get("largest_cluster", 1),
    )
    return names, shapes, result


def _read_trace(g: h5py.Group) -> TraceResult | None:
    # lazy: results/ imports no torch (hessian/ does)
    from landscape_cli.hessian.types import TraceResult

    if "trace" not in g:
        return None
    estimate = t.scalar(g, "trace", finite=True)
    a = t.attrs(t.dataset(g, "trace"), _TRACE_KINDS)
    samples = t.array(g, "trace_samples", finite=True, default=np.zeros(0))
    return TraceResult(
        estimate=estimate,
        stderr=a.get("stderr", np.nan),
        ci95=(a.get("ci95_low", np.nan), a.get("ci95_high", np.nan)),
        samples=samples,
        probes=a.get("probes", len(samples)),
        method=a.get("method", ""),
        hvp_count=a.get("hvp_count", 0),
        converged=a.get("converged", False),
        rtol=a.get("rtol", 0.0),
        note=a.get("note", ""),
    )


def _read_sample_sets(g: h5py.Group) -> SampleSets | None:
    """``/hessian/sample_sets`` (:func:`_write_sample_sets`), checked, or None."""
    # lazy: results/ imports no torch (hessian/ does)
    from landscape_cli.hessian.types import SampleSets

    sg = t.group(g, "sample_sets", None)
    if sg is None:
        return None
    a = t.attrs(sg, _SETS_KINDS)
    d = t.dataset(sg, "samples_sha256")
    if d.ndim != 1 or h5py.check_string_dtype(d.dtype) is None:
        raise t.fail(sg, f"{sg.name}/samples_sha256", f"has dtype {d.dtype}", "1-D strings")
    hashes = tuple(v.decode() if isinstance(v, bytes) else str(v) for v in d[()])
    K = len(hashes)
    return SampleSets(
        samples_sha256=hashes,
        eigenvalues=t.array(sg, "eigenvalues", ndim=2, shape=(K, None)),
        trace=t.array(sg, "trace", shape=(K,)),
        trace_stderr=t.array(sg, "trace_stderr", shape=(K,)),
        hvp_count=int(a.get("hvp_count", 0)),
    )


def _read_density(g: h5py.Group) -> DensityResult | None:
    # lazy: results/ imports no torch (hessian/ does)
    from landscape_cli.hessian.types import DensityResult

    dg = t.group(g, "density", None)
    if dg is None:
        return None
    a = t.attrs(dg, _DENSITY_KINDS)
    grid = t.array(dg, "grid", finite=True)
    density = t.array(dg, "density", finite=True, shape=(len(grid),))
    nodes = t.array(dg, "nodes", ndim=2, finite=True)
    weights = t.array(dg, "weights", ndim=2, finite=True, shape=nodes.shape)
    if nodes.size == 0 or not (weights >= 0).all() or not (weights > 0).any():
        raise t.fail(
            dg,
            f"{dg.name}/weights",
            "holds no positive quadrature weight" if nodes.size else "is empty",
            "Gauss quadrature weights >= 0, some > 0",
        )
    return DensityResult(
        grid=grid,
        density=density,
        nodes=nodes,
        weights=weights,
        sigma=a.get("sigma", np.nan),
        lanczos_steps=a.get("lanczos_steps", 0),
        probes=a.get("probes", 0),
        hvp_count=a.get("hvp_count", 0),
        tol=a.get("tol", 0.0),
        achieved_tol=a.get("achieved_tol", np.nan),
        max_probes=a.get("max_probes", 0),
        krylov_start=a.get("krylov_start", False),
    )
