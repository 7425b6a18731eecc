"""Logs and the command line (issue 13.3): plain progress lines when stderr is not a terminal,
the audit's phases, help panels, and audit's --report, --tol and --max-steps."""

from __future__ import annotations

import io
import json
import re
import sys
from pathlib import Path

import pytest
from cases import one_error_line, runner

from landscape_cli.audit import AuditSettings
from landscape_cli.commands import _common as c
from landscape_cli.commands import app
from landscape_cli.results import group_settings
from landscape_cli.training import TrainConfig


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# ------------------------------------------------------------------------------------------------
# the plain progress lines


def test_plain_lines_per_phase_and_at_most_every_interval():
    clock, out = FakeClock(), io.StringIO()
    p = c.PlainProgress("hessian", "HVPs", stream=out, clock=clock)
    assert p._interval == c.PLAIN_INTERVAL == 10.0  # the default
    with p:
        p.phase("density", 400)
        assert out.getvalue().splitlines() == ["[hessian] density: 0/400 HVPs, 00:00 elapsed"]
        for _ in range(9):  # 9 s, 90 HVPs: nothing new
            clock.now += 1.0
            p.advance(10)
        assert len(out.getvalue().splitlines()) == 1
        clock.now += 1.0
        p.advance(10)  # 10 s since the last line: 100 of 400 in 10 s, so ~30 s left
        assert out.getvalue().splitlines()[-1] == (
            "[hessian] density: 100/400 HVPs, 00:10 elapsed, ~00:30 left"
        )
        clock.now += 9.5
        p.advance(10)
        assert len(out.getvalue().splitlines()) == 2  # only 9.5 s since the last line
        clock.now += 0.5
        p.advance(10, detail="W1 0.3 %")
        assert out.getvalue().splitlines()[-1] == (
            "[hessian] density: 120/400 HVPs, 00:20 elapsed, ~00:46 left · W1 0.3 %"
        )
        clock.now += 2.0
        p.phase("per-layer", 50)  # ends the density phase: its line, and none for the new one yet
        lines = out.getvalue().splitlines()
        assert lines[-1] == "[hessian] density: 120/400 HVPs, 00:22 elapsed, done · W1 0.3 %"
        clock.now += 3725.0  # an hour and more: h:mm:ss
        p.advance(25)
    lines = out.getvalue().splitlines()
    assert lines[-2] == "[hessian] per-layer: 25/50 HVPs, 1:02:05 elapsed, ~1:02:05 left"
    assert lines[-1] == "[hessian] per-layer: 25/50 HVPs, 1:02:05 elapsed, done"


def test_plain_progress_writes_a_line_per_phase_end_and_none_for_empty_phases():
    clock, out = FakeClock(), io.StringIO()
    p = c.PlainProgress("audit", stream=out, clock=clock)
    p.phase("a.pt: top-k Lanczos", 100, "HVPs")  # the first line: as soon as work starts
    clock.now += 1.0
    p.advance(40)
    p.phase("a.pt: SLQ probe 1", 0, "HVPs")  # nothing to do: no line at all
    p.phase("a.pt: trace", 6, "HVPs")
    clock.now += 0.5
    p.advance(6)
    clock.now += 12.0
    p.phase("a.pt: 1-D sharpness", 40, "losses")  # the trace's end line is its news
    p.advance(40)
    p.close()
    assert out.getvalue().splitlines() == [
        "[audit] a.pt: top-k Lanczos: 0/100 HVPs, 00:00 elapsed",
        "[audit] a.pt: top-k Lanczos: 40/100 HVPs, 00:01 elapsed, done",
        "[audit] a.pt: trace: 6/6 HVPs, 00:12 elapsed, done",
        "[audit] a.pt: 1-D sharpness: 40/40 losses, 00:00 elapsed, done",
    ]


def test_plain_progress_resumed_phase_estimates_from_this_run_only():
    clock, out = FakeClock(), io.StringIO()
    p = c.PlainProgress("scan", "points", stream=out, clock=clock)
    p.phase("2d-random", 100, done=80)  # 80 points from an earlier run
    clock.now += 10.0
    p.advance(5)  # 5 points in 10 s: 15 left take 30 s
    assert out.getvalue().splitlines()[-1].endswith("85/100 points, 00:10 elapsed, ~00:30 left")


def test_plain_progress_is_silent_before_the_first_phase_and_after_an_error():
    clock, out = FakeClock(), io.StringIO()
    with pytest.raises(ValueError), c.PlainProgress("audit", stream=out, clock=clock):
        raise ValueError("bad input")  # before any phase: nothing at all
    assert out.getvalue() == ""
    p = c.PlainProgress("audit", stream=out, clock=clock)
    p.phase("checkpoint 1/2 a.pt: trace", 5, "HVPs")
    p.close(KeyboardInterrupt)  # no "done" line for work that was not done
    assert out.getvalue().splitlines() == [
        "[audit] checkpoint 1/2 a.pt: trace: 0/5 HVPs, 00:00 elapsed"
    ]


def test_plain_progress_outlives_a_closed_stderr():
    clock, out = FakeClock(), io.StringIO()
    p = c.PlainProgress("scan", "points", stream=out, clock=clock)
    out.close()  # e.g. the reader of a pipe went away: the work goes on without lines
    finished = []
    with p:
        p.phase("1d-random", 3)
        clock.now += 20.0
        p.advance(3)
        finished.append("points")  # reached: no write to the closed stream raised
    assert finished == ["points"]
    assert p._stream is None  # the first failed write turned the lines off, once
    assert p._done == 3  # and the count went on without them


def test_progress_picks_rich_bars_on_a_terminal_and_plain_lines_otherwise(monkeypatch):
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.setattr(sys, "stderr", Tty())
    assert isinstance(c.progress("hessian"), c.RichProgress)
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    assert isinstance(c.progress("hessian"), c.PlainProgress)


#: The checkpoint of the ``ckpt`` fixture (tests/conftest.py).
CKPT = TrainConfig(model="mlp", model_options={"hidden": [16]}, epochs=1)


def _copy(ckpt: Path, to: Path) -> Path:
    to.write_bytes(ckpt.read_bytes())
    return to


def test_cli_hessian_progress_in_a_captured_stderr_keeps_stdout_json(ckpt, tmp_path):
    ck = _copy(ckpt, tmp_path / "h.pt")
    args = ["hessian", str(ck), "--samples", "64", "--top-k", "2", "--trace-probes", "4"]
    args += ["--density-probes", "2", "--lanczos-steps", "30", "--json"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)  # stdout is the JSON object alone
    lines = result.stderr.splitlines()
    for phase in ("top-k Lanczos: ", "trace: ", "density (SLQ)"):  # the density: 1 or 2 phases
        assert any(ln.startswith(f"[hessian] {phase}") and ln.endswith("done") for ln in lines)
    assert all(ln.startswith("[hessian] ") for ln in lines), lines
    # the phases' done counts add up to the HVPs spent
    done = [int(re.search(r": (\d+)/", ln).group(1)) for ln in lines if ln.endswith("done")]
    assert sum(done) == data["hvp_count"]


def test_cli_audit_shows_each_checkpoints_phases(ckpt, tmp_path):
    a, b = _copy(ckpt, tmp_path / "a.pt"), _copy(ckpt, tmp_path / "b.pt")
    args = ["audit", str(a), str(b), "--samples", "64", "--top-k", "2", "--trace-probes", "4"]
    args += ["--density-probes", "2", "--lanczos-steps", "30", "--json"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    ends = [ln for ln in result.stderr.splitlines() if ln.endswith("done")]
    for i, name in ((1, "a.pt"), (2, "b.pt")):
        for phase, unit in (
            ("top-k Lanczos", "HVPs (at most)"),
            ("trace", "HVPs (at most)"),
            ("density (SLQ)", "HVPs (at most)"),
            ("1-D sharpness", "losses"),
            ("adaptive sharpness", "gradients (at most)"),
        ):
            prefix = f"[audit] checkpoint {i}/2 {name}: {phase}"
            assert any(ln.startswith(prefix) and f" {unit}, " in ln for ln in ends), (prefix, ends)
        one_d = next(ln for ln in ends if ln.startswith(f"[audit] checkpoint {i}/2 {name}: 1-D"))
        assert ": 40/40 losses" in one_d  # 4 directions × 10 radii, all evaluated
    hvps = [
        int(re.search(r": (\d+)/", ln).group(1))
        for ln in ends
        if "checkpoint 1/2" in ln and "HVPs" in ln
    ]
    assert sum(hvps) == data["checkpoints"][0]["hvp_count"]


# ------------------------------------------------------------------------------------------------
# audit: --report only, --tol and --max-steps


def test_audit_out_is_one_error_line_pointing_to_report(ckpt, tmp_path):
    ck = _copy(ckpt, tmp_path / "a.pt")
    result = runner.invoke(app, ["audit", str(ck), "--samples", "32", "--out", "r.md"])
    one_error_line(result)
    assert "--report" in result.stderr and "Traceback" not in result.output
    assert not ck.with_suffix(".h5").exists() and not (tmp_path / "r.md").exists()


def test_audit_tol_and_max_steps_reach_the_hessian_settings():
    s = AuditSettings(tol=1e-6, max_steps=40)
    assert s.hessian().tol == 1e-6 and s.hessian().max_steps == 40
    assert AuditSettings().hessian().tol == 1e-4 and AuditSettings().hessian().max_steps == 100


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--tol", "0"], "--tol"),
        (["--max-steps", "0"], "--max-steps"),
        (["--top-k", "5", "--max-steps", "3"], "--max-steps"),
    ],
)
def test_audit_bad_tol_or_max_steps_is_one_line(ckpt, tmp_path, args, words):
    ck = _copy(ckpt, tmp_path / "a.pt")
    result = runner.invoke(app, ["audit", str(ck), "--samples", "32", *args])
    one_error_line(result)
    assert result.stderr.startswith("error: ") and words in result.stderr


def test_audit_reuses_hessian_only_when_its_lanczos_was_as_strict(ckpt, tmp_path):
    audit = ["--samples", "64", "--top-k", "2", "--trace-probes", "4", "--density-probes", "0"]
    hess = ["--samples", "64", "--top-k", "2", "--trace-probes", "4", "--density-probes", "0"]
    runs = {
        "same": ([], []),
        "looser-tol": (["--tol", "1e-2"], []),
        "fewer-steps": (["--max-steps", "50"], []),
        "audit-asks-more-steps": ([], ["--max-steps", "150"]),
        "audit-looser": ([], ["--tol", "1e-3", "--max-steps", "60"]),
    }
    sources = {}
    for name, (h_extra, a_extra) in runs.items():
        ck = _copy(ckpt, tmp_path / f"{name}.pt")
        r = runner.invoke(app, ["hessian", str(ck), *hess, *h_extra])
        assert r.exit_code == 0, r.output
        r = runner.invoke(app, ["audit", str(ck), *audit, *a_extra, "--json"])
        assert r.exit_code == 0, r.output
        row = json.loads(r.stdout)["checkpoints"][0]
        sources[name] = (row["hessian_source"], row["hvp_count"] == 0)
    assert sources == {
        "same": ("hessian", True),
        "looser-tol": ("audit/hessian", False),
        "fewer-steps": ("audit/hessian", False),
        "audit-asks-more-steps": ("audit/hessian", False),
        "audit-looser": ("hessian", True),
    }
    # the /audit group records the audit's tol and max-steps among its settings
    assert group_settings(tmp_path / "audit-looser.h5", "audit")["tol"] == 1e-3
    assert group_settings(tmp_path / "audit-looser.h5", "audit")["max_steps"] == 60
    assert group_settings(tmp_path / "looser-tol.h5", "audit")["tol"] == 1e-4


def _stored_hessian(settings: dict, *, resolved: bool = True):
    """A ``/hessian`` read back: two eigenvalues of a run made with ``settings``."""
    import numpy as np

    from landscape_cli.hessian.types import HessianReport, LanczosResult
    from landscape_cli.results import HessianResult

    top = LanczosResult(
        eigenvalues=np.array([3.0, 2.0]), residuals=np.zeros(2), converged=np.ones(2, bool),
        lambda_min=0.0, lambda_min_residual=0.0, steps=10, hvp_count=10, tol=1e-4,
        multiplicity_resolved=resolved,
    )  # fmt: skip
    report = HessianReport(
        top=top, trace=None, density=None, per_layer=(), samples=8, batch_size=8, seed=0,
        device="cpu", dtype="float32", loss="ce", split="train", bn_mode="eval", hvp_count=10,
        seconds=0.0, num_params=4,
    )  # fmt: skip
    return HessianResult(report, {"samples_sha256": "x", "settings": json.dumps(settings)})


def test_reuse_compares_tol_and_max_steps_of_the_stored_run():
    from dataclasses import replace

    lanczos = {"tol": 1e-4, "max_steps": 100}
    stored = _stored_hessian({"loss": "ce", "bn_mode": "eval", "seed": 0, "split": "train",
                              **lanczos})  # fmt: skip
    s = AuditSettings(top_k=2, trace_probes=0, density_probes=0, loss="ce")
    where = {"samples_sha256": "x", "split": "train"}
    assert stored.covers(s, **where)
    assert not stored.covers(replace(s, tol=1e-5), **where)
    assert not stored.covers(replace(s, max_steps=101), **where)
    assert stored.covers(replace(s, tol=1e-3, max_steps=20), **where)
    assert not stored.covers(s, samples_sha256="y", split="train")  # other samples
    unresolved = _stored_hessian(json.loads(stored.attrs["settings"]), resolved=False)
    assert not unresolved.covers(s, **where)  # copies may be missing
    assert unresolved.covers(replace(s, top_k=1), **where)  # but its λmax is λmax
    old = _stored_hessian({"loss": "ce", "bn_mode": "eval", "seed": 0, "split": "train"})
    assert not old.covers(s, **where)  # unknown Lanczos settings


def test_reuse_asks_for_each_estimate_and_the_same_measurement():
    """Each condition of ``HessianResult.covers`` on its own: a result that covers an audit stops
    covering it when one estimate falls short or one fact of the measurement differs."""
    from dataclasses import replace

    import numpy as np

    from landscape_cli.hessian.types import DensityResult, SampleSets, TraceResult

    opts = {"loss": "ce", "bn_mode": "eval", "seed": 0, "split": "train", "tol": 1e-4,
            "max_steps": 100, "dataset": "digits"}  # fmt: skip
    base = _stored_hessian(opts)
    trace = TraceResult(
        estimate=10.0,
        stderr=0.5,
        ci95=(9.0, 11.0),
        samples=np.ones(20),
        probes=20,
        method="hutchinson",
        hvp_count=20,
        converged=True,
        rtol=0.01,
    )
    density = DensityResult(
        grid=np.zeros(3),
        density=np.zeros(3),
        nodes=np.ones((3, 8)),
        weights=np.ones((3, 8)) / 8,
        sigma=0.01,
        lanczos_steps=8,
        probes=3,
        hvp_count=24,
        tol=0.0,
        achieved_tol=0.01,
    )
    sets = SampleSets(samples_sha256=("x", "y", "z"), eigenvalues=np.ones((3, 2)),
                      trace=np.ones(3), trace_stderr=np.ones(3))  # fmt: skip
    stored = replace(base, report=replace(base.report, trace=trace, density=density,
                                          sample_sets=sets))  # fmt: skip
    s = AuditSettings(top_k=2, trace_probes=20, trace_rtol=0.01, density_probes=3,
                      lanczos_steps=8, density_tol=0.001, sample_sets=3, loss="ce")  # fmt: skip
    where = {"samples_sha256": "x", "split": "train", "dataset": "digits", "set_hashes": ["y", "z"]}
    assert stored.covers(s, **where)

    def report(**kw):
        return replace(stored, report=replace(stored.report, **kw))

    def attrs(**kw):
        return replace(stored, attrs={**stored.attrs, **kw})

    def settings(**kw):
        return attrs(settings=json.dumps({**opts, **kw}))

    short = [
        (report(top=replace(stored.report.top, eigenvalues=np.array([3.0]))), s),
        (report(trace=None), s),
        (report(trace=replace(trace, probes=10)), s),  # fewer probes, stderr 5 % > 1 %
        (report(density=None), s),
        (report(density=replace(density, lanczos_steps=6)), s),
        (report(density=replace(density, probes=2)), s),  # fewer probes, 1 % > 0.1 %
        (report(sample_sets=None), s),
        (report(sample_sets=replace(sets, samples_sha256=("x", "y", "w"))), s),
        (report(curvature="ggn"), s),
        (attrs(engine="pyhessian"), s),
        (attrs(float32_precision="tf32"), s),
        (settings(loss="mse"), s),
        (settings(seed=1), s),
        (settings(bn_mode="train"), s),
        (settings(split="test"), s),
        (settings(dataset="cifar10"), s),
        (settings(params=["fc.*"]), s),
        (settings(include_frozen=True), s),
        (stored, replace(s, trace_probes=40, trace_rtol=0.04)),  # 0.5/10 = 5 % > 4 %
        (stored, replace(s, sample_sets=4)),
    ]
    for i, (result, wanted) in enumerate(short):
        assert not result.covers(wanted, **where), i
    # what is enough instead: a precise trace with fewer probes, a density that reached its tol
    assert report(trace=replace(trace, probes=10, stderr=0.05)).covers(s, **where)
    assert report(density=replace(density, probes=2, achieved_tol=5e-4)).covers(s, **where)
    assert attrs(float32_precision="tf32").covers(s, **where, allow_tf32=True)
    assert stored.covers(replace(s, sample_sets=2), **{**where, "set_hashes": ["y"]})


# ------------------------------------------------------------------------------------------------
# --help


def _commands():
    import typer

    root = typer.main.get_command(app)
    ctx = root.make_context("landscape", [], resilient_parsing=True)
    yield "landscape", root, ctx
    for name, command in root.commands.items():
        yield name, command, command.make_context(name, [], parent=ctx, resilient_parsing=True)


def test_every_option_of_every_command_is_in_a_help_panel():
    seen = 0
    for name, command, ctx in _commands():
        for param in command.get_params(ctx):  # the --help option included
            if param.param_type_name != "option":
                continue
            seen += 1
            panel = getattr(param, "rich_help_panel", None)
            assert panel in c.PANELS, f"{name} {param.opts[0]} has no help panel ({panel!r})"
    assert seen > 100


@pytest.mark.parametrize(
    ("command", "usage"),
    [
        ("hessian", "Usage: landscape hessian [OPTIONS] CHECKPOINT"),
        ("scan", "Usage: landscape scan [OPTIONS] CHECKPOINT"),
        ("audit", "Usage: landscape audit [OPTIONS] CHECKPOINTS..."),
        ("plot", "Usage: landscape plot [OPTIONS] [FILE]..."),
        ("train", "Usage: landscape train [OPTIONS]"),
        ("demo", "Usage: landscape demo [OPTIONS]"),
    ],
)
def test_help_reads_plainly(command, usage):
    result = runner.invoke(app, [command, "--help"], terminal_width=100)
    assert result.exit_code == 0, result.output
    text = result.stdout
    assert usage in [line.strip() for line in text.splitlines()]
    assert "<bool>" not in text and "list[" not in text and "{" not in text.splitlines()[1]
    panels = re.findall(r"╭─ (.+?) ─", text)
    assert panels[-1] == "Help" and "Options" not in panels
    known = [p for p in panels if p != "Arguments"]
    assert known == sorted(known, key=c.PANELS.index)  # every command in the same order


def test_flags_show_no_value_and_options_show_their_type():
    result = runner.invoke(app, ["hessian", "--help"], terminal_width=120)
    rows = {
        m.group(1): m.group(2)
        for m in re.finditer(
            r"│\s+(--[\w-]+)(?:\s+--no-[\w-]+)?\s+(<\w+>|KEY=VALUE)?", result.stdout
        )
    }
    for flag in ("--per-layer", "--eigenvectors", "--trust-checkpoint", "--json", "--overwrite"):
        assert rows[flag] is None, (flag, rows[flag])
    assert rows["--top-k"] == "<int>" and rows["--tol"] == "<float>"
    assert rows["--model-option"] == "KEY=VALUE"


def test_root_help_puts_threads_under_run():
    result = runner.invoke(app, ["--help"], terminal_width=100)
    assert result.exit_code == 0
    assert re.findall(r"╭─ (.+?) ─", result.stdout)[:2] == ["Run", "Help"]
    assert "<bool>" not in result.stdout


def test_the_display_knows_nothing_of_threads_and_the_factory_wires_the_cpu_share(monkeypatch):
    from landscape_cli.commands import _threads

    calls = []
    monkeypatch.setattr(_threads, "rebalance", lambda: calls.append(1))
    bare = c.PlainProgress("scan", "points", stream=io.StringIO(), clock=FakeClock())
    with bare:
        bare.phase("points", 3)
        bare.advance(2)
    assert calls == []  # a display built directly does no thread work
    monkeypatch.setattr(c, "stderr_is_terminal", lambda: False)
    wired = c.progress("scan", "points")
    wired._stream = io.StringIO()
    with wired:
        wired.phase("points", 3)
        wired.advance()
        wired.advance(2)
    assert calls == [1, 1]  # one rebalancing look per unit of work, from the factory's hook
