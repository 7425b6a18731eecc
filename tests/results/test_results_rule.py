"""A results file describes one checkpoint and one set of settings per group (issue 11.2)."""

from __future__ import annotations

import json
from dataclasses import replace

import h5py
import pytest
from cases import one_error_line, runner

from landscape_cli.checkpoints import sha256
from landscape_cli.commands import app
from landscape_cli.results import list_groups, read_root
from landscape_cli.training import TrainConfig

FAST = ["--samples", "48", "--top-k", "1", "--trace-probes", "0", "--density-probes", "0"]


def _ok(result):
    assert result.exit_code == 0, result.output
    return result


@pytest.fixture(scope="module")
def two(tmp_path_factory, trained_checkpoint):
    """Two different checkpoints whose default results files are the same tv.h5."""
    folder = tmp_path_factory.mktemp("rule")
    config = TrainConfig(model="mlp", model_options={"hidden": [8]}, epochs=1)
    a = trained_checkpoint(config, into=folder, name="a.pt")
    b = trained_checkpoint(replace(config, seed=1), into=folder, name="b.pt")
    return a, b


def test_each_group_records_checkpoint_samples_and_settings(two, tmp_path):
    a, _ = two
    out = tmp_path / "r.h5"
    _ok(runner.invoke(app, ["hessian", str(a), *FAST, "--out", str(out)]))
    args = ["scan", str(a), "--points", "3", "--samples", "16", "--out", str(out)]
    _ok(runner.invoke(app, args))
    with h5py.File(out) as f:
        h = f["hessian"].attrs
        assert h["checkpoint_sha256"] == sha256(a)
        assert len(h["samples_sha256"]) == 64
        settings = json.loads(h["settings"])
        assert settings["top_k"] == 1 and settings["loss"] == "ce" and settings["samples"] == 48
        assert f["scan/1d-random"].attrs["checkpoint_sha256"] == sha256(a)
        assert len(f["scan/1d-random"].attrs["samples_sha256"]) == 64


def test_another_checkpoint_into_the_same_file_is_refused(two, tmp_path):
    a, b = two
    out = tmp_path / "tv.h5"
    _ok(runner.invoke(app, ["hessian", str(a), *FAST, "--out", str(out)]))
    before = out.read_bytes()
    err = one_error_line(runner.invoke(app, ["hessian", str(b), *FAST, "--out", str(out)]))
    assert "different checkpoint" in err and "--out" in err and "--overwrite" in err
    assert out.read_bytes() == before
    scan = ["scan", str(b), "--points", "3", "--samples", "16", "--out", str(out)]
    assert "--overwrite" in one_error_line(runner.invoke(app, scan))
    assert out.read_bytes() == before
    # --overwrite drops the other checkpoint's groups
    _ok(runner.invoke(app, [*scan, "--overwrite"]))
    assert list_groups(out) == ["scan/1d-random"]
    assert read_root(out)["checkpoint_sha256"] == sha256(b)


def test_audit_refuses_a_file_of_another_checkpoint(two, tmp_path):
    a, b = two
    pt, st = tmp_path / "tv.pt", tmp_path / "tv.pth"
    pt.write_bytes(a.read_bytes())
    st.write_bytes(b.read_bytes())  # another checkpoint with the same default results file
    _ok(runner.invoke(app, ["hessian", str(pt), *FAST]))
    audit = ["audit", str(st), "--samples", "48", "--top-k", "1", "--trace-probes", "4"]
    audit += ["--density-probes", "0"]
    err = one_error_line(runner.invoke(app, audit))
    assert "different checkpoint" in err and "--overwrite" in err
    assert list_groups(tmp_path / "tv.h5") == ["hessian"]


def test_same_options_rule_for_hessian(two, tmp_path):
    a, _ = two
    out = tmp_path / "r.h5"
    base = ["hessian", str(a), *FAST, "--out", str(out)]
    _ok(runner.invoke(app, base))
    _ok(runner.invoke(app, base))  # same options: recomputed in place
    before = out.read_bytes()
    err = one_error_line(runner.invoke(app, [*base, "--top-k", "2"]))
    assert "other options" in err and "top_k 1 vs 2" in err and "--overwrite" in err
    assert out.read_bytes() == before
    _ok(runner.invoke(app, [*base, "--top-k", "2", "--overwrite"]))
    with h5py.File(out) as f:
        assert len(f["hessian/eigenvalues"]) == 2


def test_same_options_rule_for_audit(two, tmp_path):
    a, _ = two
    ck = tmp_path / "m.pt"
    ck.write_bytes(a.read_bytes())
    base = ["audit", str(ck), "--samples", "48", "--top-k", "1", "--trace-probes", "4"]
    base += ["--density-probes", "0"]
    _ok(runner.invoke(app, base))
    err = one_error_line(runner.invoke(app, [*base, "--epsilon", "0.1"]))
    assert "/audit" in err and "epsilon" in err and "--overwrite" in err
    _ok(runner.invoke(app, [*base, "--epsilon", "0.1", "--overwrite"]))


def test_one_settings_comparison_for_groups_and_scans():
    """``settings_mismatch`` is the rule of /hessian, /audit and a scan's identity alike."""
    from landscape_cli.results import settings_mismatch

    stored = {"tol": 1e-4, "max_steps": 100, "loss": "ce", "params": ["fc.*"], "flag": True}
    assert settings_mismatch(stored, {**stored, "max_steps": 100.0}) == []  # numbers as floats
    assert settings_mismatch(stored, {**stored, "flag": 1}) == []  # True == 1, as ever
    assert settings_mismatch(stored, {**stored, "tol": 1e-3, "loss": "mse", "seed": 0}) == [
        "loss 'ce' vs 'mse'",
        "seed None vs 0",
        "tol 0.0001 vs 0.001",
    ]  # every key of either, sorted
    assert settings_mismatch({}, {"tol": 1.0}) == [] and settings_mismatch(None, {"a": 1}) == []
    # a scan's identity: its keys in their order; one recorded only by later versions matches
    # either value when the stored scan lacks it
    keys = ("loss", "float32_precision", "tol")
    wanted = {**stored, "tol": 2, "float32_precision": "tf32"}
    assert settings_mismatch(stored, wanted, keys=keys, later={"float32_precision"}) == [
        "tol 0.0001 vs 2"
    ]
    assert settings_mismatch(stored, wanted, keys=keys) == [
        "float32_precision None vs 'tf32'",
        "tol 0.0001 vs 2",
    ]
