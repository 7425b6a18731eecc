"""``landscape hessian`` end to end: results-file schema, JSON, foreign checkpoints, errors."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
import torch
from cases import one_error_line, runner

from landscape_cli.commands import app
from landscape_cli.results import read_hessian, update_file
from landscape_cli.training import TrainConfig

FAST = ["--samples", "96", "--batch-size", "32", "--density-probes", "2", "--lanczos-steps", "8"]


#: The checkpoint of the ``ckpt`` fixture (tests/conftest.py).
CKPT = TrainConfig(model="mlp", model_options={"hidden": [12]}, epochs=2)


def _ok(result):
    assert result.exit_code == 0, result.output
    return result


def test_results_file_has_exactly_the_schema(ckpt, tmp_path):
    out = tmp_path / "r.h5"
    _ok(runner.invoke(app, ["hessian", str(ckpt), "--out", str(out), *FAST]))
    with h5py.File(out) as f:
        for key in ("schema", "schema_version", "tool_version", "checkpoint", "checkpoint_sha256"):
            assert key in f.attrs
        assert f.attrs["schema"] == "landscape-results" and f.attrs["schema_version"] == 1
        for key in ("label", "model", "dataset"):
            assert isinstance(f.attrs[key], str)
        assert f.attrs["model"] == "mlp" and f.attrs["dataset"] == "digits"
        h = f["hessian"]
        for key in ("samples", "batch_size", "seed", "device", "hvp_count", "seconds"):
            assert key in h.attrs
        assert h.attrs["samples"] == 96 and h.attrs["batch_size"] == 32
        assert h["eigenvalues"].shape == (5,) and h["eigenvalues"].dtype == np.float64
        assert h["residuals"].shape == (5,) and h["residuals"].dtype == np.float64
        assert np.all(np.diff(h["eigenvalues"][()]) <= 0)
        assert h["trace"].shape == () and h["trace"].dtype == np.float64
        for key in ("stderr", "probes", "method"):
            assert key in h["trace"].attrs
        assert (
            h["trace_samples"].ndim == 1 and len(h["trace_samples"]) == h["trace"].attrs["probes"]
        )
        d = h["density"]
        assert d["grid"].shape == d["density"].shape
        # two probes from the top-k block (b = 2) run: 2 × 8 quadrature nodes each
        assert d["nodes"].shape == (2, 16) and d["weights"].shape == (2, 16)
        for key in ("sigma", "lanczos_steps", "probes"):
            assert key in d.attrs
        assert np.trapezoid(d["density"][()], d["grid"][()]) == pytest.approx(1.0, abs=1e-9)


def test_json_output_and_rerun_replaces_only_hessian(ckpt, tmp_path):
    out = tmp_path / "r.h5"
    update_file(out, {"checkpoint": str(ckpt)}, lambda f: f.create_group("notes"))
    result = _ok(runner.invoke(app, ["hessian", str(ckpt), "--out", str(out), "--json", *FAST]))
    data = json.loads(result.stdout)
    assert len(data["eigenvalues"]) == 5 and len(data["residuals"]) == 5
    assert data["samples"] == 96 and data["out"] == str(out)
    assert data["hvp_count"] > 0 and data["trace_stderr"] > 0
    # A small model keeps its Krylov basis in float64, orthonormal to rounding.
    assert data["lanczos_basis_dtype"] == "float64" and data["lanczos_orthogonality"] < 1e-12
    stored = read_hessian(out)
    np.testing.assert_array_equal(stored["eigenvalues"], data["eigenvalues"])
    # The density records the probes it used, its cap and the W1 error it reached.
    den = stored["density"]
    assert den["max_probes"] == 2 and den["probes"] == 2 and den["tol"] == 3e-3
    assert den["achieved_tol"] == pytest.approx(data["density_tol_achieved"])
    # Same seed, same numbers; a different --top-k is refused, and with --overwrite replaces
    # /hessian and keeps the other group.
    again = json.loads(
        _ok(runner.invoke(app, ["hessian", str(ckpt), "--out", str(out), "--json", *FAST])).stdout
    )
    assert again["eigenvalues"] == data["eigenvalues"] and again["trace"] == data["trace"]
    other = ["hessian", str(ckpt), "--out", str(out), "--top-k", "2", *FAST]
    assert "--overwrite" in one_error_line(runner.invoke(app, other))
    _ok(runner.invoke(app, [*other, "--overwrite"]))
    with h5py.File(out) as f:
        assert f["hessian/eigenvalues"].shape == (2,)
        assert "notes" in f


def test_default_out_path_and_skipping_estimators(ckpt):
    result = _ok(
        runner.invoke(
            app,
            [
                "hessian",
                str(ckpt),
                "--json",
                "--trace-probes",
                "0",
                "--density-probes",
                "0",
                "--top-k",
                "1",
                "--samples",
                "64",
            ],
        )
    )
    data = json.loads(result.stdout)
    assert data["out"] == str(ckpt.with_suffix(".h5")) and data["trace"] is None
    with h5py.File(ckpt.with_suffix(".h5")) as f:
        assert "trace" not in f["hessian"] and "density" not in f["hessian"]


def test_top_eigenvalue_matches_a_dense_hessian(ckpt, tmp_path):
    from torch.func import functional_call, hessian

    from landscape_cli.batches import select_indices
    from landscape_cli.checkpoints import load_model
    from landscape_cli.data import load_dataset

    out = tmp_path / "r.h5"
    args = ["hessian", str(ckpt), "--out", str(out), "--json", "--dtype", "float64"]
    args += ["--samples", "64", "--tol", "1e-10", "--max-steps", "300", "--top-k", "3"]
    data = json.loads(_ok(runner.invoke(app, [*args, "--trace-probes", "0"])).stdout)
    model = load_model(ckpt).model.double().eval()
    ds = load_dataset("digits", "train").dataset
    chosen = select_indices(ds, 64, seed=0).tolist()  # the samples `--samples 64` measures on
    x = torch.stack([ds[i][0] for i in chosen]).double()
    y = torch.stack([torch.as_tensor(ds[i][1]) for i in chosen])
    names = [k for k, _ in model.named_parameters()]
    shapes = [p.shape for p in model.parameters()]
    flat = torch.cat([p.detach().reshape(-1) for p in model.parameters()])

    def f(v):
        parts = torch.split(v, [s.numel() for s in shapes])
        params = {k: p.reshape(s) for k, p, s in zip(names, parts, shapes, strict=True)}
        return torch.nn.functional.cross_entropy(functional_call(model, params, (x,)), y)

    exact = np.sort(np.linalg.eigvalsh(hessian(f)(flat).numpy()))[::-1][:3]
    np.testing.assert_allclose(data["eigenvalues"], exact, rtol=1e-6)


def test_foreign_state_dict_with_model_and_dataset(ckpt, tmp_path):
    from landscape_cli.checkpoints import load_model

    net = load_model(ckpt).model
    plain = tmp_path / "plain.pth"
    torch.save({f"module.{k}": v for k, v in net.state_dict().items()}, plain)
    err = one_error_line(runner.invoke(app, ["hessian", str(plain), *FAST]))
    assert "--dataset" in err
    err = one_error_line(runner.invoke(app, ["hessian", str(plain), "--dataset", "digits", *FAST]))
    assert "--model" in err
    args = ["hessian", str(plain), "--dataset", "digits", "--model", "mlp"]
    args += ["--model-option", "hidden=[12]", "--json", *FAST]
    data = json.loads(_ok(runner.invoke(app, args)).stdout)
    ref_args = ["hessian", str(ckpt), "--json", "--out", str(tmp_path / "ref.h5"), *FAST]
    ref = json.loads(_ok(runner.invoke(app, ref_args)).stdout)
    assert data["eigenvalues"] == ref["eigenvalues"]


def test_interrupt_keeps_what_was_computed(ckpt, tmp_path, monkeypatch):
    import landscape_cli.hessian as hs

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(hs, "slq_density", interrupted)
    out = tmp_path / "r.h5"
    result = runner.invoke(app, ["hessian", str(ckpt), "--out", str(out), *FAST])
    last = result.stderr.splitlines()[-1]  # after the progress bars of the phases that ran
    assert result.exit_code == 130 and last.startswith("error: interrupted") and str(out) in last
    stored = read_hessian(out)
    assert len(stored["eigenvalues"]) == 5 and stored["trace"] is not None
    assert stored["density"] is None and stored["attrs"]["partial"]


def test_interrupt_never_replaces_a_complete_result(ckpt, tmp_path, monkeypatch):
    import landscape_cli.hessian as hs

    out = tmp_path / "r.h5"
    _ok(runner.invoke(app, ["hessian", str(ckpt), "--out", str(out), *FAST]))
    complete = out.read_bytes()

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(hs, "slq_density", interrupted)
    # the same command again (same options: it recomputes in place), interrupted
    result = runner.invoke(app, ["hessian", str(ckpt), "--out", str(out), *FAST])
    last = result.stderr.splitlines()[-1]
    assert result.exit_code == 130 and last.startswith("error: interrupted")
    assert out.read_bytes() == complete  # the complete /hessian is untouched
    partial = next(tmp_path.glob("r.partial*.h5"))
    assert str(partial) in last
    stored = read_hessian(partial)
    assert stored["attrs"]["partial"] and stored["density"] is None
    assert len(stored["eigenvalues"]) == 5


def test_a_write_that_fails_after_computing_saves_the_result_beside_it(ckpt, tmp_path, monkeypatch):
    import landscape_cli.results as rs

    real = rs.store.update_file  # every group's writer goes through the store
    out = tmp_path / "r.h5"

    def disk_full(path, root, mutate, **kwargs):
        if path == out:
            raise rs.ResultsWriteError(f"cannot write results file {path}: No space left")
        return real(path, root, mutate, **kwargs)

    monkeypatch.setattr(rs.store, "update_file", disk_full)
    result = runner.invoke(app, ["hessian", str(ckpt), "--out", str(out), *FAST])
    err = result.stderr.splitlines()[-1]  # after the progress bars of the finished work
    assert result.exit_code == 2 and err.startswith("error: ") and "Traceback" not in result.output
    rescued = next(tmp_path.glob("r.rescued-*.h5"))
    assert "No space left" in err and str(rescued) in err
    assert len(read_hessian(rescued)["eigenvalues"]) == 5
