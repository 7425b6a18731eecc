"""Each group of the results file read back is the frozen result that was written:
``read(write(r)) == r`` for ``/hessian``, ``/scan/<name>`` and ``/audit``, arrays compared with
numpy (values, NaNs in place, dtype and shape). The dict view (``result["key"]``) is checked
against the file's own attributes, read with h5py."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import replace

import h5py
import numpy as np
import pytest
from cases import runner
from test_results import NAMES, ROOT, SHAPES, _report

from landscape_cli.results import (
    AuditResult,
    HessianResult,
    ScanResult,
    read_audit,
    read_hessian,
    read_scan,
    write_audit,
    write_hessian,
    write_scan_result,
)
from landscape_cli.results.store import plain


def assert_same(got, want, where: str = "result") -> None:
    """``got`` equals ``want`` field by field: the same types, arrays equal with numpy, mappings
    with the same keys (HDF5 lists attributes by name; member order is checked where it counts)."""
    assert type(got) is type(want), f"{where}: {type(got).__name__} != {type(want).__name__}"
    if dataclasses.is_dataclass(want):
        for f in dataclasses.fields(want):
            assert_same(getattr(got, f.name), getattr(want, f.name), f"{where}.{f.name}")
    elif isinstance(want, np.ndarray):
        assert got.dtype == want.dtype and got.shape == want.shape, where
        np.testing.assert_array_equal(got, want, err_msg=where)
    elif isinstance(want, Mapping):
        assert sorted(got) == sorted(want), f"{where}: keys {sorted(got)} != {sorted(want)}"
        for key in want:
            assert_same(got[key], want[key], f"{where}[{key!r}]")
    elif isinstance(want, (list, tuple)):
        assert len(got) == len(want), where
        for i, (a, b) in enumerate(zip(got, want, strict=True)):
            assert_same(a, b, f"{where}[{i}]")
    elif isinstance(want, float) and np.isnan(want):
        assert np.isnan(got), where
    else:
        assert got == want, f"{where}: {got!r} != {want!r}"


def _attrs(obj) -> dict:
    return {key: plain(obj.attrs[key]) for key in obj.attrs}


# -- /hessian ------------------------------------------------------------------------------------

SETTINGS = json.dumps({"loss": "ce", "seed": 0, "top_k": 3}, sort_keys=True)
GROUP_ATTRS = {"checkpoint_sha256": "ab" * 32, "samples_sha256": "cd" * 32, "settings": SETTINGS}


def _no_vectors(report):
    top = replace(report.top, eigenvectors=None)
    return replace(report, top=top, param_names=(), param_shapes=())


HESSIANS = {
    "everything": HessianResult(_report(), dict(GROUP_ATTRS)),
    "no-eigenvectors": HessianResult(_no_vectors(_report()), {**GROUP_ATTRS, "engine": "lanczos"}),
    "nothing-computed": HessianResult(
        replace(_report(full=False), param_names=(), param_shapes=())
    ),
    "partial": HessianResult(_no_vectors(_report(2.0)), dict(GROUP_ATTRS), partial=True),
    "pyhessian": HessianResult(
        _no_vectors(replace(_report(), top=replace(_report().top, basis_dtype="")))
    ),
    "nan-loss": HessianResult(replace(_no_vectors(_report()), loss_value=float("nan"))),
}


@pytest.mark.parametrize("case", list(HESSIANS))
def test_hessian_read_is_what_was_written(tmp_path, case):
    r = HESSIANS[case]
    assert_same(read_hessian(write_hessian(tmp_path / "r.h5", r, root=ROOT)), r)


def test_hessian_written_from_a_report_and_options_reads_back_as_the_same_result(tmp_path):
    report = _report()
    path = write_hessian(tmp_path / "r.h5", report, root=ROOT, attrs=GROUP_ATTRS, partial=True)
    assert_same(read_hessian(path), HessianResult(report, GROUP_ATTRS, partial=True))


def test_hessian_eigenvectors_come_back_per_parameter_in_order(tmp_path):
    r = HESSIANS["everything"]
    got = read_hessian(write_hessian(tmp_path / "r.h5", r, root=ROOT))
    assert got.report.param_names == NAMES and got.report.param_shapes == SHAPES
    assert list(got["eigenvectors"]) == list(NAMES)
    assert got["eigenvectors"]["fc.bias"].shape == (3, 4)
    np.testing.assert_array_equal(got["eigenvectors"]["fc.bias"], r.report.top.eigenvectors[:, 6:])


@pytest.mark.parametrize("case", ["everything", "nothing-computed", "partial", "pyhessian"])
def test_hessian_dict_view_is_the_file(tmp_path, case):
    """``result["attrs"]`` and the trace, density and per-layer dicts hold exactly the file's
    attributes, with the same plain types as read straight from h5py."""
    path = write_hessian(tmp_path / "r.h5", HESSIANS[case], root=ROOT)
    got = read_hessian(path)
    with h5py.File(path) as f:
        g = f["hessian"]
        assert_same(got["attrs"], _attrs(g))
        if "trace" in g:
            assert_same(got["trace_attrs"], _attrs(g["trace"]))
            assert got["trace"] == float(g["trace"][()])
            assert got["trace_stderr"] == g["trace"].attrs["stderr"]
        else:
            assert got["trace"] is None and got["trace_attrs"] == {}
        if "density" in g:
            density = {k: v for k, v in got["density"].items() if k not in g["density"]}
            assert_same(density, _attrs(g["density"]))
        else:
            assert got["density"] is None
        layers = {name: _attrs(m) for name, m in g.get("per_layer", {}).items()}
        assert_same(got["per_layer"], layers)
        assert list(got["per_layer"]) == list(layers)  # parameter order
        for key in ("eigenvalues", "residuals", "converged"):
            assert (got[key] is None) == (key not in g)
        assert ("eigenvectors" in got) == ("eigenvectors" in g)


# -- /scan ---------------------------------------------------------------------------------------


def _scan(dim: int) -> ScanResult:
    rng = np.random.default_rng(dim)
    x = np.linspace(-1.0, 1.0, 7)
    y = np.linspace(-0.5, 0.5, 5) if dim == 2 else None
    shape = (7,) if dim == 1 else (5, 7)
    loss = rng.random(shape)
    loss.flat[-2:] = np.nan  # points not computed yet
    axes = ("x",) if dim == 1 else ("x", "y")
    directions = {
        axis: {
            "layer1.0.conv1.weight": rng.standard_normal((2, 3)).astype(np.float32),
            "fc.bias": rng.standard_normal(4).astype(np.float32),
        }
        for axis in axes
    }
    attrs = {
        "dim": dim,
        "kind": "random",
        "norm": "filter",
        "range": 1.0,
        "points": 7,
        "samples_sha256": "cd" * 32,
        "params": ["layer1.0.conv1.weight", "fc.bias"],
    }
    return ScanResult(f"{dim}d-random", x, y, loss, 1.0 - loss / 2, attrs, directions)


@pytest.mark.parametrize("dim", [1, 2])
def test_scan_read_is_what_was_written(tmp_path, dim):
    scan = _scan(dim)
    path = write_scan_result(tmp_path / "r.h5", ROOT, scan)
    got = read_scan(path, scan.name, directions=True)
    assert_same(got, scan)
    for axis, params in scan.directions.items():  # in parameter order
        assert list(got.directions[axis]) == list(params)
    without = read_scan(path, scan.name)  # directions are read only when asked for
    assert_same(without, replace(scan, directions=None))
    assert without.dim == dim and without.kind == "random"
    assert without["dim"] == dim and without["kind"] == "random" and "directions" not in without
    assert list(without) == ["name", "dim", "kind", "x", "y", "loss", "accuracy", "attrs"]


def test_two_scans_in_one_file_each_read_back(tmp_path):
    path = tmp_path / "r.h5"
    write_scan_result(path, ROOT, _scan(1))
    write_scan_result(path, ROOT, _scan(2))
    for dim in (1, 2):
        assert_same(read_scan(path, f"{dim}d-random", directions=True), _scan(dim))


# -- /audit --------------------------------------------------------------------------------------

MEASURES = {
    "lambda_max": 3.0,
    "trace": 7.0,
    "negative_mass": 0.01,
    "sharpness_1d": 0.25,
    "sharpness_1d_spread": np.array([0.2, 0.3]),
    "samples": 256,
    "converged": True,
    "split": "train",
    "skipped_params": ["frozen.weight"],
    "hessian_source": "audit/hessian",
    "settings": SETTINGS,
}


@pytest.mark.parametrize("with_hessian", [False, True])
def test_audit_read_is_what_was_written(tmp_path, with_hessian):
    audit = AuditResult(MEASURES, HESSIANS["no-eigenvectors"] if with_hessian else None)
    path = write_audit(tmp_path / "r.h5", ROOT, audit)
    got = read_audit(path)
    assert_same(got, audit)
    assert got["lambda_max"] == 3.0 and sorted(got) == sorted(MEASURES)


def test_audit_and_hessian_groups_of_one_file_are_independent(tmp_path):
    path = tmp_path / "r.h5"
    write_hessian(path, HESSIANS["everything"], root=ROOT)
    write_audit(path, ROOT, AuditResult(MEASURES, HESSIANS["partial"]))
    assert_same(read_hessian(path), HESSIANS["everything"])
    assert_same(read_hessian(path, "audit/hessian"), HESSIANS["partial"])
    assert_same(read_audit(path).hessian, HESSIANS["partial"])


def test_the_package_reads_results_by_their_fields_not_the_dict_view(
    trained_checkpoint, tmp_path, monkeypatch
):
    """``result["key"]`` is a shim for old scripts: with the dict view made to fail, a whole
    session of the commands (hessian, scans, an audit reusing /hessian and one computing its own,
    its report, and every figure of the results) runs as before."""
    from landscape_cli.commands import app
    from landscape_cli.results import store
    from landscape_cli.training import TrainConfig

    def refuse(self):
        raise AssertionError(f"the package read {type(self).__name__} through its dict view")

    ckpt = trained_checkpoint(TrainConfig(model="mlp", epochs=1), into=tmp_path)
    other = trained_checkpoint(TrainConfig(model="mlp", epochs=1, seed=1), into=tmp_path,
                               name="other.pt")  # fmt: skip
    monkeypatch.setattr(store.DictView, "_view_cache", property(refuse))
    h5 = ckpt.with_suffix(".h5")
    fast = ["--samples", "32", "--batch-size", "32"]
    est = ["--top-k", "2", "--trace-probes", "4", "--density-probes", "2", "--lanczos-steps", "6"]
    runs = [
        ["hessian", str(ckpt), *fast, *est, "--per-layer", "--json"],
        ["scan", str(ckpt), *fast, "--points", "5", "--json"],
        ["scan", str(ckpt), *fast, "--dim", "2", "--points", "3", "--json"],
        ["scan", str(ckpt), *fast, "--to", str(other), "--points", "3", "--json"],
        ["audit", str(ckpt), str(other), *fast, *est, "--match-loss",
         "--report", str(tmp_path / "audit.md"), "--json"],
        ["audit", str(ckpt), str(other), *fast, *est, "--match-loss",
         "--report", str(tmp_path / "audit.md")],
        *(["plot", str(h5), "--figure", f, "--out", str(tmp_path / f"{f}.png")]
          for f in ("fig5", "layers", "contour", "surface", "heatmap")),
        *(["plot", str(h5), "--figure", "fig6", "--name", name, "--out", str(tmp_path / "6.png")]
          for name in ("1d-random", "1d-interpolation")),
        ["plot", str(h5), str(other.with_suffix(".h5")), "--figure", "fig5", "--out",
         str(tmp_path / "two.png")],
    ]  # fmt: skip
    out = {}
    for args in runs:
        result = runner.invoke(app, args)
        assert result.exit_code == 0, (args, result.output, result.exception)
        out.setdefault(args[0], result.stdout)
    rows = json.loads(out["audit"])["checkpoints"]  # one reused /hessian, one computed its own
    assert [r["hessian_source"] for r in rows] == ["hessian", "audit/hessian"]
    assert (tmp_path / "audit-fig5.png").stat().st_size > 0
