"""Exact float32 arithmetic (issue 26.2): TF32 off around every measuring job, the caller's
settings restored afterwards (also after an error), and the setting recorded in the results file
and the JSON. On the CPU TF32 changes no number, so these tests check the switches themselves."""

from __future__ import annotations

import json

import h5py
import pytest
import torch
from cases import runner

from landscape_cli import precision
from landscape_cli.commands import app
from landscape_cli.hessian import HessianSettings
from landscape_cli.jobs import Source, audit_job, hessian_job, scan_job
from landscape_cli.precision import float32_precision, snapshot
from landscape_cli.results import read_audit, read_hessian, read_scan
from landscape_cli.training import TrainConfig

NEW_API = hasattr(torch._C, "_get_fp32_precision_getter")
LEAVES = precision._LEAVES


@pytest.fixture(autouse=True)
def own_flags():
    """Put the process's float32 settings back after each test, by torch's own switches."""
    leaves = (
        {pair: torch._C._get_fp32_precision_getter(*pair) for pair in LEAVES} if NEW_API else {}
    )
    cudnn, matmul = torch.backends.cudnn.allow_tf32, torch.get_float32_matmul_precision()
    yield
    torch.backends.cudnn.allow_tf32 = cudnn
    torch.set_float32_matmul_precision(matmul)
    for pair, value in leaves.items():
        torch._C._set_fp32_precision_setter(*pair, value)


def _set_leaf(backend: str, op: str, value: str) -> None:
    torch._C._set_fp32_precision_setter(backend, op, value)


#: How a user may have set up the process before calling landscape (legacy and new APIs, and
#: the mixes after which PyTorch refuses to read the legacy switches).
SETUPS = {
    "defaults": lambda: None,
    "legacy TF32 on": lambda: (
        setattr(torch.backends.cuda.matmul, "allow_tf32", True),
        setattr(torch.backends.cudnn, "allow_tf32", True),
    ),
    "legacy TF32 off": lambda: (
        setattr(torch.backends.cudnn, "allow_tf32", False),
        torch.set_float32_matmul_precision("highest"),
    ),
    "matmul precision medium": lambda: torch.set_float32_matmul_precision("medium"),
    "matmul precision high": lambda: torch.set_float32_matmul_precision("high"),
}
if NEW_API:
    SETUPS |= {
        "new API: generic tf32": lambda: _set_leaf("generic", "all", "tf32"),
        "new API: cuda matmul tf32 (legacy unreadable)": lambda: _set_leaf(
            "cuda", "matmul", "tf32"
        ),
        "new API: cudnn conv ieee (legacy unreadable)": lambda: _set_leaf("cuda", "conv", "ieee"),
        "new API: mkldnn bf16": lambda: _set_leaf("mkldnn", "matmul", "bf16"),
    }


def _resolved(backend: str, op: str) -> str:
    return precision._resolved(precision._leaves(), backend, op)


def assert_exact() -> None:
    assert torch.backends.cuda.matmul.allow_tf32 is False
    assert torch.backends.cudnn.allow_tf32 is False
    assert torch.get_float32_matmul_precision() == "highest"
    if NEW_API:
        for backend, op in [("cuda", "matmul"), ("cuda", "conv"), ("cuda", "rnn")]:
            assert _resolved(backend, op) == "ieee", (backend, op)
        for op in ("matmul", "conv", "rnn"):
            assert _resolved("mkldnn", op) == "ieee", op


def assert_tf32() -> None:
    assert torch.backends.cuda.matmul.allow_tf32 is True
    assert torch.backends.cudnn.allow_tf32 is True
    assert torch.get_float32_matmul_precision() == "high"
    if NEW_API:
        for backend, op in [("cuda", "matmul"), ("cuda", "conv"), ("cuda", "rnn")]:
            assert _resolved(backend, op) == "tf32", (backend, op)
        assert _resolved("mkldnn", "matmul") == "ieee"  # the CPU stays IEEE


@pytest.mark.parametrize("setup", list(SETUPS))
@pytest.mark.parametrize("allow_tf32", [False, True])
def test_flags_set_inside_and_restored_after(setup, allow_tf32) -> None:
    SETUPS[setup]()
    before = snapshot()
    with float32_precision(allow_tf32) as name:
        assert name == ("tf32" if allow_tf32 else "ieee")
        (assert_tf32 if allow_tf32 else assert_exact)()
    assert snapshot() == before
    with pytest.raises(KeyError), float32_precision(allow_tf32):
        (assert_tf32 if allow_tf32 else assert_exact)()
        raise KeyError("a failure inside the block")
    assert snapshot() == before


def test_nested_blocks_restore_the_outer_setting() -> None:
    before = snapshot()
    with float32_precision(True):
        with float32_precision(False):
            assert_exact()
        assert_tf32()
    assert snapshot() == before


def test_snapshot_sees_a_changed_setting() -> None:
    before = snapshot()
    torch.backends.cudnn.allow_tf32 = not torch.backends.cudnn.allow_tf32
    assert snapshot() != before


# -- around the jobs -----------------------------------------------------------------------------


#: The checkpoint of the ``ckpt`` fixture (tests/conftest.py).
CKPT = TrainConfig(model="mlp", model_options={"hidden": [12]}, epochs=1)


SMALL = HessianSettings(top_k=1, trace_probes=0, density_probes=0, max_steps=10)
SOURCE = Source(samples=64, batch_size=32)


def _run_hessian(ckpt, out, allow_tf32=False):
    return hessian_job(ckpt, SMALL, source=SOURCE, out=out, allow_tf32=allow_tf32)


def _run_scan(ckpt, out, allow_tf32=False):
    from landscape_cli.jobs import ScanOptions

    opts = ScanOptions(points=3)
    return scan_job(ckpt, opts, source=SOURCE, out=out, allow_tf32=allow_tf32)


def _run_audit(ckpt, out, allow_tf32=False):
    from landscape_cli.audit import AuditSettings

    s = AuditSettings(top_k=1, trace_probes=2, density_probes=0, max_steps=10)
    return audit_job([ckpt], s, source=SOURCE, allow_tf32=allow_tf32)


#: job -> (runner, the library function the job calls while computing, to watch the flags)
JOBS = {
    "hessian": (_run_hessian, "landscape_cli.hessian", "analyze"),
    "scan": (_run_scan, "landscape_cli.jobs.scan_journal", "execute"),
    "audit": (_run_audit, "landscape_cli.audit", "measure"),
}


@pytest.mark.parametrize("job", list(JOBS))
@pytest.mark.parametrize("allow_tf32", [False, True])
@pytest.mark.parametrize("fails", [False, True])
def test_jobs_compute_under_the_setting_and_restore_the_callers(
    job, allow_tf32, fails, ckpt, tmp_path, monkeypatch
) -> None:
    import importlib

    run, module, name = JOBS[job]
    mod = importlib.import_module(module)
    real = getattr(mod, name)
    seen = []

    def watched(*args, **kwargs):
        seen.append(snapshot())
        (assert_tf32 if allow_tf32 else assert_exact)()
        if fails:
            raise RuntimeError("failed while computing")
        return real(*args, **kwargs)

    monkeypatch.setattr(mod, name, watched)
    # The caller's own choice, opposite to the job's, so that a leak would show.
    torch.backends.cudnn.allow_tf32 = not allow_tf32
    torch.set_float32_matmul_precision("highest" if allow_tf32 else "high")
    before = snapshot()
    work = tmp_path / "ck.pt"
    work.write_bytes(ckpt.read_bytes())
    if fails:
        with pytest.raises(RuntimeError, match="failed while computing"):
            run(work, tmp_path / "ck.h5", allow_tf32)
    else:
        run(work, tmp_path / "ck.h5", allow_tf32)
    assert seen, "the job never computed"
    assert snapshot() == before


@pytest.mark.parametrize("allow_tf32", [False, True])
def test_setting_recorded_in_every_group_and_read_back(allow_tf32, ckpt, tmp_path) -> None:
    work = tmp_path / "ck.pt"
    work.write_bytes(ckpt.read_bytes())
    out = tmp_path / "ck.h5"
    name = "tf32" if allow_tf32 else "ieee"
    _run_hessian(work, out, allow_tf32)
    h = read_hessian(out)
    assert h["attrs"]["float32_precision"] == name
    settings = json.loads(h["attrs"]["settings"])
    assert settings.get("allow_tf32", False) is allow_tf32  # absent unless opted in
    _run_scan(work, out, allow_tf32)
    assert read_scan(out, "1d-random")["attrs"]["float32_precision"] == name
    _run_audit(work, out, allow_tf32)
    assert read_audit(out)["float32_precision"] == name


def test_an_exact_run_never_takes_a_tf32_result_as_its_own(ckpt, tmp_path) -> None:
    from landscape_cli.errors import LandscapeError

    work = tmp_path / "ck.pt"
    work.write_bytes(ckpt.read_bytes())
    out = tmp_path / "ck.h5"
    _run_hessian(work, out, allow_tf32=True)
    with pytest.raises(LandscapeError, match="allow_tf32"):
        _run_hessian(work, out)  # other options: refused without overwrite
    _run_scan(work, out, allow_tf32=True)
    with pytest.raises(LandscapeError, match="float32_precision"):
        _run_scan(work, out)  # not resumed with other arithmetic
    rows, _ = _run_audit(work, out)  # an exact audit computes its own Hessian measures
    assert rows[0].hessian_source == "audit/hessian"


def test_a_tf32_audit_may_reuse_an_exact_hessian(ckpt, tmp_path) -> None:
    work = tmp_path / "ck.pt"
    work.write_bytes(ckpt.read_bytes())
    from landscape_cli.audit import AuditSettings

    s = AuditSettings(top_k=1, trace_probes=2, density_probes=0, max_steps=10)
    hessian_job(
        work,
        HessianSettings(top_k=1, density_probes=0, max_steps=10, trace_probes=2),
        source=SOURCE,
    )
    rows, _ = audit_job([work], s, source=SOURCE, allow_tf32=True)
    assert rows[0].hessian_source == "hessian"


def test_a_scan_from_before_the_attribute_resumes(ckpt, tmp_path) -> None:
    work = tmp_path / "ck.pt"
    work.write_bytes(ckpt.read_bytes())
    out = tmp_path / "ck.h5"
    _run_scan(work, out)
    with h5py.File(out, "r+") as f:  # as a file written before float32_precision existed
        del f["scan/1d-random"].attrs["float32_precision"]
    result, _ = _run_scan(work, out)
    assert result.loss.shape == (3,)


def test_cli_allow_tf32_in_json_and_table(ckpt, tmp_path) -> None:
    work = tmp_path / "ck.pt"
    work.write_bytes(ckpt.read_bytes())
    base = ["--samples", "64", "--batch-size", "32", "--device", "cpu"]
    fast = ["--top-k", "1", "--trace-probes", "0", "--density-probes", "0", "--max-steps", "10"]
    res = runner.invoke(
        app,
        [
            "hessian",
            str(work),
            *base,
            *fast,
            "--allow-tf32",
            "--json",
            "--out",
            str(tmp_path / "a.h5"),
        ],
    )
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["float32_precision"] == "tf32"
    res = runner.invoke(
        app, ["hessian", str(work), *base, *fast, "--json", "--out", str(tmp_path / "b.h5")]
    )
    assert json.loads(res.stdout)["float32_precision"] == "ieee"
    res = runner.invoke(
        app, ["hessian", str(work), *base, *fast, "--allow-tf32", "--out", str(tmp_path / "c.h5")]
    )
    assert res.exit_code == 0, res.output
    flat = " ".join(res.stdout.replace("│", " ").split())  # the table wraps long cells
    assert "TF32 allowed" in flat and "without effect here (the CPU, which stays IEEE)" in flat
    res = runner.invoke(
        app,
        [
            "scan",
            str(work),
            *base,
            "--points",
            "3",
            "--allow-tf32",
            "--json",
            "--out",
            str(tmp_path / "s.h5"),
        ],
    )
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["float32_precision"] == "tf32"


def test_the_tf32_note_says_the_certificates_are_approximate_on_a_gpu() -> None:
    from landscape_cli.commands._common import tf32_note

    assert tf32_note(False, "cuda:0") is None
    assert "approximate" in tf32_note(True, "cuda:0", "float32")
    assert "without effect" in tf32_note(True, "cuda:0", "float64")
    assert "without effect" in tf32_note(True, "cpu", "float32")
