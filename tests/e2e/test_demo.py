"""``landscape demo --quick`` end to end: every promised file, real numbers."""

from __future__ import annotations

import json

import matplotlib.image as mpimg
import pytest
from cases import runner

from landscape_cli.commands import app
from landscape_cli.results import read_hessian, read_scan


@pytest.mark.slow
def test_demo_quick_writes_everything(tmp_path):
    out = tmp_path / "demo"
    result = runner.invoke(app, ["demo", "--quick", "--out", str(out), "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    # stderr is not a terminal here: plain progress lines, one as each phase of each step ends
    ends = [line for line in result.stderr.splitlines() if line.endswith(", done")]
    for phase in ("train Adam", "hessian DualAdam: top-k Lanczos", "scan Adam + warm-up"):
        assert any(line.startswith(f"[demo] {phase}: ") for line in ends), result.stderr
    assert "[demo] figure 2: 1/1 figure, " in ends[-1]
    train = next(line for line in ends if line.startswith("[demo] train Adam: "))
    done, total = map(int, train.split(": ")[1].split(" ")[0].split("/"))
    assert done == total > 0  # every training step counted
    labels = [r["label"] for r in summary["runs"]]
    assert labels == ["Adam", "DualAdam", "Adam + warm-up"]
    for run in summary["runs"]:
        assert (tmp_path / "demo").joinpath(run["checkpoint"].split("/")[-1]).exists()
        h = read_hessian(run["results"])
        assert h["eigenvalues"][0] == pytest.approx(run["lambda_max"])
        assert h["density"] is not None and h["trace"] is not None
        scan = read_scan(run["results"], "1d-random")
        assert not (scan["loss"] != scan["loss"]).any()  # every point computed
    warm = summary["runs"][2]
    assert warm["hparams"]["lr"] == 1e-2  # the matched baseline runs at DualAdam's rate
    for run in summary["runs"]:  # Fig. 7: each run's trajectory over its own plane
        plane = read_scan(run["results"], "2d-pca")
        assert len(plane.trajectory["label"]) == 3  # a snapshot per epoch of --quick
        assert plane.attrs["explained_variance"].tolist() == pytest.approx(
            run["explained_variance"]
        )
        assert not (plane.loss != plane.loss).any()
    for name in ("fig2", "fig5", "fig6", "fig7"):
        path = out / f"{name}.png"
        assert summary["figures"][name] == str(path)
        image = mpimg.imread(path)
        assert image.std() > 0.05  # not blank
