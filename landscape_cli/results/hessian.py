"""The ``/hessian`` group (and ``/audit/hessian``, the same layout).

A :class:`~landscape_cli.hessian.types.HessianReport` written and read back.

:func:`write_hessian` takes a ``HessianReport`` (or a :class:`HessianResult`, the report with the
group's other attributes); :func:`read_hessian` returns a :class:`HessianResult` whose ``report``
is the report written, up to what the file keeps: ``param_names``/``param_shapes`` are stored only
with the eigenvectors, and eigenvectors come back as float32.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from landscape_cli.errors import LandscapeError
from landscape_cli.results import store
from landscape_cli.results.store import DictView, attrs_of, member_name, open_read, plain, set_attr

if TYPE_CHECKING:
    import h5py

    # not at run time: importing landscape_cli.hessian imports torch
    from landscape_cli.hessian.types import (
        DensityResult,
        HessianReport,
        LanczosResult,
        LayerCurvature,
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
            "lambda_min": None if top is None else float(top.lambda_min),
            "lambda_min_residual": None if top is None else float(top.lambda_min_residual),
            "trace": None if tr is None else float(tr.estimate),
            "trace_stderr": trace_attrs.get("stderr"),
            "method": trace_attrs.get("method"),
            "trace_attrs": trace_attrs,
            "trace_samples": None if tr is None else tr.samples,
            "density": None,
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


# -- attributes, shared by the writer and the dict view ---------------------------------------


def _report_attrs(report: HessianReport) -> dict[str, Any]:
    """The group attributes of ``report`` (numpy scalars, str, a list of str)."""
    out: dict[str, Any] = {key: np.int64(getattr(report, key)) for key in _INTS}
    out.update({key: np.float64(getattr(report, key)) for key in _FLOATS})
    out.update({key: str(getattr(report, key)) for key in _STRS})
    out["skipped_params"] = list(report.skipped_params)
    top = report.top
    if top is not None:
        out["lambda_min"] = np.float64(top.lambda_min)
        out["lambda_min_residual"] = np.float64(top.lambda_min_residual)
        out["lanczos_top_steps"] = np.int64(top.steps)
        out["lanczos_top_hvp_count"] = np.int64(top.hvp_count)
        out["tol"] = np.float64(top.tol)
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
    import h5py

    if not Path(path).exists():
        return False
    with open_read(path) as f:
        g = f.get("hessian")
        return isinstance(g, h5py.Group) and not bool(plain(g.attrs.get("partial", False)))


def read_hessian(path: str | os.PathLike[str], group: str = "hessian") -> HessianResult:
    """Read ``/hessian`` (or a group of the same layout) back as a :class:`HessianResult`.

    Read ``/hessian`` (or another group of the same layout, such as ``audit/hessian``) back
    as the :class:`HessianResult` that was written.
    """
    import h5py

    with open_read(path) as f:
        if group not in f or not isinstance(f[group], h5py.Group):
            raise LandscapeError(
                f"{path} has no Hessian results; run `landscape hessian` on its checkpoint first"
            )
        return read_group(f[group])


def read_group(g: h5py.Group) -> HessianResult:
    """The :class:`HessianResult` stored in the open group ``g``."""
    from landscape_cli.hessian.types import HessianReport, LayerCurvature

    attrs = attrs_of(g)
    partial = bool(attrs.pop("partial", False))
    names, shapes, top = _read_top(g, attrs)
    trace = _read_trace(g)
    density = _read_density(g)
    per_layer = tuple(
        LayerCurvature(
            name=name,
            numel=int(a.get("numel", 0)),
            lambda_max=float(a.get("lambda_max", np.nan)),
            lambda_max_residual=float(a.get("lambda_max_residual", np.nan)),
            trace=float(a.get("trace", np.nan)),
            trace_stderr=float(a.get("trace_stderr", np.nan)),
        )
        for name, a in ((n, attrs_of(m)) for n, m in g.get("per_layer", {}).items())
    )
    fields = {key: int(attrs.pop(key, 0)) for key in _INTS}
    fields.update({key: float(attrs.pop(key, np.nan)) for key in _FLOATS})
    fields.update({key: str(attrs.pop(key, "")) for key in _STRS})
    report = HessianReport(
        top=top,
        trace=trace,
        density=density,
        per_layer=per_layer,
        skipped_params=tuple(attrs.pop("skipped_params", ())),
        param_names=names,
        param_shapes=shapes,
        **fields,
    )
    return HessianResult(report, attrs, partial)


def _read_top(
    g: h5py.Group, attrs: dict[str, Any]
) -> tuple[tuple[str, ...], tuple[tuple[int, ...], ...], LanczosResult | None]:
    """Parameter names and shapes (from the eigenvectors) and the top-k result.

    The top-k attributes are taken out of ``attrs``.
    """
    from landscape_cli.hessian.types import LanczosResult

    names: tuple[str, ...] = ()
    shapes: tuple[tuple[int, ...], ...] = ()
    if "eigenvalues" not in g:
        return names, shapes, None
    top = {key: attrs.pop(key) for key in _TOP if key in attrs}
    vectors = None
    if "eigenvectors" in g:
        eg = g["eigenvectors"]
        order = plain(eg.attrs.get("param_names", np.array([], dtype=object)))
        order = [n for n in order if n in eg] + [n for n in eg if n not in order]
        blocks = [eg[name][()] for name in order]
        k = len(g["eigenvalues"])
        names = tuple(order)
        shapes = tuple(tuple(int(s) for s in b.shape[1:]) for b in blocks)
        flat = [b.reshape(k, -1) for b in blocks]
        vectors = np.concatenate(flat, axis=1) if flat else np.zeros((k, 0), np.float32)
    result = LanczosResult(
        eigenvalues=g["eigenvalues"][()],
        residuals=g["residuals"][()],
        converged=g["converged"][()],
        lambda_min=float(top.get("lambda_min", np.nan)),
        lambda_min_residual=float(top.get("lambda_min_residual", np.nan)),
        steps=int(top.get("lanczos_top_steps", 0)),
        hvp_count=int(top.get("lanczos_top_hvp_count", 0)),
        tol=float(top.get("tol", np.nan)),
        eigenvectors=vectors,
        basis_dtype=str(top.get("lanczos_basis_dtype", "")),
        orthogonality=float(top.get("lanczos_orthogonality", 0.0)),
    )
    return names, shapes, result


def _read_trace(g: h5py.Group) -> TraceResult | None:
    from landscape_cli.hessian.types import TraceResult

    if "trace" not in g:
        return None
    t = g["trace"]
    a = attrs_of(t)
    samples = g["trace_samples"][()] if "trace_samples" in g else np.zeros(0)
    return TraceResult(
        estimate=float(t[()]),
        stderr=float(a.get("stderr", np.nan)),
        ci95=(float(a.get("ci95_low", np.nan)), float(a.get("ci95_high", np.nan))),
        samples=samples,
        probes=int(a.get("probes", len(samples))),
        method=str(a.get("method", "")),
        hvp_count=int(a.get("hvp_count", 0)),
        converged=bool(a.get("converged", False)),
        rtol=float(a.get("rtol", 0.0)),
        note=str(a.get("note", "")),
    )


def _read_density(g: h5py.Group) -> DensityResult | None:
    from landscape_cli.hessian.types import DensityResult

    if "density" not in g:
        return None
    dg = g["density"]
    a = attrs_of(dg)
    return DensityResult(
        **{key: dg[key][()] for key in _DENSITY_ARRAYS},
        sigma=float(a.get("sigma", np.nan)),
        lanczos_steps=int(a.get("lanczos_steps", 0)),
        probes=int(a.get("probes", 0)),
        hvp_count=int(a.get("hvp_count", 0)),
        tol=float(a.get("tol", 0.0)),
        achieved_tol=float(a.get("achieved_tol", np.nan)),
        max_probes=int(a.get("max_probes", 0)),
        krylov_start=bool(a.get("krylov_start", False)),
    )
