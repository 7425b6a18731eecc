"""The audit's statistics (issue 11.4) and its reuse of /hessian (issue 11.2, 12.4)."""

from __future__ import annotations

import json
from dataclasses import replace

import h5py
import numpy as np
import pytest
import torch
from cases import runner

from landscape_cli.audit import density_shape, disagreements, ranks
from landscape_cli.commands import app
from landscape_cli.results import read_audit, read_hessian
from landscape_cli.training import TrainConfig


def _ok(result):
    assert result.exit_code == 0, result.output
    return result


def test_negative_mass_is_relative_to_lambda_max():
    """Near-zero Ritz values of either sign are the bulk, not negative curvature: only weight
    below −τ·λmax counts (the old definition, every θ < 0, gave 0.5 + 0.1 = 0.6 here)."""
    nodes = np.array([[-1e-4, 1e-4, -0.5, 5.0], [-2e-3, 2e-3, -0.01, 5.0]])
    weights = np.array([[0.5, 0.3, 0.1, 0.1], [0.4, 0.4, 0.1, 0.1]])
    shape = density_shape(nodes, weights, lambda_max=5.0)
    assert shape.negative_mass == pytest.approx((0.1 + 0.0) / 2)
    assert shape.tau == 1e-2 and shape.scale == 5.0
    # τ sets the threshold: at τ = 1e-3 the −0.01 node (below −0.005) counts too
    assert density_shape(nodes, weights, 5.0, tau=1e-3).negative_mass == pytest.approx(0.1)


def _row(lam, res, tr, se, s1, s1u, ad, adu):
    from landscape_cli.audit import Measures

    return Measures(
        temperature=1.0, lambda_max=lam, lambda_max_residual=res, top_eigenvalues=[lam],
        trace=tr, trace_stderr=se, trace_ci95=None, train_loss=0.1, train_acc=0.9,
        param_norm=3.0, sharpness_1d=s1, sharpness_1d_spread=s1u, adaptive_sharpness=ad,
        adaptive_sharpness_spread=adu, hvp_count=0, hessian_reused=False,
    )  # fmt: skip


def test_ranks_tie_within_uncertainty_and_report_disagreement():
    # The case: λmax 5.036 vs 5.118 (1.6 % apart), both sharpness measures the other way.
    dual = _row(5.036, 1e-4, 60.0, 1.0, 0.30, 0.01, 0.20, 0.01)
    warm = _row(5.118, 1e-4, 61.0, 1.0, 0.20, 0.01, 0.10, 0.01)
    adam = _row(9.0, 1e-4, 90.0, 1.0, 0.50, 0.01, 0.40, 0.01)
    rows = [adam, dual, warm]
    order, rank, tied = ranks(rows, "lambda_max")
    assert order == [1, 2, 0] and rank == [3, 1, 2] and tied == [False] * 3
    # the traces differ by less than their CIs (1.96·1 + 1.96·1): a tie
    order, rank, tied = ranks(rows, "trace")
    assert order == [1, 2, 0] and rank == [3, 1, 1] and tied == [False, True, True]
    # a wider residual makes the λmax gap a tie too
    loose = [adam, replace(dual, lambda_max_residual=0.05), replace(warm, lambda_max_residual=0.05)]
    assert ranks(loose, "lambda_max")[1] == [3, 1, 1]
    notes = disagreements(rows, ["adam", "dual", "warm"])
    assert notes == [
        "lambda_max put dual flatter than warm; sharpness_1d, adaptive_sharpness the other way"
    ]
    assert disagreements(loose, ["adam", "dual", "warm"]) == []


def _measures(lam, s1, ad, loss=0.1, temperature=1.0, **kw):
    from landscape_cli.audit import Measures

    return Measures(
        temperature=temperature, lambda_max=lam, lambda_max_residual=1e-3,
        top_eigenvalues=[lam], trace=10 * lam, trace_stderr=0.1, trace_ci95=None,
        train_loss=loss, train_acc=0.9, param_norm=3.0, sharpness_1d=s1,
        sharpness_1d_spread=0.01, adaptive_sharpness=ad, adaptive_sharpness_spread=0.01,
        hvp_count=7, hessian_reused=False, **kw,
    )  # fmt: skip


def test_summary_and_report_of_typed_rows(tmp_path):
    """The --json summary and the markdown report of typed rows: the row as printed and as
    stored, the ranking, and a λmax order that loss matching reverses beyond the residuals."""
    from landscape_cli.audit import AuditRow
    from landscape_cli.jobs.audit_report import summary, write_report

    a = AuditRow(
        "/x/a.pt", "/x/a.h5", _measures(2.0, 0.2, 0.1, negative_mass=0.01, spectral_spread=1.0,
        tau=0.01), "hessian", matched=_measures(8.0, 0.2, 0.1, temperature=0.5),
    )  # fmt: skip
    b = AuditRow("/x/b.pt", "/x/b.h5", _measures(4.0, 0.3, 0.2), "audit/hessian")
    b = replace(b, matched=b.measures)
    plain = a.as_dict()
    assert list(plain)[:2] == ["checkpoint", "temperature"] and plain["negative_mass"] == 0.01
    assert list(plain)[-3:] == ["hessian_source", "results", "matched"]
    assert "negative_mass" not in b.as_dict() and b.as_dict()["matched"]["lambda_max"] == 4.0
    stored = a.stored()
    assert stored["matched_lambda_max"] == 8.0 and stored["matched_temperature"] == 0.5
    assert not {"checkpoint", "results", "matched"} & set(stored)
    payload = summary(
        [b, a], rank_by="lambda_max", samples=64, epsilon=0.05, rho=0.05, tau=0.01,
        match_loss=True,
    )  # fmt: skip
    assert payload["ranking"] == ["/x/a.pt", "/x/b.pt"] and payload["ranks"] == [1, 2]
    assert payload["checkpoints"] == [b.as_dict(), a.as_dict()]
    surv = payload["survives_match_loss"]
    assert surv["lambda_max"] == {"ratio_raw": 2.0, "ratio_matched": 2.0, "same_order": False}
    assert surv["sharpness_1d"]["same_order"] is True
    write_report(tmp_path / "r.md", payload, [b, a])
    text = (tmp_path / "r.md").read_text()
    assert text.index("`a.pt`") < text.index("`b.pt`") and "| lambda_max | 2× | 2× | no |" in text


def test_survival_reads_the_matched_measures_as_reported():
    """What survives loss matching is judged on the matched measures the --json row shows
    (``MATCHED_KEYS``): the matched trace's uncertainty is 1.96 standard errors, not the CI or
    the sample-set spread it is not reported with."""
    from landscape_cli.audit import AuditRow
    from landscape_cli.jobs.audit_report import survival

    def matched(trace):  # the trace ± 1.96·0.1 reported, a CI wide enough to tie them
        return replace(_measures(2.0, 0.2, 0.1), trace=trace, trace_ci95=[trace - 5, trace + 5],
                       trace_spread=5.0)  # fmt: skip

    a = AuditRow("a.pt", "a.h5", _measures(1.0, 0.2, 0.1), "hessian", matched=matched(30.0))
    b = AuditRow("b.pt", "b.h5", _measures(3.0, 0.2, 0.1), "hessian", matched=matched(20.0))
    assert survival([a, b])["trace"]["same_order"] is False  # 10 vs 30 raw, 30 vs 20 matched
    wide = [replace(r, matched=replace(r.matched, trace_stderr=3.0)) for r in (a, b)]
    assert survival(wide)["trace"]["same_order"] is True  # now within 1.96·(3 + 3)


#: The checkpoint of the ``ckpt`` fixture (tests/conftest.py).
CKPT = TrainConfig(model="mlp", model_options={"hidden": [10]}, epochs=2)


AUDIT = ["--samples", "64", "--top-k", "2", "--trace-probes", "6"]
AUDIT += ["--density-probes", "2", "--lanczos-steps", "6", "--json"]


def test_audit_reuses_a_compatible_hessian_and_keeps_it(ckpt, tmp_path):
    ck = tmp_path / "a.pt"
    ck.write_bytes(ckpt.read_bytes())
    hess = ["hessian", str(ck), "--samples", "64", "--top-k", "3", "--trace-probes", "8"]
    hess += ["--density-probes", "3", "--lanczos-steps", "8", "--eigenvectors", "--per-layer"]
    _ok(runner.invoke(app, hess))
    before = read_hessian(ck.with_suffix(".h5"))
    data = json.loads(_ok(runner.invoke(app, ["audit", str(ck), *AUDIT])).stdout)
    row = data["checkpoints"][0]
    assert row["hvp_count"] == 0 and row["hessian_source"] == "hessian"
    assert row["lambda_max"] == before["eigenvalues"][0]
    assert row["trace"] == before["trace"]
    after = read_hessian(ck.with_suffix(".h5"))  # untouched: eigenvectors, per-layer, density
    assert set(after["eigenvectors"]) == set(before["eigenvectors"]) and after["per_layer"]
    np.testing.assert_array_equal(after["density"]["nodes"], before["density"]["nodes"])
    with h5py.File(ck.with_suffix(".h5")) as f:
        assert "hessian" not in f["audit"]
    assert read_audit(ck.with_suffix(".h5"))["hessian_source"] == "hessian"


def test_audit_never_replaces_an_incompatible_hessian(ckpt, tmp_path):
    ck = tmp_path / "b.pt"
    ck.write_bytes(ckpt.read_bytes())
    # another seed (other samples and probes) and too few eigenvalues: not reusable
    hess = ["hessian", str(ck), "--samples", "64", "--top-k", "1", "--seed", "3"]
    hess += ["--trace-probes", "0", "--density-probes", "0", "--eigenvectors"]
    _ok(runner.invoke(app, hess))
    before = read_hessian(ck.with_suffix(".h5"))
    data = json.loads(_ok(runner.invoke(app, ["audit", str(ck), *AUDIT])).stdout)
    row = data["checkpoints"][0]
    assert row["hvp_count"] > 0 and row["hessian_source"] == "audit/hessian"
    after = read_hessian(ck.with_suffix(".h5"))
    np.testing.assert_array_equal(after["eigenvalues"], before["eigenvalues"])
    assert set(after["eigenvectors"]) == set(before["eigenvectors"])
    own = read_hessian(ck.with_suffix(".h5"), "audit/hessian")
    assert own["eigenvalues"][0] == row["lambda_max"] and len(own["eigenvalues"]) == 2


def test_match_loss_reuses_the_unmatched_measures_of_the_reference(ckpt, tmp_path):
    """The checkpoint whose loss is the target has temperature 1: its matched measures are its
    unmatched ones, not measured again (HVPs spent only on the other checkpoint)."""
    a, b = tmp_path / "a.pt", tmp_path / "b.pt"
    a.write_bytes(ckpt.read_bytes())
    raw = torch.load(ckpt, weights_only=True)
    sd = raw["state_dict"]
    last = [k for k in sd if k.endswith("weight")][-1]
    raw["state_dict"] = {k: (v * 0.5 if k == last else v) for k, v in sd.items()}
    torch.save(raw, b)  # less confident: a higher loss, the target
    plain = json.loads(_ok(runner.invoke(app, ["audit", str(a), str(b), *AUDIT])).stdout)
    args = ["audit", str(a), str(b), *AUDIT, "--match-loss", "--overwrite"]
    data = json.loads(_ok(runner.invoke(app, args)).stdout)
    ra, rb = data["checkpoints"]
    assert rb["matched"]["temperature"] == 1.0 and ra["matched"]["temperature"] > 1.0
    assert rb["matched"]["lambda_max"] == rb["lambda_max"]
    assert rb["hvp_count"] == plain["checkpoints"][1]["hvp_count"]  # nothing measured again
    assert ra["hvp_count"] > plain["checkpoints"][0]["hvp_count"]


def test_audit_table_prints_uncertainty_and_tau(ckpt, tmp_path):
    ck = tmp_path / "c.pt"
    ck.write_bytes(ckpt.read_bytes())
    args = ["audit", str(ck), *[a for a in AUDIT if a != "--json"], "--tau", "0.05"]
    out = _ok(runner.invoke(app, args)).stdout
    assert "±" in out and "τ = 0.05" in out
    assert read_audit(ck.with_suffix(".h5"))["tau"] == 0.05
