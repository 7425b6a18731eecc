"""Sampling uncertainty (issue 21.5): the top-k and the trace on K disjoint sample sets, their
spread in the file, the table and the JSON, and in the audit's ties."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from cases import one_error_line, runner

from landscape_cli.batches import Batch, samples_sha256, select_indices, select_sets
from landscape_cli.commands import app
from landscape_cli.errors import LandscapeError
from landscape_cli.training import TrainConfig


def _labelled(counts: list[int]) -> torch.utils.data.TensorDataset:
    y = torch.cat([torch.full((n,), c) for c, n in enumerate(counts)])
    return torch.utils.data.TensorDataset(torch.randn(len(y), 2), y)


def test_sets_are_disjoint_stratified_and_the_first_is_the_runs_own():
    ds = _labelled([50, 30, 20])
    sets = select_sets(ds, 10, 4, seed=3)
    assert len(sets) == 4 and all(len(s) == 10 for s in sets)
    assert len(set(torch.cat(sets).tolist())) == 40  # disjoint
    for s in sets:  # each class-stratified as select_indices makes one (5/3/2 of 10)
        assert torch.bincount(ds.tensors[1][s], minlength=3).tolist() == [5, 3, 2]
    assert torch.equal(sets[0], select_indices(ds, 10, seed=3))
    # set k does not depend on how many sets are asked for
    assert all(
        torch.equal(a, b) for a, b in zip(select_sets(ds, 10, 2, seed=3), sets[:2], strict=True)
    )
    reg = torch.utils.data.TensorDataset(torch.randn(30, 2), torch.randn(30, 1))
    three = select_sets(reg, 10, 3, seed=0)
    assert len(set(torch.cat(three).tolist())) == 30
    assert torch.equal(three[0], select_indices(reg, 10, seed=0))


def test_sets_that_do_not_fit_are_refused():
    ds = _labelled([50, 30, 20])
    with pytest.raises(LandscapeError, match="more than the split's 100"):
        select_sets(ds, 30, 4)
    with pytest.raises(LandscapeError, match="class 0 has 97 samples"):
        select_sets(_labelled([97, 3]), 50, 2)  # the split holds 2 × 50, class 0 not 2 × 49
    with pytest.raises(LandscapeError, match="`sample_sets=2`"):
        select_sets(ds, 0, 2)  # "all samples" twice


@pytest.fixture(scope="module")
def mlp(trained_checkpoint, tmp_path_factory):
    config = TrainConfig(model="mlp", model_options={"hidden": [8]}, epochs=2)
    return trained_checkpoint(config, into=tmp_path_factory.mktemp("sets"), name="mlp.pt")


FAST = ["--samples", "96", "--batch-size", "48", "--top-k", "2", "--trace-probes", "20"]
FAST += ["--trace-rtol", "0", "--density-probes", "0"]


def test_each_sets_values_are_its_own_run(mlp, tmp_path):
    """Set 0 is the run itself; set k's λ and trace equal a separate run on set k's samples."""
    from landscape_cli.data import load_dataset
    from landscape_cli.hessian import HessianOperator, HessianSettings, analyze
    from landscape_cli.results import read_hessian
    from landscape_cli.workload import Source, load_workload

    out = tmp_path / "s.h5"
    result = runner.invoke(app, ["hessian", str(mlp), *FAST, "--sample-sets", "3", "--json",
                                 "--out", str(out)])  # fmt: skip
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    sets = data["sample_sets"]
    assert sets["sets"] == 3 and len(set(sets["samples_sha256"])) == 3
    np.testing.assert_array_equal(sets["eigenvalues"][0], data["eigenvalues"])
    assert sets["trace"][0] == data["trace"]
    stored = read_hessian(out)
    np.testing.assert_array_equal(stored.report.sample_sets.lambda_max, sets["lambda_max"])
    assert stored["sample_sets"]["lambda_max_std"] == pytest.approx(
        np.std(sets["lambda_max"], ddof=1)
    )
    # set 2 measured alone: the same samples (hash), the same numbers
    work = load_workload(mlp, Source(samples=96, batch_size=48))
    data_set = load_dataset("digits", "train", augment=False).dataset
    idx = select_sets(data_set, 96, 3, seed=0)[2]
    x = torch.stack([data_set[i][0] for i in idx.tolist()])
    y = torch.as_tensor([data_set[i][1] for i in idx.tolist()])
    batches = [Batch(x[:48], y[:48]), Batch(x[48:], y[48:])]
    assert samples_sha256(batches) == sets["samples_sha256"][2]
    op = HessianOperator(work.model, batches, loss="ce")
    alone = analyze(op, HessianSettings(top_k=2, trace_probes=20, trace_rtol=0, density_probes=0))
    np.testing.assert_allclose(sets["eigenvalues"][2], alone.top.eigenvalues, rtol=1e-12)
    assert sets["trace"][2] == pytest.approx(alone.trace.estimate, rel=1e-12)
    table = runner.invoke(app, ["hessian", str(mlp), *FAST, "--sample-sets", "3", "--out",
                                str(out)])  # fmt: skip
    assert "λ1 over 3 sample sets" in table.stdout and "(spread)" in table.stdout


def test_refusals(mlp, tmp_path):
    out = ["--out", str(tmp_path / "r.h5")]
    line = one_error_line(runner.invoke(app, ["hessian", str(mlp), *FAST, "--samples", "1000",
                                              "--sample-sets", "2", *out]))  # fmt: skip
    assert "--sample-sets" in line and "--samples" in line
    pyhessian = ["--samples", "64", "--engine", "pyhessian", "--sample-sets", "2", *out]
    line = one_error_line(runner.invoke(app, ["hessian", str(mlp), *pyhessian]))
    assert "--sample-sets" in line
    line = one_error_line(runner.invoke(app, ["hessian", str(mlp), *FAST, "--sample-sets", "0",
                                              *out]))  # fmt: skip
    assert "--sample-sets" in line


def test_the_audit_ties_within_the_sample_spread():
    from dataclasses import replace

    from landscape_cli.audit import Measures, disagreements, ranks, tied

    def measures(lam, trace, ci95, s1):
        return Measures(
            temperature=1.0, lambda_max=lam, lambda_max_residual=1e-7, top_eigenvalues=[lam],
            trace=trace, trace_stderr=0.05, trace_ci95=ci95, train_loss=0.1, train_acc=0.9,
            param_norm=3.0, sharpness_1d=s1, sharpness_1d_spread=0.0, adaptive_sharpness=0.1,
            adaptive_sharpness_spread=0.0, hvp_count=0, hessian_reused=False,
        )  # fmt: skip

    a = measures(1.00, 10.0, [9.9, 10.1], 0.1)
    b = measures(1.03, 9.5, [9.4, 9.6], 0.2)
    assert not tied(a, b, "lambda_max")
    assert disagreements([a, b], ["a", "b"])  # λmax says a, the trace says b: beyond their noise
    a2, b2 = (replace(m, lambda_max_spread=0.02, trace_spread=0.3, sample_sets=4) for m in (a, b))
    assert tied(a2, b2, "lambda_max") and tied(a2, b2, "trace")
    assert not disagreements([a2, b2], ["a", "b"])
    assert ranks([a2, b2], "lambda_max")[2] == [True, True]


def test_the_audit_measures_the_spread_and_reuses_a_hessian_with_those_sets(mlp, tmp_path):
    import shutil

    ck = tmp_path / "m.pt"
    shutil.copyfile(mlp, ck)
    fast = ["--samples", "64", "--batch-size", "64", "--top-k", "2", "--trace-probes", "10"]
    fast += ["--density-probes", "0"]
    made = runner.invoke(app, ["hessian", str(ck), *fast, "--sample-sets", "2", "--trace-rtol",
                               "0.02", "--max-steps", "100"])  # fmt: skip
    assert made.exit_code == 0, made.output
    audit = ["audit", str(ck), *fast, "--json"]
    reused = json.loads(runner.invoke(app, [*audit, "--sample-sets", "2"]).stdout)
    row = reused["checkpoints"][0]
    assert row["hessian_source"] == "hessian" and row["sample_sets"] == 2
    assert row["lambda_max_spread"] > 0 and row["trace_spread"] > 0
    more = runner.invoke(app, [*audit, "--sample-sets", "3", "--overwrite"])
    assert more.exit_code == 0, more.output
    row = json.loads(more.stdout)["checkpoints"][0]
    assert row["hessian_source"] == "audit/hessian" and row["sample_sets"] == 3
