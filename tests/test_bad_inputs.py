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
from landscape_cli.training import TrainConfig

runner = CliRunner()
MARK = "PWNED"
FAST = ["--samples", "32", "--batch-size", "32"]
HFAST = [*FAST, "--top-k", "1", "--trace-probes", "0", "--density-probes", "0"]


@pytest.fixture(scope="module")
def base(tmp_path_factory, trained_checkpoint) -> Path:
    """A tiny trained checkpoint (``ok.pt``) and a results file made from it (``ok.h5``)."""
    d = tmp_path_factory.mktemp("base")
    config = TrainConfig(model="mlp", model_options={"hidden": [4]}, epochs=1)
    trained_checkpoint(config, into=d, name="ok.pt")
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


def _ident(d: Path) -> str:
    return "".join(c if c.isalnum() else "_" for c in d.name)


def evil_model(spec: str, **extra) -> Callable[[Path, Path], None]:
    def setup(d: Path, base: Path) -> None:
        ck = _ckpt(base)
        name = _evil_module(d, f"evil_{_ident(d)}") if spec == "module" else spec
        ck["model"] = {"name": name, "kwargs": {**ck["model"]["kwargs"], **extra}}
        torch.save(ck, d / "evil.pt")

    return setup


def evil_dataset(d: Path, base: Path) -> None:
    ck = _ckpt(base)
    ck["dataset"] = {"name": _evil_module(d, f"evilds_{_ident(d)}"), "root": None}
    torch.save(ck, d / "evil.pt")


def evil_config(key: str, spec: str | None = None) -> Callable[[Path, Path], None]:
    def setup(d: Path, base: Path) -> None:
        ck = _ckpt(base)
        name = spec or _evil_module(d, f"evilcfg_{_ident(d)}")
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


def damaged_h5(signature: bytes, name: str = "bad.h5") -> Callable[[Path, Path], None]:
    """A results file with one of HDF5's internal structures (a group's B-tree or local heap,
    the global heap of its strings) clobbered: the root opens, a group or attribute does not."""

    def setup(d: Path, base: Path) -> None:
        copy_ok(d, base)
        data = (base / "ok.h5").read_bytes()
        assert signature in data
        (d / name).write_bytes(data.replace(signature, b"XXXX"))

    return setup


def foreign_h5(d: Path, base: Path) -> None:
    with h5py.File(d / "foreign.h5", "w") as f:
        f["x"] = np.arange(3)


def images(d: Path, base: Path) -> None:
    from PIL import Image

    for cls, size in (("a", (8, 8)), ("b", (10, 10))):
        (d / "imgs" / cls).mkdir(parents=True)
        for i in range(2):
            Image.new("RGB", size, (40 * i, 80, 120)).save(d / "imgs" / cls / f"{i}.png")


def float_targets(shape: str) -> Callable[[Path, Path], None]:
    """A dataset module beside the command whose targets are floats (regression data)."""

    def setup(d: Path, base: Path) -> None:
        copy_ok(d, base)
        (d / f"floats_{_ident(d)}.py").write_text(
            "import torch\n"
            "def make(split='train'):\n"
            "    x = torch.randn(16, 4, generator=torch.Generator().manual_seed(0))\n"
            f"    return torch.utils.data.TensorDataset(x, x.sum(1){shape})\n"
        )

    return setup


def junk(name: str) -> Callable[[Path, Path], None]:
    return a_file(name, b"\x00\x01 definitely not a checkpoint")


def a_folder(name: str) -> Callable[[Path, Path], None]:
    def setup(d: Path, base: Path) -> None:
        (d / name).mkdir()

    return setup


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
    cpu_only: bool = False  # the case is about a missing CUDA device


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
    # 2. outputs are checked before any work; nothing finished is lost or replaced
    Case("train-out-under-a-file", ["train", "--out", "afile/x.pt", "--epochs", "1"],
         ("afile", "not a folder"), setup=a_file("afile")),
    Case("train-out-is-a-folder", ["train", "--out", "adir", "--epochs", "1"], ("folder",),
         setup=a_folder("adir")),
    Case("train-out-over-results-file", ["train", "--out", "ok.h5", "--epochs", "1"],
         ("--overwrite",)),
    Case("train-out-over-another-run", ["train", "--out", "ok.pt", "--epochs", "1"],
         ("--overwrite",)),
    Case("hessian-out-under-a-file", ["hessian", "ok.pt", "--out", "afile/x.h5", *HFAST],
         ("afile", "not a folder"), setup=both(copy_ok, a_file("afile"))),
    Case("hessian-out-damaged-results", ["hessian", "ok.pt", "--out", "torn.h5", *HFAST],
         ("torn.h5",), setup=both(copy_ok, corrupt_h5("torn.h5"))),
    Case("hessian-out-damaged-group-btree", ["hessian", "ok.pt", "--out", "bad.h5", *HFAST],
         ("damaged", "B-tree"), setup=damaged_h5(b"TREE")),
    Case("hessian-out-damaged-local-heap", ["hessian", "ok.pt", "--out", "bad.h5", *HFAST],
         ("damaged", "heap"), setup=damaged_h5(b"HEAP")),
    Case("scan-out-damaged-strings", ["scan", "ok.pt", "--out", "bad.h5", *FAST],
         ("damaged", "heap"), setup=damaged_h5(b"GCOL")),
    Case("plot-damaged-strings", ["plot", "bad.h5", "--figure", "fig5"], ("damaged",),
         setup=damaged_h5(b"GCOL")),
    Case("plot-damaged-group", ["plot", "bad.h5", "--figure", "fig5"], ("damaged",),
         setup=damaged_h5(b"TREE")),
    Case("hessian-out-foreign-hdf5", ["hessian", "ok.pt", "--out", "foreign.h5", *HFAST],
         ("foreign.h5", "not a landscape results file"), setup=both(copy_ok, foreign_h5)),
    Case("hessian-out-not-hdf5", ["hessian", "ok.pt", "--out", "afile", *HFAST],
         ("not an HDF5 file",), setup=both(copy_ok, a_file("afile"))),
    Case("scan-out-under-a-file", ["scan", "ok.pt", "--out", "afile/x.h5", *FAST],
         ("afile", "not a folder"), setup=both(copy_ok, a_file("afile"))),
    Case("scan-out-damaged-results", ["scan", "ok.pt", "--out", "torn.h5", *FAST],
         ("torn.h5",), setup=both(copy_ok, corrupt_h5("torn.h5"))),
    Case("audit-report-under-a-file", ["audit", "ok.pt", "--report", "afile/r.md", *FAST],
         ("afile", "not a folder"), setup=both(copy_ok, a_file("afile"))),
    Case("audit-results-damaged", ["audit", "ok.pt", *FAST], ("ok.h5",),
         setup=both(copy_ok, corrupt_h5("ok.h5"))),
    Case("plot-out-under-a-file",
         ["plot", "ok.h5", "--figure", "fig5", "--out", "afile/x.png"], ("afile", "not a folder"),
         setup=both(copy_ok, a_file("afile"))),
    Case("plot-damaged-results", ["plot", "torn.h5", "--figure", "fig5"], ("torn.h5",),
         setup=corrupt_h5("torn.h5")),
    Case("demo-out-is-a-file", ["demo", "--quick", "--out", "afile"], ("afile", "not a folder"),
         setup=a_file("afile")),
    Case("demo-out-under-a-file", ["demo", "--quick", "--out", "afile/demo"], ("not a folder",),
         setup=a_file("afile")),
    # 3. options checked against the model and the machine before any allocation
    Case("hessian-top-k-over-max-steps", ["hessian", "ok.pt", *FAST, "--top-k", "100000000"],
         ("--max-steps",)),
    Case("hessian-top-k-over-n",
         ["hessian", "ok.pt", *FAST, "--top-k", "100000000", "--max-steps", "100000000"],
         ("exceeds", "parameters")),
    Case("hessian-density-past-memory",
         ["hessian", "ok.pt", *FAST, "--top-k", "1", "--density-probes", "100000000"],
         ("lower --density-probes",)),
    Case("hessian-trace-past-memory",
         ["hessian", "ok.pt", *FAST, "--top-k", "1", "--trace-method", "hutch++",
          "--trace-probes", "100000000000", "--density-probes", "0"], ("lower --trace-probes",)),
    Case("scan-grid-past-memory", ["scan", "ok.pt", *FAST, "--dim", "2", "--points", "1000000"],
         ("lower --points",)),
    # 4. every traceback and quiet failure
    Case("train-resume-weights-do-not-fit", ["train", "--resume", "bad.pt", "--epochs", "2"],
         ("does not fit",),
         setup=edited_ckpt(lambda ck: ck["state_dict"].pop(next(iter(ck["state_dict"]))))),
    Case("train-resume-no-optimizer", ["train", "--resume", "bad.pt", "--epochs", "2"],
         ("optimizer",), setup=edited_ckpt(lambda ck: ck.pop("optimizer"))),
    Case("train-resume-version-99", ["train", "--resume", "bad.pt", "--epochs", "2"],
         ("version 99",), setup=edited_ckpt(lambda ck: ck.update(version=99))),
    Case("hessian-version-99", ["hessian", "bad.pt", *HFAST], ("version 99",),
         setup=edited_ckpt(lambda ck: ck.update(version=99))),
    Case("train-resume-non-checkpoint", ["train", "--resume", "junk.pt"],
         ("not a PyTorch checkpoint",), setup=junk("junk.pt")),
    Case("train-resume-missing", ["train", "--resume", "none.pt"], ("checkpoint not found",)),
    Case("train-imagefolder-mixed-sizes",
         ["train", "--dataset", "imagefolder:imgs", "--model", "mlp", "--epochs", "1",
          "--out", "m.pt"], ("different sizes",), setup=images),
    Case("landscape-without-arguments", [], ("Usage", "hessian", "scan"), code=0),
    Case("unknown-option", ["hessian", "ok.pt", "--no-such-option"], ("no such option",)),
    Case("missing-argument", ["hessian"], ("missing argument",)),
    Case("demo-device-cuda", ["demo", "--quick", "--device", "cuda", "--out", "d"], ("CUDA",),
         cpu_only=True),
    Case("audit-nan-checkpoint", ["audit", "bad.pt", *FAST], ("not finite",),
         setup=edited_ckpt(_nan_weights)),
    Case("hessian-nan-checkpoint", ["hessian", "bad.pt", *HFAST], ("not finite",),
         setup=edited_ckpt(_nan_weights)),
    Case("scan-nan-checkpoint", ["scan", "bad.pt", "--points", "3", *FAST], ("not finite",),
         setup=edited_ckpt(_nan_weights)),
    Case("scan-fold-every-negative", ["scan", "ok.pt", "--fold-every", "-1", *FAST],
         ("--fold-every",)),
    Case("scan-fold-every-nan", ["scan", "ok.pt", "--fold-every", "nan", *FAST],
         ("--fold-every",)),
    # moved here from the command test files
    *[
        Case(f"hessian-option{extra[0]}-{extra[1]}", ["hessian", "ok.pt", *extra], (needle,),
             cpu_only=needle == "CUDA")
        for extra, needle in [
            (["--top-k", "-1"], "--top-k"),
            (["--trace-method", "magic"], "--trace-method"),
            (["--loss", "hinge"], "--loss"),
            (["--dtype", "float16"], "--dtype"),
            (["--split", "valid"], "--split"),
            (["--bn-mode", "frozen"], "--bn-mode"),
            (["--device", "cuda"], "CUDA"),
            (["--tol", "abc"], "--tol"),
        ]
    ],
    Case("hessian-missing-checkpoint", ["hessian", "x.pt"], ("not found",)),
    Case("hessian-junk-checkpoint", ["hessian", "junk.pt"], ("not a PyTorch checkpoint",),
         setup=junk("junk.pt")),
    *[
        Case(f"train{'-'.join(args[:2])}", ["train", *args], (needle,))
        for args, needle in [
            (["--optimizer", "lion"], "unknown optimizer"),
            (["--epochs", "zero"], "--epochs"),
            (["--dataset", "cifar10", "--data-root", "/nonexistent"], "cifar-10-batches-py"),
            (["--model", "nosuchmodel"], "nosuchmodel"),
            (["--model-option", "oops"], "KEY=VALUE"),
            (["--device", "cuda:banana"], "device"),
        ]
    ],
    *[
        Case(f"scan-option{extra[0]}-{extra[1]}", ["scan", "ok.pt", *extra], (needle,))
        for extra, needle in [
            (["--dim", "3"], "--dim"),
            (["--direction", "sideways"], "--direction"),
            (["--range", "1", "-1"], "range"),
            (["--norm", "unit"], "--norm"),
            (["--dim", "2", "--to", "x.pt"], "--to"),
            (["--points", "0"], "--points"),
        ]
    ],
    Case("audit-rank-by", ["audit", "ok.pt", "--rank-by", "beauty"], ("--rank-by",)),
    Case("audit-report-not-md", ["audit", "ok.pt", "--report", "r.txt"], (".md",)),
    Case("audit-missing-checkpoint", ["audit", "none.pt"], ("not found",)),
    # issue 11: the loss against the targets, and the one rule for existing groups
    Case("train-ce-on-float-targets",
         ["train", "--model", "mlp", "--dataset", "floats_train_ce_on_float_targets:make",
          "--epochs", "1", "--out", "r.pt"],
         ("floating-point", "--loss mse"), setup=float_targets("[:, None]")),
    Case("train-ce-on-scalar-float-targets",
         ["train", "--model", "mlp", "--dataset", "floats_train_ce_on_scalar_float_targets:make",
          "--epochs", "1", "--out", "r.pt"],
         ("--loss mse",), setup=float_targets("")),
    Case("hessian-other-options-on-existing-group", ["hessian", "ok.pt", *HFAST, "--seed", "3"],
         ("other options", "--overwrite")),
    Case("scan-bn-without-interpolation", ["scan", "ok.pt", "--points", "3", "--bn", "recompute"],
         ("--bn",)),
    Case("hessian-negative-density-tol", ["hessian", "ok.pt", *HFAST, "--density-tol", "-0.1"],
         ("--density-tol",)),
    Case("audit-tau-out-of-range", ["audit", "ok.pt", *FAST, "--tau", "2"], ("--tau",)),
]  # fmt: skip


def _snapshot(d: Path) -> dict[Path, bytes]:
    return {p: p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(case: Case, base, tmp_path, monkeypatch):
    if case.cpu_only and torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
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
