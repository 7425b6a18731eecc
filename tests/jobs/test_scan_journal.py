"""The scan's journal and lock (landscape_cli.jobs.scan_journal): a second writer of one scan is
refused at once, and a scan whose fold into the results file fails keeps every point in its
journal."""

from __future__ import annotations

import json

import numpy as np
from cases import FAST, one_error_line, runner

from landscape_cli.commands import app
from landscape_cli.jobs.scan_journal import scan_lock


def test_second_writer_of_one_scan_is_refused_at_once(ckpt, tmp_path):
    out = tmp_path / "r.h5"
    with scan_lock(out, "1d-random"):
        result = runner.invoke(app, ["scan", str(ckpt), "--out", str(out), "--points", "3", *FAST])
    assert "in use by another process" in one_error_line(result)
    # once the first one is done, the same command runs (other scans are not blocked meanwhile)
    with scan_lock(out, "other"):
        ok = runner.invoke(app, ["scan", str(ckpt), "--out", str(out), "--points", "3", *FAST])
    assert ok.exit_code == 0, ok.output


def test_a_scan_whose_fold_fails_keeps_every_point_in_its_journal(ckpt, tmp_path, monkeypatch):
    from landscape_cli.jobs import scan_journal
    from landscape_cli.jobs.scan_journal import journal_path, read_journal
    from landscape_cli.results import ResultsWriteError

    out = tmp_path / "r.h5"

    def disk_full(*args, **kwargs):
        raise ResultsWriteError(f"cannot write results file {out}: No space left on device")

    monkeypatch.setattr(scan_journal, "set_scan_points", disk_full)
    args = ["scan", str(ckpt), "--out", str(out), "--points", "5", *FAST]
    result = runner.invoke(app, args)
    journal = journal_path(out, "1d-random")
    assert result.exit_code == 2 and "Traceback" not in result.output
    last = result.stderr.splitlines()[-1]
    assert "No space left" in last and str(journal) in last
    assert len(read_journal(journal)) == 5
    monkeypatch.undo()
    again = runner.invoke(app, [*args, "--json"])  # the same command stores them
    assert again.exit_code == 0 and not np.isnan(json.loads(again.stdout)["loss"]).any()
