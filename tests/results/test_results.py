"""The results file: exact schema, round trips, atomic locked updates, foreign files."""

from __future__ import annotations

import multiprocessing as mp

import h5py
import numpy as np
import pytest

from landscape_cli import __version__
from landscape_cli.errors import LandscapeError
from landscape_cli.hessian.types import (
    DensityResult,
    HessianReport,
    LanczosResult,
    LayerCurvature,
    TraceResult,
)
from landscape_cli.results import (
    SCHEMA,
    list_groups,
    read_hessian,
    read_root,
    update_file,
    write_hessian,
)

NAMES = ("layer1.0.conv1.weight", "fc.bias")
SHAPES = ((2, 3), (4,))
N = 10  # 2*3 + 4

ROOT = {
    "checkpoint": "ckpt/m.pt",
    "checkpoint_sha256": "ab" * 32,
    "label": "DualAdam",
    "model": "cnn",
    "dataset": "digits",
    "argv": ["landscape", "hessian", "ckpt/m.pt"],
    "torch_version": "2.5.0",
    "cuda_version": None,
}


def _report(scale: float = 1.0, *, full: bool = True, vectors: bool = True) -> HessianReport:
    rng = np.random.default_rng(0)
    top = LanczosResult(
        eigenvalues=np.array([3.0, 2.0, 1.0]) * scale,
        residuals=np.array([1e-6, 2e-6, 3e-5]),
        converged=np.array([True, True, False]),
        lambda_min=-0.5 * scale,
        lambda_min_residual=1e-3,
        steps=12,
        hvp_count=12,
        tol=1e-4,
        eigenvectors=rng.standard_normal((3, N)).astype(np.float32) if vectors else None,
        gaps=np.array([1.0, 1.0, 0.25]) * scale,
        block_size=2,
        multiplicity_resolved=True,
    )
    samples = np.array([5.0, 6.0, 7.0, 8.0, 9.0]) * scale
    trace = TraceResult(
        estimate=float(samples.mean()),
        stderr=0.7,
        ci95=(5.6 * scale, 8.4 * scale),
        samples=samples,
        probes=5,
        method="hutch++",
        hvp_count=15,
        converged=True,
        rtol=0.05,
        note="hutch++: spectrum is top-heavy",
    )
    grid = np.linspace(-1.0, 4.0, 50)
    density = DensityResult(
        grid=grid,
        density=np.exp(-(grid**2)),
        nodes=rng.standard_normal((2, 4)),
        weights=np.full((2, 4), 0.25),
        sigma=0.05,
        lanczos_steps=4,
        probes=2,
        hvp_count=8,
    )
    per_layer = (
        LayerCurvature("layer1.0.conv1.weight", 6, 2.5 * scale, 1e-5, 4.0, 0.1),
        LayerCurvature("fc.bias", 4, 0.5 * scale, 2e-5, 1.0, 0.05),
    )
    return HessianReport(
        top=top if full else None,
        trace=trace if full else None,
        density=density if full else None,
        per_layer=per_layer if full else (),
        samples=256,
        batch_size=64,
        seed=0,
        device="cpu",
        dtype="float32",
        loss="ce",
        split="train",
        bn_mode="eval",
        hvp_count=35,
        seconds=1.25,
        num_params=N,
        skipped_params=("frozen.weight",) if full else (),
        skipped_reasons=("frozen",) if full else (),
        param_names=NAMES,
        param_shapes=SHAPES,
        loss_value=0.123,
        grad_norm=0.01,
    )


def _is_str_attr(obj: h5py.HLObject, name: str) -> bool:
    info = h5py.check_string_dtype(obj.attrs.get_id(name).dtype)
    return info is not None and info.encoding == "utf-8" and info.length is None


def _all_names(f: h5py.File) -> set[str]:
    names: set[str] = set()
    f.visit(names.add)
    return names


HESSIAN_ATTRS = {
    "samples",
    "batch_size",
    "seed",
    "device",
    "hvp_count",
    "seconds",
    "dtype",
    "loss",
    "split",
    "bn_mode",
    "num_params",
    "loss_value",
    "grad_norm",
    "skipped_params",
    "skipped_reasons",
    "curvature",
    "param_names",
}
TOP_ATTRS = {
    "lambda_min",
    "lambda_min_residual",
    "lanczos_top_steps",
    "lanczos_top_hvp_count",
    "lanczos_basis_dtype",
    "lanczos_orthogonality",
    "lanczos_block_size",
    "multiplicity_resolved",
    "largest_cluster",
    "tol",
}


def test_schema_exact(tmp_path):
    report = _report()
    path = write_hessian(tmp_path / "m.h5", report, root=ROOT)
    assert path == tmp_path / "m.h5"
    with h5py.File(path, "r") as f:
        # root attributes: str as UTF-8 str, None omitted
        assert set(f.attrs) == {
            "schema",
            "schema_version",
            "tool_version",
            "checkpoint",
            "checkpoint_sha256",
            "label",
            "model",
            "dataset",
            "argv",
            "torch_version",
        }
        assert f.attrs["schema"] == SCHEMA and f.attrs["schema_version"] == 1
        assert f.attrs["tool_version"] == __version__
        for key in ("schema", "tool_version", "checkpoint", "label", "model", "dataset"):
            assert _is_str_attr(f, key), key
            assert isinstance(f.attrs[key], str)
        assert list(f.attrs["argv"]) == ROOT["argv"]
        assert h5py.check_string_dtype(f.attrs.get_id("argv").dtype).encoding == "utf-8"

        # exactly these members
        assert _all_names(f) == {
            "hessian",
            "hessian/eigenvalues",
            "hessian/residuals",
            "hessian/converged",
            "hessian/gaps",
            "hessian/eigenvectors",
            *(f"hessian/eigenvectors/{n}" for n in NAMES),
            "hessian/trace",
            "hessian/trace_samples",
            "hessian/density",
            "hessian/density/grid",
            "hessian/density/density",
            "hessian/density/nodes",
            "hessian/density/weights",
            "hessian/per_layer",
            *(f"hessian/per_layer/{n}" for n in NAMES),
        }
        g = f["hessian"]
        assert set(g.attrs) == HESSIAN_ATTRS | TOP_ATTRS
        for key in ("device", "dtype", "loss", "split", "bn_mode"):
            assert _is_str_attr(g, key) and g.attrs[key] == getattr(report, key)
        assert g.attrs["samples"] == 256 and g.attrs["hvp_count"] == 35
        assert g.attrs["seconds"].dtype == np.float64
        assert list(g.attrs["skipped_params"]) == ["frozen.weight"]
        assert _is_str_attr(g, "skipped_params")
        assert list(g.attrs["skipped_reasons"]) == ["frozen"] and _is_str_attr(g, "curvature")
        assert g.attrs["curvature"] == "hessian" and list(g.attrs["param_names"]) == list(NAMES)

        shapes = {
            "eigenvalues": ((3,), np.float64),
            "residuals": ((3,), np.float64),
            "converged": ((3,), np.bool_),
            "trace": ((), np.float64),
            "trace_samples": ((5,), np.float64),
            "density/grid": ((50,), np.float64),
            "density/density": ((50,), np.float64),
            "density/nodes": ((2, 4), np.float64),
            "density/weights": ((2, 4), np.float64),
        }
        for name, (shape, dtype) in shapes.items():
            assert g[name].shape == shape, name
            assert g[name].dtype == dtype, name
        np.testing.assert_array_equal(g["eigenvalues"][()], [3.0, 2.0, 1.0])
        np.testing.assert_array_equal(g["converged"][()], [True, True, False])

        t = g["trace"]
        assert set(t.attrs) == {
            "stderr",
            "probes",
            "method",
            "ci95_low",
            "ci95_high",
            "hvp_count",
            "converged",
            "rtol",
            "note",
        }
        assert _is_str_attr(t, "method") and t.attrs["method"] == "hutch++"
        assert t[()] == pytest.approx(7.0)

        d = g["density"]
        assert set(d.attrs) == {
            "sigma",
            "lanczos_steps",
            "probes",
            "hvp_count",
            "tol",
            "achieved_tol",
            "max_probes",
            "krylov_start",
        }
        assert d.attrs["sigma"] == 0.05 and d.attrs["lanczos_steps"] == 4

        assert list(g["per_layer"]) == list(NAMES)  # parameter order, dots kept
        for name in NAMES:
            assert set(g["per_layer"][name].attrs) == {
                "lambda_max",
                "lambda_max_residual",
                "trace",
                "trace_stderr",
                "numel",
            }
        assert g["per_layer/fc.bias"].attrs["lambda_max"] == 0.5

        # eigenvectors: (k, *shape) float32, flattening back gives the original (k, n)
        ev = g["eigenvectors"]
        assert list(ev) == list(NAMES)
        for name, shape in zip(NAMES, SHAPES, strict=True):
            assert ev[name].shape == (3, *shape) and ev[name].dtype == np.float32
        flat = np.concatenate([ev[n][()].reshape(3, -1) for n in NAMES], axis=1)
        np.testing.assert_array_equal(flat, report.top.eigenvectors)


def test_files_from_before_the_curvature_family_read_as_the_hessian(tmp_path):
    """No `curvature`, `skipped_reasons` or group `param_names`: the Hessian, every skipped
    parameter for want of a gradient (all that was skipped then), the eigenvectors' names."""
    path = write_hessian(tmp_path / "old.h5", _report(), root=ROOT)
    with h5py.File(path, "r+") as f:
        for key in ("curvature", "skipped_reasons", "param_names"):
            del f["hessian"].attrs[key]
    report = read_hessian(path).report
    assert report.curvature == "hessian" and report.skipped_reasons == ("no gradient",)
    assert report.param_names == NAMES and report.skipped_params == ("frozen.weight",)


def test_read_hessian_round_trip(tmp_path):
    report = _report()
    path = write_hessian(tmp_path / "m.h5", report, root=ROOT)
    r = read_hessian(path)
    np.testing.assert_array_equal(r["eigenvalues"], report.top.eigenvalues)
    np.testing.assert_array_equal(r["residuals"], report.top.residuals)
    np.testing.assert_array_equal(r["converged"], report.top.converged)
    assert r["lambda_min"] == -0.5 and r["lambda_min_residual"] == 1e-3
    assert r["trace"] == report.trace.estimate and r["trace_stderr"] == 0.7
    assert r["method"] == "hutch++"
    np.testing.assert_array_equal(r["trace_samples"], report.trace.samples)
    assert r["trace_attrs"]["converged"] is True
    assert r["trace_attrs"]["note"] == report.trace.note
    assert (r["trace_attrs"]["ci95_low"], r["trace_attrs"]["ci95_high"]) == report.trace.ci95
    den = r["density"]
    for key in ("grid", "density", "nodes", "weights"):
        np.testing.assert_array_equal(den[key], getattr(report.density, key))
    assert den["sigma"] == 0.05 and den["probes"] == 2 and den["hvp_count"] == 8
    assert list(r["per_layer"]) == list(NAMES)
    assert r["per_layer"]["layer1.0.conv1.weight"] == {
        "lambda_max": 2.5,
        "lambda_max_residual": 1e-5,
        "trace": 4.0,
        "trace_stderr": 0.1,
        "numel": 6,
    }
    assert list(r["eigenvectors"]) == list(NAMES)
    flat = np.concatenate([r["eigenvectors"][n].reshape(3, -1) for n in NAMES], axis=1)
    np.testing.assert_array_equal(flat, report.top.eigenvectors)
    attrs = r["attrs"]
    assert attrs["skipped_params"] == ["frozen.weight"]
    assert attrs["device"] == "cpu" and attrs["lanczos_top_steps"] == 12
    assert attrs["loss_value"] == 0.123 and attrs["num_params"] == N
    root = read_root(path)
    assert root["label"] == "DualAdam" and root["argv"] == ROOT["argv"]
    assert "cuda_version" not in root
    assert list_groups(path) == ["hessian"]


def _add_scan(f: h5py.File) -> None:
    g = f.require_group("scan").create_group("1d-random")
    g.attrs["dim"] = 1
    g.create_dataset("loss", data=np.arange(5.0))


def test_rewrite_replaces_hessian_and_keeps_other_groups(tmp_path):
    path = tmp_path / "m.h5"
    write_hessian(path, _report(), root=ROOT)
    update_file(path, ROOT, _add_scan)
    assert list_groups(path) == ["hessian", "scan/1d-random"]
    copied = read_hessian(path)  # the copy keeps parameter order (not alphabetical)
    assert list(copied["per_layer"]) == list(NAMES) and list(copied["eigenvectors"]) == list(NAMES)
    write_hessian(path, _report(10.0, vectors=False), root={**ROOT, "label": "Adam"})
    with h5py.File(path, "r") as f:
        np.testing.assert_array_equal(f["hessian/eigenvalues"][()], [30.0, 20.0, 10.0])
        assert "eigenvectors" not in f["hessian"]  # the old group is gone, not merged
        np.testing.assert_array_equal(f["scan/1d-random/loss"][()], np.arange(5.0))
        assert f["scan/1d-random"].attrs["dim"] == 1
        assert f.attrs["label"] == "Adam" and f.attrs["checkpoint"] == "ckpt/m.pt"
    r = read_hessian(path)
    assert r["trace"] == pytest.approx(70.0)
    assert "eigenvectors" not in r
    assert list_groups(path) == ["hessian", "scan/1d-random"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.h5"]  # no temp, no lock left


def test_report_without_parts(tmp_path):
    path = write_hessian(tmp_path / "m.h5", _report(full=False), root={"label": "x"})
    with h5py.File(path, "r") as f:
        assert _all_names(f) == {"hessian"}
        g = f["hessian"]
        assert set(g.attrs) == HESSIAN_ATTRS
        assert g.attrs["skipped_params"].shape == (0,)
        assert _is_str_attr(g, "skipped_params")
        assert set(f.attrs) == {"schema", "schema_version", "tool_version", "label"}
    r = read_hessian(path)
    assert r["eigenvalues"] is None and r["trace"] is None and r["trace_samples"] is None
    assert r["density"] is None and r["per_layer"] == {} and "eigenvectors" not in r
    assert r["attrs"]["skipped_params"] == []


def _add_groups(path: str, prefix: str, count: int) -> None:
    for i in range(count):
        update_file(path, {}, lambda f, i=i: f.create_group(f"{prefix}/{i}"))


def test_concurrent_writers_keep_each_others_groups(tmp_path):
    path = str(tmp_path / "m.h5")
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_add_groups, args=(path, p, 20)) for p in ("a", "b")]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    with h5py.File(path, "r") as f:
        for prefix in ("a", "b"):
            assert sorted(f[prefix], key=int) == [str(i) for i in range(20)]
    assert len(list_groups(path)) == 40


def test_foreign_files_are_refused_and_untouched(tmp_path):
    foreign = tmp_path / "foreign.h5"
    with h5py.File(foreign, "w") as f:
        f.create_dataset("x", data=np.arange(3))
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as f:
        f.attrs["schema"] = "something-else"
    text = tmp_path / "notes.h5"
    text.write_text("not hdf5\n")
    for path in (foreign, other, text):
        before = path.read_bytes()
        with pytest.raises(LandscapeError) as info:
            write_hessian(path, _report(), root=ROOT)
        assert "\n" not in str(info.value) and str(path) in str(info.value)
        with pytest.raises(LandscapeError):
            read_hessian(path)
        with pytest.raises(LandscapeError):
            read_root(path)
        assert path.read_bytes() == before
    assert not list(tmp_path.glob("*.tmp")) and not list(tmp_path.glob(".*.tmp"))


def test_read_errors(tmp_path):
    with pytest.raises(LandscapeError, match="does not exist"):
        read_hessian(tmp_path / "missing.h5")
    with pytest.raises(LandscapeError, match="not a file"):
        list_groups(tmp_path)
    path = update_file(tmp_path / "new" / "m.h5", ROOT, _add_scan)  # creates the folder
    with pytest.raises(LandscapeError, match="no Hessian results"):
        read_hessian(path)
    assert read_root(path)["model"] == "cnn"


def test_failing_mutate_leaves_file_byte_identical(tmp_path):
    path = write_hessian(tmp_path / "m.h5", _report(), root=ROOT)
    before = path.read_bytes()
    listing = sorted(p.name for p in tmp_path.iterdir())

    def boom(f: h5py.File) -> None:
        del f["hessian"]
        f.create_group("half-written")
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        update_file(path, {"label": "changed"}, boom)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == listing
    assert read_root(path)["label"] == "DualAdam"


def test_bad_eigenvector_layout_is_rejected(tmp_path):
    from dataclasses import replace

    report = replace(_report(), param_shapes=((2, 3), (5,)))
    with pytest.raises(ValueError, match="add up to"):
        write_hessian(tmp_path / "m.h5", report, root=ROOT)
    assert list(tmp_path.glob("*.h5")) == [] and not list(tmp_path.glob(".*.tmp"))
