"""The bad-input catalogue: one table of inputs and faults a user (or an attacker) can give.

Every row runs one command in a fresh folder holding the files its ``setup`` made, and checks:
the exit code; for errors, one plain ``error: ...`` line on stderr holding the row's key words
and no traceback; that every file that existed before the command is byte-identical afterwards;
and that no ``PWNED`` marker was created (nothing read from a file ran code).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from landscape_cli.commands import app
from landscape_cli.results import update_file
from landscape_cli.training import TrainConfig, train

runner = CliRunner()
MARK = "PWNED"
FAST = ["--samples", "32", "--batch-size", "32"]
HFAST = [*FAST, "--top-k", "1", "--trace-probes", "0", "--density-probes", "0"]


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    """A tiny trained checkpoint (``ok.pt``) and a results file made from it (``ok.h5``)."""
    d = tmp_path_factory.mktemp("base")
    train(TrainConfig(model="mlp", model_options={"hidden": [4]}, epochs=1), out=d / "ok.pt")
    result = runner.invoke(app, ["hessian", str(d / "ok.pt"), "--out", str(d / "ok.h5"), *HFAST])
    assert result.exit_code == 0, result.output
    return d


# ------------------------------------------------------------------------------------------------
# setups: each makes files in the case's folder ``d`` (the working directory of the command)


def _ckpt(base: Path) -> dict:
    return torch.load(base / "ok.pt", weights_only=True)


def _evil_module(d: Path, name: str) -> str:
    """A module beside the command whose import (or factory) creates the marker file."""
    marker = d / MARK
    (d / f"{name}.py").write_text(
        f"open({str(marker)!r}, 'w').close()\n"
        f"def make(*args, **kwargs):\n    open({str(marker)!r}, 'w').close()\n"
    )
    return f"{name}:make"


def evil_model(spec: str, **extra) -> Callable[[Path, Path], None]:
    def setup(d: Path, base: Path) -> None:
        ck = _ckpt(base)
        name = _evil_module(d, f"evil_{d.name}") if spec == "module" else spec
        ck["model"] = {"name": name, "kwargs": {**ck["model"]["kwargs"], **extra}}
        torch.save(ck, d / "evil.pt")

    return setup


def evil_dataset(d: Path, base: Path) -> None:
    ck = _ckpt(base)
    ck["dataset"] = {"name": _evil_module(d, f"evilds_{d.name}"), "root": None}
    torch.save(ck, d / "evil.pt")


def evil_config(key: str, spec: str | None = None) -> Callable[[Path, Path], None]:
    def setup(d: Path, base: Path) -> None:
        ck = _ckpt(base)
        name = spec or _evil_module(d, f"evilcfg_{d.name}")
        ck["train"]["config"] = {**ck["train"]["config"], key: name, "epochs": 2}
        if key == "model":
            ck["train"]["config"]["model_options"] = {"command": f"touch {d / MARK}"}
        torch.save(ck, d / "evil.pt")

    return setup


def copy_ok(d: Path, base: Path) -> None:
    (d / "ok.pt").write_bytes((base / "ok.pt").read_bytes())
    (d / "ok.h5").write_bytes((base / "ok.h5").read_bytes())


def both(*setups: Callable[[Path, Path], None]) -> Callable[[Path, Path], None]:
    def setup(d: Path, base: Path) -> None:
        for s in setups:
            s(d, base)

    return setup


def a_file(name: str, content: bytes = b"not a folder\n") -> Callable[[Path, Path], None]:
    def setup(d: Path, base: Path) -> None:
        (d / name).write_bytes(content)

    return setup


def edited_ckpt(edit: Callable[[dict], None], name: str = "bad.pt"):
    def setup(d: Path, base: Path) -> None:
        ck = _ckpt(base)
        edit(ck)
        torch.save(ck, d / name)

    return setup


def _nan_weights(ck: dict) -> None:
    for v in ck["state_dict"].values():
        v.fill_(math.nan)


def corrupt_h5(name: str = "bad.h5") -> Callable[[Path, Path], None]:
    def setup(d: Path, base: Path) -> None:
        data = (base / "ok.h5").read_bytes()
        (d / name).write_bytes(data[: len(data) // 2])  # a torn copy: HDF5 signature, no data

    return setup


def foreign_h5(d: Path, base: Path) -> None:
    with h5py.File(d / "foreign.h5", "w") as f:
        f["x"] = np.arange(3)


def results_with_bad_group(d: Path, base: Path) -> None:
    copy_ok(d, base)
    update_file(d / "ok.h5", {}, lambda f: f.create_dataset("scan", data=np.arange(3)))


# ------------------------------------------------------------------------------------------------
# the catalogue


@dataclass(frozen=True)
class Case:
    id: str
    args: list[str]
    words: tuple[str, ...]  # key words of the error line (of stdout when code is 0)
    code: int = 2
    setup: Callable[[Path, Path], None] = copy_ok
    extra: dict = field(default_factory=dict)


SPEC_WORDS = ("--trust-checkpoint",)
CASES = [
    # 1. nothing read from a file imports or calls code without --trust-checkpoint
    Case("hessian-model-os-system", ["hessian", "evil.pt", *HFAST], ("os:system", *SPEC_WORDS),
         setup=evil_model("os:system", command=f"touch {MARK}")),
    Case("scan-model-os-system", ["scan", "evil.pt", "--points", "3", *FAST],
         ("os:system", *SPEC_WORDS), setup=evil_model("os:system", command=f"touch {MARK}")),
    Case("audit-model-os-system", ["audit", "evil.pt", *FAST], ("os:system", *SPEC_WORDS),
         setup=evil_model("os:system", command=f"touch {MARK}")),
    Case("hessian-model-subprocess-run", ["hessian", "evil.pt", *HFAST],
         ("subprocess:run", *SPEC_WORDS), setup=evil_model("subprocess:run", args=["touch", MARK])),
    Case("hessian-model-builtins-exec", ["hessian", "evil.pt", *HFAST],
         ("builtins:exec", *SPEC_WORDS),
         setup=evil_model("builtins:exec", source=f"open({MARK!r}, 'w')")),
    Case("hessian-model-import-module", ["hessian", "evil.pt", *HFAST],
         ("importlib:import_module", *SPEC_WORDS),
         setup=evil_model("importlib:import_module", name="this")),
    Case("hessian-model-local-module", ["hessian", "evil.pt", *HFAST], SPEC_WORDS,
         setup=evil_model("module")),
    Case("scan-model-local-module", ["scan", "evil.pt", "--points", "3", *FAST], SPEC_WORDS,
         setup=evil_model("module")),
    Case("hessian-dataset-spec", ["hessian", "evil.pt", *HFAST], ("dataset", *SPEC_WORDS),
         setup=evil_dataset),
    Case("scan-dataset-spec", ["scan", "evil.pt", "--points", "3", *FAST],
         ("dataset", *SPEC_WORDS), setup=evil_dataset),
    Case("audit-dataset-spec", ["audit", "evil.pt", *FAST], ("dataset", *SPEC_WORDS),
         setup=evil_dataset),
    Case("scan-to-target-model-spec",
         ["scan", "ok.pt", "--to", "evil.pt", "--points", "3", *FAST], ("os:system", *SPEC_WORDS),
         setup=both(copy_ok, evil_model("os:system", command=f"touch {MARK}"))),
    Case("train-resume-config-model-os-system", ["train", "--resume", "evil.pt"],
         ("os:system", *SPEC_WORDS), setup=evil_config("model", "os:system")),
    Case("train-resume-config-model-module", ["train", "--resume", "evil.pt"], SPEC_WORDS,
         setup=evil_config("model")),
    Case("train-resume-config-dataset", ["train", "--resume", "evil.pt"],
         ("dataset", *SPEC_WORDS), setup=evil_config("dataset")),
    Case("hessian-model-kwargs-not-plain", ["hessian", "bad.pt", *HFAST], ("not plain data",),
         setup=edited_ckpt(lambda ck: ck["model"]["kwargs"].update(hidden=torch.ones(1)))),
    Case("hessian-model-kwargs-undeclared", ["hessian", "bad.pt", *HFAST], ("no option",),
         setup=edited_ckpt(lambda ck: ck["model"]["kwargs"].update(command="touch x"))),
    Case("hessian-malicious-pickle", ["hessian", "pickle.pt", *HFAST], ("--trust-checkpoint",),
         setup=a_file("pickle.pt", b"cos\nsystem\n(S'touch PWNED'\ntR.")),
]  # fmt: skip


def _snapshot(d: Path) -> dict[Path, bytes]:
    return {p: p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(case: Case, base, tmp_path, monkeypatch):
    d = tmp_path / case.id
    d.mkdir()
    monkeypatch.chdir(d)
    case.setup(d, base)
    before = _snapshot(d)
    result = runner.invoke(app, case.args, **case.extra)
    assert result.exit_code == case.code, result.output
    assert "Traceback" not in result.output
    if case.code == 0:
        text = result.stdout
    else:
        assert result.stderr.startswith("error: "), result.stderr
        assert result.stderr.count("\n") == 1, result.stderr
        text = result.stderr
    for word in case.words:
        assert word in text, text
    after = _snapshot(d)
    for path, data in before.items():
        assert path in after, f"{path.name} was removed"
        assert after[path] == data, f"{path.name} was changed"
    assert not (d / MARK).exists(), "code from a file ran"
