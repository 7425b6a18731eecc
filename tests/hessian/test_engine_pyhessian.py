"""``landscape hessian --engine pyhessian``: PyHessian's own numbers, in the same schema."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from cases import one_error_line, runner

from landscape_cli.commands import app
from landscape_cli.results import read_hessian
from landscape_cli.training import TrainConfig
from landscape_cli.workload import Source, load_workload

SMALL = ["--density-probes", "2", "--lanczos-steps", "8", "--top-k", "2"]


#: The checkpoint of the ``ckpt`` fixture (tests/conftest.py).
CKPT = TrainConfig(model="mlp", model_options={"hidden": [12]}, epochs=2)


def _run(ckpt, out, *args):
    result = runner.invoke(app, ["hessian", str(ckpt), "--out", str(out), *args])
    assert result.exit_code == 0, result.output
    return result


def _pyhessian_directly(ckpt, samples: int, batch_size: int, seed: int, top_n: int):
    """What a user's script gets from PyHessian on the same model and samples, as in PyHessian's
    own example (torch.manual_seed, then eigenvalues(top_n), then trace(), its defaults), with
    torch's own cross-entropy; also counts its Hessian-vector products."""
    from pyhessian import hessian

    work = load_workload(ckpt, Source(samples=samples, batch_size=batch_size, seed=seed))
    model = work.model.eval()
    data = [(b.inputs, b.targets) for b in work.batches]
    torch.manual_seed(seed)
    if len(data) == 1:
        comp = hessian(model, torch.nn.CrossEntropyLoss(), data=data[0], cuda=False)
    else:
        comp = hessian(model, torch.nn.CrossEntropyLoss(), dataloader=data, cuda=False)
        products = comp.dataloader_hv_product
        count = [0]

        def counted(v):
            count[0] += 1
            return products(v)

        comp.dataloader_hv_product = counted
    eigenvalues, _ = comp.eigenvalues(top_n=top_n)
    after_eigen = count[0] if len(data) > 1 else None
    trace = comp.trace()
    hvps = (after_eigen, count[0] - after_eigen) if len(data) > 1 else None
    return eigenvalues, trace, hvps


@pytest.mark.parametrize(("samples", "batch_size"), [(64, 32), (48, 48)])
def test_equals_pyhessian_called_directly(ckpt, tmp_path, samples, batch_size):
    out = tmp_path / "p.h5"
    args = ["--engine", "pyhessian", "--samples", str(samples), "--batch-size", str(batch_size)]
    _run(ckpt, out, *args, "--seed", "3", *SMALL)
    eigenvalues, trace, hvps = _pyhessian_directly(ckpt, samples, batch_size, seed=3, top_n=2)
    h = read_hessian(out)
    np.testing.assert_array_equal(h["eigenvalues"], eigenvalues)  # bit for bit on the CPU
    np.testing.assert_array_equal(h["trace_samples"], trace)
    assert h["trace"] == pytest.approx(float(np.mean(trace)), rel=1e-9)
    assert h["trace_attrs"]["method"] == "pyhessian-hutchinson"
    assert h["trace_attrs"]["probes"] == len(trace) == h["trace_attrs"]["hvp_count"]
    if hvps is not None:  # its products, counted apart from landscape's own
        assert h["attrs"]["lanczos_top_hvp_count"] == hvps[0]
        assert h["attrs"]["hvp_count"] >= hvps[0] + hvps[1]
    assert h["attrs"]["engine"] == "pyhessian" and h["attrs"]["tol"] == 1e-3
    assert np.isnan(h["attrs"]["lambda_min"])


def test_the_seed_is_used(ckpt, tmp_path):
    base = ["--engine", "pyhessian", "--samples", "48", "--batch-size", "48"]
    base += ["--top-k", "1", "--density-probes", "0"]
    _run(ckpt, tmp_path / "a.h5", *base, "--seed", "0")
    _run(ckpt, tmp_path / "b.h5", *base, "--seed", "1")
    a, b = read_hessian(tmp_path / "a.h5"), read_hessian(tmp_path / "b.h5")
    assert not np.array_equal(a["trace_samples"][:2], b["trace_samples"][:2])


def test_residuals_are_those_of_the_dense_hessian(ckpt, tmp_path):
    from landscape_cli.hessian import HessianOperator

    out = tmp_path / "v.h5"
    args = ["--engine", "pyhessian", "--samples", "48", "--batch-size", "24", "--eigenvectors"]
    _run(ckpt, out, *args, "--top-k", "2", "--trace-probes", "0", "--density-probes", "0")
    h = read_hessian(out)
    vectors = np.concatenate([v.reshape(2, -1) for v in h["eigenvectors"].values()], axis=1).astype(
        np.float64
    )
    work = load_workload(ckpt, Source(samples=48, batch_size=24, seed=0))
    dense = HessianOperator(work.model, work.batches).dense().numpy()
    for lam, v, res in zip(h["eigenvalues"], vectors, h["residuals"], strict=True):
        v = v / np.linalg.norm(v)
        assert np.linalg.norm(dense @ v - lam * v) == pytest.approx(res, rel=1e-3, abs=1e-6)
        # the Rayleigh quotient PyHessian reports is close to an eigenvalue of H
        assert np.min(np.abs(np.linalg.eigvalsh(dense) - lam)) <= res + 1e-6


def test_engine_attribute_round_trips_and_fig5_draws_both(ckpt, tmp_path):
    common = ["--samples", "64", "--batch-size", "32", *SMALL]
    result = _run(ckpt, tmp_path / "p.h5", "--engine", "pyhessian", *common, "--label", "PyHessian")
    notes = [ln for ln in result.stderr.splitlines() if ln.startswith("note:")]
    assert len(notes) == 1 and "density" in notes[0] and "torch.eig" in notes[0]
    result = _run(ckpt, tmp_path / "l.h5", *common, "--label", "Lanczos")
    assert "note:" not in result.stderr
    p, lz = read_hessian(tmp_path / "p.h5"), read_hessian(tmp_path / "l.h5")
    assert p["attrs"]["engine"] == "pyhessian" and lz["attrs"]["engine"] == "lanczos"
    assert p["density"] is not None and p["density"]["probes"] >= 1  # landscape's SLQ
    import json

    assert json.loads(p["attrs"]["settings"])["engine"] == "pyhessian"
    assert "engine" not in json.loads(lz["attrs"]["settings"])
    # the certified Lanczos value beside PyHessian's: same operator, close values
    assert p["eigenvalues"][0] == pytest.approx(lz["eigenvalues"][0], rel=0.05)
    fig = tmp_path / "fig5.png"
    args = ["plot", str(tmp_path / "p.h5"), str(tmp_path / "l.h5"), "--figure", "fig5"]
    result = runner.invoke(app, [*args, "--out", str(fig)])
    assert result.exit_code == 0, result.output
    assert fig.stat().st_size > 1000


def test_no_density_no_note(ckpt, tmp_path):
    args = ["--engine", "pyhessian", "--samples", "48", "--batch-size", "48", "--top-k", "1"]
    result = _run(ckpt, tmp_path / "p.h5", *args, "--density-probes", "0", "--json")
    assert "note:" not in result.stderr
    import json

    row = json.loads(result.stdout)
    assert row["engine"] == "pyhessian" and row["lambda_min"] is None


def test_per_layer_with_pyhessian_says_whose_it_is(ckpt, tmp_path):
    args = ["--engine", "pyhessian", "--samples", "48", "--batch-size", "48", "--top-k", "1"]
    args += ["--density-probes", "0", "--trace-probes", "0", "--per-layer"]
    result = _run(ckpt, tmp_path / "p.h5", *args)
    notes = [ln for ln in result.stderr.splitlines() if ln.startswith("note:")]
    assert len(notes) == 1 and "per-layer" in notes[0]
    assert read_hessian(tmp_path / "p.h5")["per_layer"]


def test_a_lanczos_rerun_does_not_silently_replace_a_pyhessian_result(ckpt, tmp_path):
    args = ["--samples", "48", "--batch-size", "48", "--top-k", "1", "--density-probes", "0"]
    _run(ckpt, tmp_path / "p.h5", "--engine", "pyhessian", *args)
    line = one_error_line(
        runner.invoke(app, ["hessian", str(ckpt), "--out", str(tmp_path / "p.h5"), *args])
    )
    assert "engine" in line


def test_audit_never_reuses_a_pyhessian_result(ckpt, tmp_path):
    from dataclasses import replace

    from landscape_cli.audit import AuditSettings

    args = ["--samples", "48", "--batch-size", "48", "--top-k", "2", "--density-probes", "0"]
    _run(ckpt, tmp_path / "p.h5", "--engine", "pyhessian", *args)
    _run(ckpt, tmp_path / "l.h5", *args)
    settings = AuditSettings(top_k=2, trace_probes=2, trace_rtol=1.0, density_probes=0)
    work = load_workload(ckpt, Source(samples=48, batch_size=48, seed=0))
    kw = {"samples_sha256": work.samples_sha256, "split": "train", "dataset": "digits"}
    lanczos, pyh = read_hessian(tmp_path / "l.h5"), read_hessian(tmp_path / "p.h5")
    assert lanczos.covers(settings, **kw)
    assert pyh.engine == "pyhessian" and not pyh.covers(settings, **kw)
    pyh = replace(pyh, attrs={**pyh.attrs, "engine": "lanczos"})
    assert not pyh.covers(settings, **kw)  # nor power iteration's unresolved multiplicities
    top = replace(pyh.report.top, multiplicity_resolved=True)  # those two are what refuse it
    assert replace(pyh, report=replace(pyh.report, top=top)).covers(settings, **kw)


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--engine", "arpack"], "--engine must be one of lanczos, pyhessian"),
        (["--engine", "pyhessian", "--tol", "1e-3"], "maxIter=100, tol=1e-3"),
        (["--engine", "pyhessian", "--trace-probes", "10"], "--trace-probes takes 0"),
        (["--engine", "pyhessian", "--bn-mode", "train"], "--bn-mode train needs"),
        (["--engine", "pyhessian", "--dtype", "float64"], "--dtype float64 needs"),
    ],
)
def test_options_pyhessian_cannot_honour_are_one_line(ckpt, tmp_path, args, expected):
    result = runner.invoke(app, ["hessian", str(ckpt), "--out", str(tmp_path / "x.h5"), *args])
    assert expected in one_error_line(result)
    assert not (tmp_path / "x.h5").exists()
