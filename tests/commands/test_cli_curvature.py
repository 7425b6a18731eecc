"""`--curvature`, `--params` and `--include-frozen` on the command line (issue 21 §2, issue 23
§2–3): hessian, scan and audit on a checkpoint whose factory freezes its first layer, checked
against dense float64 matrices of the same samples; the options stored, shown, refused and
reused as the results-file rule says."""

from __future__ import annotations

import json
import sys
import textwrap
import uuid

import h5py
import numpy as np
import pytest
import torch
from cases import one_error_line, runner
from torch.func import functional_call, hessian

from landscape_cli.commands import app
from landscape_cli.results import read_audit, read_hessian, read_scan

FAST = ["--samples", "64", "--batch-size", "32", "--trace-probes", "0", "--density-probes", "0"]
FROZEN = ("1.weight", "1.bias")
TRAINABLE = ("3.weight", "3.bias")

FACTORY = """
import torch
from torch import nn


def frozen_mlp(input_shape, num_classes, hidden=12):
    torch.manual_seed(0)
    n = 1
    for s in input_shape:
        n *= s
    m = nn.Sequential(nn.Flatten(), nn.Linear(n, hidden), nn.Tanh(), nn.Linear(hidden, num_classes))
    m[1].requires_grad_(False)  # a frozen first layer, as a fine-tune's backbone
    return m
"""


@pytest.fixture(scope="module")
def frozen(tmp_path_factory):
    """(checkpoint, the options naming its model and data, the model, inputs, targets)."""
    folder = tmp_path_factory.mktemp("frozen")
    name = f"frozenmod_{uuid.uuid4().hex[:8]}"
    (folder / f"{name}.py").write_text(textwrap.dedent(FACTORY))
    sys.path.insert(0, str(folder))
    module = __import__(name)
    model = module.frozen_mlp((1, 8, 8), 10)
    with torch.no_grad():  # weights away from the initialisation, still deterministic
        for p in model.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())))
    ckpt = folder / "frozen.pt"
    torch.save(model.state_dict(), ckpt)
    opts = ["--model", f"{name}:frozen_mlp", "--dataset", "digits"]

    from landscape_cli.batches import select_indices
    from landscape_cli.data import load_dataset

    ds = load_dataset("digits", "train").dataset
    chosen = select_indices(ds, 64, seed=0).tolist()  # the samples `--samples 64` measures on
    x = torch.stack([ds[i][0] for i in chosen]).double()
    y = torch.stack([torch.as_tensor(ds[i][1]) for i in chosen])
    yield ckpt, opts, model.double().eval(), x, y
    sys.path.remove(str(folder))


def _dense(model, x, y, names, kind="hessian"):
    """The exact Hessian (or GGN) of the mean cross-entropy over ``names``' parameters."""
    base = {k: p.detach() for k, p in model.named_parameters()}
    shapes = [base[k].shape for k in names]
    flat = torch.cat([base[k].reshape(-1) for k in names])

    def out(v):
        parts = torch.split(v, [s.numel() for s in shapes])
        params = dict(base) | {
            k: p.reshape(s) for k, p, s in zip(names, parts, shapes, strict=True)
        }
        return functional_call(model, params, (x,))

    if kind == "hessian":
        return hessian(lambda v: torch.nn.functional.cross_entropy(out(v), y))(flat)
    from torch.func import jacrev

    z = out(flat)
    J = jacrev(out)(flat).reshape(z.numel(), -1)
    Hz = hessian(lambda zz: torch.nn.functional.cross_entropy(zz, y))(z).reshape(z.numel(), -1)
    return J.T @ Hz @ J


def _top(M, k=3):
    return np.sort(np.linalg.eigvalsh(M.numpy()))[::-1][:k]


def _run(args):
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    return result


def test_frozen_parameters_are_listed_noted_and_measured_on_request(frozen, tmp_path):
    ckpt, opts, model, x, y = frozen
    common = ["hessian", str(ckpt), *opts, *FAST, "--dtype", "float64", "--tol", "1e-10"]
    common += ["--max-steps", "200", "--top-k", "3", "--json"]
    res = _run([*common, "--out", str(tmp_path / "a.h5")])
    got = json.loads(res.stdout)
    assert got["num_params"] == 130 and got["param_names"] == list(TRAINABLE)
    assert got["skipped_params"] == list(FROZEN) and got["skipped_reasons"] == ["frozen", "frozen"]
    notes = [line for line in res.stderr.splitlines() if line.startswith("note:")]
    assert notes == [
        "note: 2 frozen parameters (requires_grad=False; 780 values) are not measured: 1.weight, "
        "1.bias; --include-frozen measures them too"
    ]
    np.testing.assert_allclose(got["eigenvalues"], _top(_dense(model, x, y, TRAINABLE)), rtol=1e-6)
    stored = read_hessian(tmp_path / "a.h5").report
    assert stored.skipped_params == FROZEN and stored.skipped_reasons == ("frozen", "frozen")
    assert stored.param_names == TRAINABLE

    res = _run([*common, "--include-frozen", "--out", str(tmp_path / "b.h5")])
    got = json.loads(res.stdout)
    assert got["num_params"] == 910 and got["skipped_params"] == [] and "note:" not in res.stderr
    full = _dense(model, x, y, FROZEN + TRAINABLE)
    np.testing.assert_allclose(got["eigenvalues"], _top(full), rtol=1e-6)
    assert abs(_top(full)[0] - _top(_dense(model, x, y, TRAINABLE))[0]) > 1e-3
    assert json.loads(read_hessian(tmp_path / "b.h5")["attrs"]["settings"])["include_frozen"]

    table = _run([*common[:-1], "--out", str(tmp_path / "c.h5")]).stdout
    assert "2 frozen" in table and "1.weight" in table and "130" in table


def test_params_restricts_to_the_dense_diagonal_block(frozen, tmp_path):
    ckpt, opts, model, x, y = frozen
    args = ["hessian", str(ckpt), *opts, *FAST, "--dtype", "float64", "--tol", "1e-10"]
    args += ["--params", "3.bias", "--params", "1.*", "--include-frozen", "--top-k", "2"]
    args += ["--json", "--out", str(tmp_path / "p.h5"), "--per-layer"]
    got = json.loads(_run(args).stdout)
    names = ("1.weight", "1.bias", "3.bias")
    assert got["param_names"] == list(names) and got["num_params"] == 790
    assert got["skipped_params"] == ["3.weight"] and got["skipped_reasons"] == ["not selected"]
    np.testing.assert_allclose(got["eigenvalues"], _top(_dense(model, x, y, names), 2), rtol=1e-6)
    assert list(got["per_layer"]) == list(names)  # blocks within the subset
    settings = json.loads(read_hessian(tmp_path / "p.h5")["attrs"]["settings"])
    assert settings["params"] == ["3.bias", "1.*"] and settings["include_frozen"] is True
    # another selection into the same file is "other options"
    again = [a for a in args if a != "--include-frozen"]
    err = one_error_line(runner.invoke(app, again))
    assert "other options" in err and "include_frozen" in err and "--overwrite" in err


def test_a_pattern_that_matches_nothing_is_one_line_naming_parameters(frozen, tmp_path):
    ckpt, opts, *_ = frozen
    for command in (["hessian"], ["scan"], ["audit"]):
        args = [*command, str(ckpt), *opts, "--samples", "32", "--params", "encoder.*"]
        if command != ["audit"]:
            args += ["--out", str(tmp_path / "x.h5")]
        err = one_error_line(runner.invoke(app, args))
        assert "--params pattern 'encoder.*' matches no parameter" in err
        assert "1.weight, 1.bias, 3.weight, 3.bias" in err
    assert not (tmp_path / "x.h5").exists()


def test_scan_with_params_moves_only_those_parameters(frozen, tmp_path):
    from landscape_cli.losses import LOSSES

    ckpt, opts, model, x, y = frozen
    out = tmp_path / "s.h5"
    args = ["scan", str(ckpt), *opts, "--samples", "64", "--points", "3", "--out", str(out)]
    _run([*args, "--params", "3.weight", "--norm", "layer", "--name", "sub"])
    scan = read_scan(out, "sub", directions=True)
    assert list(scan["directions"]["x"]) == ["3.weight"]
    assert scan["attrs"]["params"] == ["3.weight"]
    assert scan["attrs"]["skipped_params"] == ["1.weight", "1.bias", "3.bias"]
    assert scan["attrs"]["skipped_reasons"] == ["not selected"] * 3
    d = torch.from_numpy(scan["directions"]["x"]["3.weight"]).double()
    moved = {k: p.detach().clone() for k, p in model.named_parameters()}
    moved["3.weight"] = moved["3.weight"] + d  # the point x = 1
    want = LOSSES["ce"](functional_call(model, moved, (x,)), y).item()
    assert scan["loss"][2] == pytest.approx(want, rel=1e-6)
    # the default moves the trainable ones (the frozen layer stays and is noted) ...
    res = _run([*args, "--name", "default"])
    assert "note: 2 frozen parameters" in res.stderr
    assert list(read_scan(out, "default", directions=True)["directions"]["x"]) == list(TRAINABLE)
    # ... and --include-frozen moves every parameter; a resumed scan keeps its selection
    _run([*args, "--name", "all", "--include-frozen"])
    assert list(read_scan(out, "all", directions=True)["directions"]["x"]) == [*FROZEN, *TRAINABLE]
    err = one_error_line(runner.invoke(app, [*args, "--name", "all"]))
    assert "other options" in err and "include_frozen" in err


def test_curvature_ggn_end_to_end(frozen, tmp_path):
    ckpt, opts, model, x, y = frozen
    out = tmp_path / "g.h5"
    args = ["hessian", str(ckpt), *opts, *FAST, "--dtype", "float64", "--tol", "1e-10"]
    args += ["--top-k", "3", "--curvature", "ggn", "--out", str(out), "--label", "net"]
    got = json.loads(_run([*args, "--json"]).stdout)
    assert got["curvature"] == "ggn"
    np.testing.assert_allclose(
        got["eigenvalues"], _top(_dense(model, x, y, TRAINABLE, "ggn")), rtol=1e-6
    )
    with h5py.File(out) as f:
        assert f["hessian"].attrs["curvature"] == "ggn"
        assert json.loads(f["hessian"].attrs["settings"])["curvature"] == "ggn"
    assert "GGN of frozen.pt" in _run(args).stdout.replace("\n", " ")
    # a Hessian of the same checkpoint beside it, in Fig. 5: the legend tells them apart
    hess = tmp_path / "h.h5"
    _run(["hessian", str(ckpt), *opts, *FAST, "--top-k", "3", "--trace-probes", "10",
          "--density-probes", "2", "--lanczos-steps", "8", "--out", str(hess)])  # fmt: skip
    _run([*args, "--trace-probes", "10", "--density-probes", "2", "--lanczos-steps", "8",
          "--overwrite"])  # fmt: skip
    from landscape_cli.plotting import draw_spectra

    fig = draw_spectra([read_hessian(hess), read_hessian(out)], ["net", "net"])
    legend = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert legend == ["net (Hessian)", "net (GGN)"]


def test_refusals_are_one_line(frozen, tmp_path):
    ckpt, opts, *_ = frozen
    base = ["hessian", str(ckpt), *opts, "--samples", "32", "--out", str(tmp_path / "r.h5")]
    err = one_error_line(runner.invoke(app, [*base, "--curvature", "fisher", "--bn-mode", "train"]))
    assert "--curvature fisher needs per-sample gradients" in err and "--bn-mode eval" in err
    err = one_error_line(runner.invoke(app, [*base, "--curvature", "newton"]))
    assert "--curvature must be one of hessian, ggn, fisher" in err
    err = one_error_line(runner.invoke(app, [*base, "--engine", "pyhessian", "--curvature", "ggn"]))
    assert "--engine pyhessian computes the Hessian only" in err
    args = [*base, "--engine", "pyhessian", "--include-frozen"]
    assert "--params and --include-frozen need" in one_error_line(runner.invoke(app, args))
    assert not (tmp_path / "r.h5").exists()


def test_audit_curvature_and_selection(frozen, tmp_path):
    """The audit's Hessian measures follow --curvature and --params; a /hessian is reused only
    when it was computed with the same ones."""
    ckpt, opts, model, x, y = frozen
    audit = ["audit", str(ckpt), *opts, "--samples", "64", "--batch-size", "64", "--top-k", "1"]
    audit += ["--trace-probes", "4", "--density-probes", "0", "--json", "--tol", "1e-6"]
    hess = ["hessian", str(ckpt), *opts, "--samples", "64", "--batch-size", "64", "--top-k", "1"]
    hess += ["--trace-probes", "4", "--density-probes", "0", "--tol", "1e-6"]
    _run([*hess, "--curvature", "ggn", "--include-frozen"])
    res = _run([*audit, "--curvature", "ggn"])  # not the same parameters: computed again
    row = json.loads(res.stdout)["checkpoints"][0]
    assert row["hessian_source"] == "audit/hessian" and "note: frozen.pt: 2 frozen" in res.stderr
    assert json.loads(res.stdout)["curvature"] == "ggn"
    stored = read_audit(ckpt.with_suffix(".h5"))
    assert stored.hessian.report.curvature == "ggn" and stored.hessian.report.num_params == 130
    assert json.loads(stored["settings"])["curvature"] == "ggn"
    exact = _top(_dense(model.float().double(), x, y, TRAINABLE, "ggn"), 1)[0]
    assert row["lambda_max"] == pytest.approx(exact, rel=1e-4)
    res = _run([*audit, "--curvature", "ggn", "--include-frozen", "--overwrite"])
    assert json.loads(res.stdout)["checkpoints"][0]["hessian_source"] == "hessian"  # reused
    res = _run([*audit, "--include-frozen", "--overwrite"])  # the Hessian: not the stored GGN
    assert json.loads(res.stdout)["checkpoints"][0]["hessian_source"] == "audit/hessian"
