"""The bad-input catalogue: one table of inputs and faults a user (or an attacker) can give.

Every row runs one command in a fresh folder holding the files its ``setup`` made, and checks:
the exit code; for errors, one plain ``error: ...`` line on stderr holding the row's key words
and no traceback; that every file that existed before the command is byte-identical afterwards;
and that no ``PWNED`` marker was created (nothing read from a file ran code).
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from cases import FAST, FULL, HFAST, runner

from landscape_cli.commands import app
from landscape_cli.training import TrainConfig

MARK = "PWNED"


@pytest.fixture(scope="module")
def base(tmp_path_factory, trained_checkpoint) -> Path:
    """A tiny trained checkpoint (``ok.pt``) and a results file made from it (``ok.h5``)."""
    d = tmp_path_factory.mktemp("base")
    config = TrainConfig(model="mlp", model_options={"hidden": [4]}, epochs=1)
    trained_checkpoint(config, into=d, name="ok.pt")
    result = runner.invoke(app, ["hessian", str(d / "ok.pt"), "--out", str(d / "ok.h5"), *HFAST])
    assert result.exit_code == 0, result.output
    # every group a reader takes: a whole /hessian (per-layer too) and a 1-D and a 2-D scan
    full = str(d / "full.h5")
    for args in (
        ["hessian", str(d / "ok.pt"), "--out", full, *FULL],
        ["scan", str(d / "ok.pt"), "--out", full, *FAST, "--points", "3"],
        ["scan", str(d / "ok.pt"), "--out", full, *FAST, "--points", "3", "--dim", "2"],
    ):
        result = runner.invoke(app, args)
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
    writes: tuple[str, ...] = ()  # files a successful command (code 0) writes into


SPEC_WORDS = ("--trust-checkpoint",)
SMALL_MEMORY = {"env": {"LANDSCAPE_MEMORY_LIMIT": str(50 * 1024**2)}}
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
         ["hessian", "ok.pt", *FAST, "--top-k", "100000", "--max-steps", "100000"],
         ("exceeds", "parameters")),
    Case("hessian-density-past-memory",
         ["hessian", "ok.pt", *FAST, "--top-k", "1", "--density-probes", "100000"],
         ("lower --density-probes",), extra=SMALL_MEMORY),
    Case("hessian-trace-past-memory",
         ["hessian", "ok.pt", *FAST, "--top-k", "1", "--trace-method", "hutch++",
          "--trace-probes", "1000000", "--density-probes", "0"], ("lower --trace-probes",),
         extra=SMALL_MEMORY),
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


# ------------------------------------------------------------------------------------------------
# issue 22 (11, 12): crafted results files, crafted checkpoints, options outside their domain,
# image folders, scan names, and user strings that reach a figure or a table


def crafted_h5(edit: Callable[[h5py.File], None], name: str = "r.h5"):
    """``full.h5`` (a whole /hessian and two scans) copied to ``name`` and edited with h5py."""

    def setup(d: Path, base: Path) -> None:
        copy_ok(d, base)
        (d / name).write_bytes((base / "full.h5").read_bytes())
        with h5py.File(d / name, "r+") as f:
            edit(f)

    return setup


def h5_attr(path: str, key: str, value):
    return lambda f: f[path].attrs.__setitem__(key, value)


def h5_swap(path: str, value):
    def edit(f: h5py.File) -> None:
        if path in f:
            del f[path]
        f[path] = value

    return edit


def h5_group(path: str):
    def edit(f: h5py.File) -> None:
        del f[path]
        f.create_group(path)

    return edit


def h5_fill(path: str, value: float):
    return lambda f: f[path].__setitem__(Ellipsis, value)


def h5_drop(path: str):
    return lambda f: f.__delitem__(path)


def h5_cycle(f: h5py.File) -> None:
    f["hessian/density/back"] = f["hessian"]


def h5_bad_audit(settings: str | None = None, eigenvalues: float | None = None):
    def edit(f: h5py.File) -> None:
        g = f.create_group("audit")
        if settings is not None:
            g.attrs["settings"] = settings
        if eigenvalues is not None:
            f.copy(f["hessian"], g, name="hessian")
            g["hessian/eigenvalues"][...] = eigenvalues

    return edit


def h5_move(old: str, new: str):
    def edit(f: h5py.File) -> None:
        f.move(old, new)

    return edit


NAN, INF = math.nan, math.inf
S1, S2 = "scan/1d-random", "scan/2d-random"
# (id, edit, the figure that reads the edited group (None: no figure does), key words)
MUTATIONS = [
    ("samples-string", h5_attr("hessian", "samples", "abc"), "fig5", ("'samples'", "integer")),
    ("seed-float", h5_attr("hessian", "seed", 1.5), "fig5", ("'seed'", "integer")),
    ("trace-vector", h5_swap("hessian/trace", np.arange(3.0)), "fig5",
     ("/hessian/trace", "shape (3,)")),
    ("eigenvalues-group", h5_group("hessian/eigenvalues"), "fig5",
     ("/hessian/eigenvalues", "is a group")),
    ("eigenvalues-strings", h5_swap("hessian/eigenvalues", np.array([b"a", b"b"])), "fig5",
     ("/hessian/eigenvalues", "dtype")),
    ("label-array", h5_attr("/", "label", np.arange(3)), "fig5", ("'label'", "string")),
    ("density-nodes-nan", h5_fill("hessian/density/nodes", NAN), "fig5",
     ("/hessian/density/nodes", "NaN")),
    ("density-weights-zero", h5_fill("hessian/density/weights", 0.0), "fig5",
     ("/hessian/density/weights", "positive")),
    ("density-grid-missing", h5_drop("hessian/density/grid"), "fig5",
     ("/hessian/density/grid", "missing")),
    ("trace-samples-inf", h5_fill("hessian/trace_samples", INF), "fig5",
     ("/hessian/trace_samples", "infinite")),
    ("residuals-length", h5_swap("hessian/residuals", np.zeros(5)), "fig5",
     ("/hessian/residuals", "shape (5,)")),
    ("converged-float", h5_swap("hessian/converged", np.zeros(2)), "fig5",
     ("/hessian/converged", "float64")),
    ("settings-not-json", h5_attr("hessian", "settings", "{not json"), "fig5",
     ("'settings'", "JSON")),
    ("settings-json-list", h5_attr("hessian", "settings", "[1, 2]"), "fig5",
     ("'settings'", "JSON")),
    ("skipped-params-number", h5_attr("hessian", "skipped_params", 3), "fig5",
     ("'skipped_params'",)),
    ("partial-string", h5_attr("hessian", "partial", "yes"), "fig5", ("'partial'", "boolean")),
    ("engine-number", h5_attr("hessian", "engine", 7), "fig5", ("'engine'", "string")),
    ("trace-probes-negative", h5_attr("hessian/trace", "probes", -3), "fig5", ("'probes'",)),
    ("per-layer-string", h5_attr("hessian/per_layer/net.1.weight", "lambda_max", "x"), "layers",
     ("'lambda_max'",)),
    ("per-layer-dataset", h5_swap("hessian/per_layer/net.1.weight", 1.0), "layers",
     ("net.1.weight", "is a dataset")),
    ("external-link", lambda f: f.__setitem__("ext", h5py.ExternalLink("other.h5", "/x")),
     "fig5", ("/ext", "external link")),
    ("soft-link-loop", lambda f: f.__setitem__("loop", h5py.SoftLink("/loop")), "fig5",
     ("/loop", "soft link")),
    ("soft-link-inside", h5_swap("hessian/eigenvalues", h5py.SoftLink("/hessian/residuals")),
     "fig5", ("/hessian/eigenvalues", "soft link")),
    ("hard-link-cycle", h5_cycle, "fig5", ("/hessian/density/back", "second name")),
    ("schema-array", h5_attr("/", "schema", np.array([1, 2])), "fig5",
     ("not a landscape results file",)),
    ("schema-version-string", h5_attr("/", "schema_version", "1"), "fig5", ("schema version",)),
    ("checkpoint-sha-number", h5_attr("/", "checkpoint_sha256", 5), "fig5",
     ("'checkpoint_sha256'",)),
    ("scan-loss-string", h5_swap(f"{S1}/loss", "abc"), "fig6", ("/loss", "dtype")),
    ("scan-x-2d", h5_swap(f"{S1}/x", np.zeros((3, 3))), "fig6", ("/x", "shape (3, 3)")),
    ("scan-x-nan", h5_fill(f"{S1}/x", NAN), "fig6", ("/x", "NaN")),
    ("scan-dim-string", h5_attr(S1, "dim", "x"), "fig6", ("'dim'", "integer")),
    ("scan-dim-3", h5_attr(S1, "dim", 3), "fig6", ("'dim'", "1 or 2")),
    ("scan-nx-wrong", h5_attr(S1, "nx", 7), "fig6", ("/x", "shape (7,)")),
    ("scan-xmin-nan", h5_attr(S1, "xmin", NAN), "fig6", ("'xmin'", "finite")),
    ("scan-to-number", h5_attr(S1, "to", 5), "fig6", ("'to'", "strings")),
    ("scan-eigenvalues-string", h5_attr(S1, "eigenvalues", "x"), "fig6", ("'eigenvalues'",)),
    ("scan-accuracy-group", h5_group(f"{S1}/accuracy"), "fig6", ("/accuracy", "is a group")),
    ("scan-y-missing", h5_drop(f"{S2}/y"), "contour", ("/y", "missing")),
    ("scan-loss-flat", h5_swap(f"{S2}/loss", np.zeros(9)), "contour", ("/loss", "shape (9,)")),
    ("scan-directions-dataset", h5_swap(f"{S1}/directions", 1.0), None,
     ("/directions", "is a dataset")),
    ("scan-direction-strings", h5_swap(f"{S1}/directions/x/net.1.weight", "x"), None,
     ("net.1.weight", "dtype")),
    ("audit-settings-not-json", h5_bad_audit(settings="{bad"), None, ("/audit", "JSON")),
    ("audit-hessian-nan", h5_bad_audit(eigenvalues=NAN), None, ("/audit/hessian/eigenvalues",)),
]  # fmt: skip

RESULTS_CASES = [
    case
    for key, edit, figure, words in MUTATIONS
    for case in (
        *([Case(f"plot-{figure}-{key}", ["plot", "r.h5", "--figure", figure], ("r.h5", *words),
                setup=crafted_h5(edit))] if figure else []),
        Case(f"hessian-out-{key}", ["hessian", "ok.pt", "--out", "r.h5", *HFAST],
             ("r.h5", *words), setup=crafted_h5(edit)),
        Case(f"scan-out-{key}", ["scan", "ok.pt", "--out", "r.h5", *FAST, "--points", "3"],
             ("r.h5", *words), setup=crafted_h5(edit)),
        Case(f"audit-results-{key}", ["audit", "ok.pt", *FAST], ("ok.h5", *words),
             setup=crafted_h5(edit, "ok.h5")),
    )
]  # fmt: skip


def _sparse(ck: dict) -> None:
    key = next(iter(ck["state_dict"]))
    ck["state_dict"][key] = ck["state_dict"][key].to_sparse()


def _meta(ck: dict) -> None:
    key = next(iter(ck["state_dict"]))
    ck["state_dict"][key] = torch.empty_like(ck["state_dict"][key], device="meta")


def _complex(ck: dict) -> None:
    key = next(iter(ck["state_dict"]))
    ck["state_dict"][key] = ck["state_dict"][key].to(torch.complex64)


def _opt_state(edit: Callable[[dict], None]) -> Callable[[dict], None]:
    """An edit of the first parameter's optimizer state."""

    def apply(ck: dict) -> None:
        edit(next(iter(ck["optimizer"]["state_dict"]["state"].values())))

    return apply


def _set(path: tuple, value) -> Callable[[dict], None]:
    def edit(ck: dict) -> None:
        entry = ck
        for key in path[:-1]:
            entry = entry[key]
        entry[path[-1]] = value

    return edit


def _pop(path: tuple) -> Callable[[dict], None]:
    def edit(ck: dict) -> None:
        entry = ck
        for key in path[:-1]:
            entry = entry[key]
        del entry[path[-1]]

    return edit


RESUME = ["train", "--resume", "bad.pt", "--epochs", "2", "--out", "next.pt"]
MEASURE = {
    "hessian": ["hessian", "bad.pt", *HFAST, "--out", "bad.h5"],
    "scan": ["scan", "bad.pt", *FAST, "--points", "3", "--out", "bad.h5"],
    "audit": ["audit", "bad.pt", *FAST],
}
# (id, edit, the commands that read it, key words)
CHECKPOINT_EDITS = [
    ("no-state-dict", lambda ck: ck.pop("state_dict"), ("hessian", "scan", "audit", "resume"),
     ("'state_dict'",)),
    ("list-state-dict", _set(("state_dict",), [1, 2]), ("hessian", "scan", "audit", "resume"),
     ("'state_dict'", "list")),
    ("sparse-weight", _sparse, ("hessian", "scan", "audit", "resume"), ("sparse",)),
    ("meta-weight", _meta, ("hessian", "resume"), ("meta device",)),
    ("complex-weight", _complex, ("hessian", "resume"), ("complex",)),
    ("wide-model", lambda ck: ck["model"]["kwargs"].update(hidden=[300000]),
     ("hessian", "scan", "audit"), ("does not fit", "300000")),
    ("many-classes", lambda ck: ck["model"]["kwargs"].update(num_classes=40_000_000),
     ("hessian",), ("does not fit", "40000000")),
    ("dataset-list", _set(("dataset",), [1]), ("hessian",), ("'dataset'",)),
    ("loss-number", _set(("loss",), 3), ("hessian",), ("'loss'",)),
    ("hparams-string", _set(("optimizer", "hparams", "weight_decay"), "abc"), ("resume",),
     ("'weight_decay'", "finite number")),
    ("lr-string", _set(("optimizer", "hparams", "lr"), "abc"), ("resume",), ("'lr'",)),
    ("lr-negative", _set(("optimizer", "hparams", "lr"), -1.0), ("resume",), ("'lr'", "> 0")),
    ("lr-nan", _set(("optimizer", "hparams", "lr"), math.nan), ("resume",), ("'lr'",)),
    ("optimizer-state-shape", _opt_state(lambda st: st.update(exp_avg=torch.zeros(7))),
     ("resume",), ("'exp_avg'", "shape (7,)")),
    ("optimizer-state-nan", _opt_state(lambda st: st["exp_avg_sq"].fill_(math.nan)),
     ("resume",), ("'exp_avg_sq'", "NaN")),
    ("optimizer-state-step-string", _opt_state(lambda st: st.update(step="x")), ("resume",),
     ("'step'", "one finite number")),
    ("optimizer-state-step-negative",
     _opt_state(lambda st: st.update(step=torch.tensor(-1.0))), ("resume",), ("'step'", ">= 0")),
    ("optimizer-state-step-fraction",
     _opt_state(lambda st: st.update(step=torch.tensor(2.5))), ("resume",), ("'step'",)),
    ("optimizer-state-of-sgd", _opt_state(lambda st: (st.clear(), st.update(momentum_buffer=None))),
     ("resume",), ("does not match its state",)),
    ("optimizer-name-other", _set(("optimizer", "name"), "sgd"), ("resume",),
     ("does not match its state",)),
    ("config-optimizer-other", _set(("train", "config", "optimizer"), "sgd"), ("resume",),
     ("does not match its state",)),
    ("optimizer-state-list", _set(("optimizer", "state_dict", "state"), [1]), ("resume",),
     ("optimizer state",)),
    ("optimizer-groups-two", lambda ck: ck["optimizer"]["state_dict"]["param_groups"].append(
        dict(ck["optimizer"]["state_dict"]["param_groups"][0])), ("resume",),
     ("2 parameter groups",)),
    ("optimizer-betas-string", lambda ck: ck["optimizer"]["state_dict"]["param_groups"][0]
     .update(betas="ab"), ("resume",), ("betas",)),
    ("history-string", _set(("train", "history"), "abc"), ("resume",), ("'history'",)),
    ("history-series-string", _set(("train", "history", "train_loss"), "abc"), ("resume",),
     ("'train_loss'", "list of numbers")),
    ("history-series-missing", _pop(("train", "history", "lr")), ("resume",),
     ("'lr'", "missing")),
    ("epoch-string", _set(("train", "epoch"), "x"), ("resume",), ("'epoch'",)),
    ("epoch-fraction", _set(("train", "epoch"), 0.5), ("resume",), ("'epoch'", "integer")),
    ("step-negative", _set(("train", "step"), -3), ("resume",), ("'step'",)),
    ("train-missing", lambda ck: ck.pop("train"), ("resume",), ("'train'",)),
    ("seed-huge", _set(("train", "config", "seed"), 2**70), ("resume",), ("seed=", "integer")),
    ("seed-negative", _set(("train", "config", "seed"), -5), ("resume",), ("seed=-5",)),
    ("train-seed-huge", _set(("train", "seed"), 2**70), ("resume",), ("'seed'",)),
    ("config-batch-size-zero", _set(("train", "config", "batch_size"), 0), ("resume",),
     ("batch_size",)),
]  # fmt: skip

CHECKPOINT_CASES = [
    Case(f"{cmd}-ckpt-{key}", RESUME if cmd == "resume" else MEASURE[cmd], ("bad.pt", *words),
         setup=edited_ckpt(edit))
    for key, edit, commands, words in CHECKPOINT_EDITS
    for cmd in commands
]  # fmt: skip

HUGE = str(10**11)
OPTION_CASES = [
    *[
        Case(f"{cmd}-option{'-'.join(extra)}", [*base_args, *extra], (flag,))
        for cmd, base_args in (
            ("hessian", ["hessian", "ok.pt", *HFAST, "--out", "new.h5"]),
            ("scan", ["scan", "ok.pt", *FAST, "--points", "3", "--out", "new.h5"]),
            ("audit", ["audit", "ok.pt", *FAST]),
            ("train", ["train", "--model", "mlp", "--epochs", "1", "--out", "new.pt"]),
        )
        for extra, flag in (
            (["--seed", str(2**63)], "--seed"),
            (["--seed", "-1"], "--seed"),
            (["--device", "meta"], "device"),
            (["--device", "mps"], "mps"),
            (["--device", "banana"], "device"),
            (["--device", "cpu:3"], "device"),
        )
    ],
    *[
        Case(f"hessian-option{extra[0]}-{extra[1]}", ["hessian", "ok.pt", *FAST, *extra,
             "--out", "new.h5"], (extra[0],))
        for extra in (
            ["--trace-probes", HUGE], ["--density-probes", HUGE], ["--lanczos-steps", HUGE],
            ["--max-steps", HUGE], ["--top-k", HUGE], ["--tol", "inf"], ["--tol", "nan"],
            ["--trace-rtol", "nan"], ["--density-sigma", "inf"], ["--density-tol", "inf"],
            ["--samples", "-1"], ["--batch-size", "0"], ["--batch-size", str(2**40)],
        )
    ],
    *[
        Case(f"scan-option{extra[0]}-{extra[1]}", ["scan", "ok.pt", *FAST, *extra,
             "--out", "new.h5"], (extra[0],))
        for extra in (
            ["--points", HUGE], ["--ypoints", "0", "--dim", "2"], ["--range", "nan", "1"],
            ["--range", "-inf", "1"], ["--fold-every", "inf"],
            ["--yrange", "0", "nan", "--dim", "2"],
        )
    ],
    *[
        Case(f"audit-option{extra[0]}-{extra[1]}", ["audit", "ok.pt", *FAST, *extra], (extra[0],))
        for extra in (
            ["--trace-probes", HUGE], ["--lanczos-steps", "0"], ["--epsilon", "inf"],
            ["--rho", "nan"], ["--tol", "nan"], ["--density-probes", "-2"],
        )
    ],
    *[
        Case(f"train-option{extra[0]}-{extra[1]}", ["train", "--model", "mlp", *extra,
             "--out", "new.pt"], (extra[0],))
        for extra in (
            ["--epochs", str(10**9)], ["--lr", "inf"], ["--lr", "nan"], ["--weight-decay", "nan"],
            ["--warmup-steps", "-1"], ["--save-every", "-1"], ["--batch-size", "0"],
            ["--momentum", "1"], ["--switch-rate", "inf"],
        )
    ],
    *[
        Case(f"plot-option{extra[0]}-{extra[1]}", ["plot", "full.h5", "--figure", "contour",
             *extra, "--out", "c.png"], words, setup=crafted_h5(lambda f: None, "full.h5"))
        for extra, words in (
            (["--vmin", "nan"], ("--vmin", "finite")),
            (["--vmax", "inf"], ("--vmax", "finite")),
            (["--levels", HUGE], ("--levels",)),
            (["--dpi", "0"], ("--dpi",)),
            (["--dpi", "100000"], ("--dpi",)),
            (["--size", "1000", "1000", "--dpi", "2000"], ("pixels", "--dpi")),
            (["--size", "100", "100", "--dpi", "2000"], ("pixels", "--dpi")),
            (["--size", "nan", "4"], ("--size",)),
            (["--size", "1e9", "4"], ("--size",)),
        )
    ],
    Case("plot-fig6-dpi-too-large-for-default-size",
         ["plot", "full.h5", "--figure", "fig6", "--dpi", "9000", "--out", "c.png"],
         ("pixels",), setup=crafted_h5(lambda f: None, "full.h5")),
    Case("root-threads-huge", ["--threads", "100000", "hessian", "ok.pt", *HFAST], ("--threads",)),
    Case("demo-seed-negative", ["demo", "--quick", "--seed", "-1", "--out", "d"], ("--seed",)),
    # memory guards: every option-sized buffer is counted before it is allocated
    Case("hessian-per-layer-probes-past-memory",
         ["hessian", "ok.pt", *FAST, "--top-k", "0", "--trace-probes", "0", "--density-probes",
          "0", "--per-layer", "--out", "new.h5"], ("per-layer",),
         extra={"env": {"LANDSCAPE_MEMORY_LIMIT": "100000"}}),
    Case("scan-points-past-memory",
         ["scan", "ok.pt", *FAST, "--dim", "2", "--points", "100000", "--out", "new.h5"],
         ("lower --points",), extra=SMALL_MEMORY),
    Case("train-model-past-memory",
         ["train", "--model", "mlp", "--model-option", "hidden=[2000000]", "--epochs", "1",
          "--out", "new.pt"], ("lower --model-option",), extra=SMALL_MEMORY),
]  # fmt: skip


def image_folder(edit: Callable[[Path], None]) -> Callable[[Path, Path], None]:
    """An image folder ``imgs`` of two classes of three 8×8 PNGs, then ``edit``-ed."""

    def setup(d: Path, base: Path) -> None:
        from PIL import Image

        for cls in ("a", "b"):
            (d / "imgs" / cls).mkdir(parents=True)
            for i in range(3):
                Image.new("RGB", (8, 8), (40 * i, 80, 120)).save(d / "imgs" / cls / f"{i}.png")
        edit(d / "imgs")

    return setup


def _truncated(p: Path) -> None:
    p.write_bytes(p.read_bytes()[:40])


def _all_1x1(folder: Path) -> None:
    from PIL import Image

    for p in folder.rglob("*.png"):
        Image.new("RGB", (1, 1)).save(p)


def _truncated_jpeg(folder: Path) -> None:
    from PIL import Image

    target = folder / "b" / "2.jpg"
    Image.new("RGB", (8, 8), (1, 2, 3)).save(target, quality=90)
    target.write_bytes(target.read_bytes()[:-60])
    (folder / "b" / "2.png").unlink()


TRAIN_IMAGES = ["train", "--dataset", "imagefolder:imgs", "--epochs", "1", "--out", "m.pt"]
IMAGE_CASES = [
    Case("train-image-truncated-png", [*TRAIN_IMAGES, "--model", "mlp"],
         ("cannot read image", "2.png"), setup=image_folder(lambda f: _truncated(f / "b/2.png"))),
    Case("train-image-text-file", [*TRAIN_IMAGES, "--model", "mlp"],
         ("cannot read image", "2.png", "not an image"),
         setup=image_folder(lambda f: (f / "b/2.png").write_text("hello"))),
    Case("train-image-empty-file", [*TRAIN_IMAGES, "--model", "mlp"],
         ("cannot read image", "1.png"),
         setup=image_folder(lambda f: (f / "b/1.png").write_bytes(b""))),
    Case("train-image-first-damaged", [*TRAIN_IMAGES, "--model", "mlp"],
         ("cannot read image", "0.png"),
         setup=image_folder(lambda f: (f / "a/0.png").write_bytes(b"\x89PNG\r\n\x1a\nxx"))),
    Case("train-image-truncated-jpeg", [*TRAIN_IMAGES, "--model", "mlp"],
         ("cannot read image", "2.jpg"), setup=image_folder(_truncated_jpeg)),
    Case("train-images-1x1-cnn", [*TRAIN_IMAGES, "--model", "cnn"],
         ("cannot take the inputs", "(3, 1, 1)"), setup=image_folder(_all_1x1)),
]  # fmt: skip

NAME_CASES = [
    *[
        Case(f"scan-name-{key}", ["scan", "ok.pt", *FAST, "--points", "3", "--name", name,
             "--out", "new.h5"], ("--name", *words))
        for key, name, words in (
            ("slash", "a/b", ("'/'",)),
            ("empty", "", ("empty",)),
            ("dot", ".", ("'.'",)),
            ("dotdot", "..", ("'.'",)),
            ("space", " x", ("space",)),
            ("tab", "a\tb", ("control character",)),
            ("long", "x" * 201, ("200 characters",)),
        )
    ],
    Case("scan-name-slash-into-existing", ["scan", "ok.pt", *FAST, "--points", "3", "--name",
         "1d/random", "--out", "r.h5"], ("--name", "'/'"), setup=crafted_h5(lambda f: None)),
    # a scan named a/b by an earlier landscape: read by its name, never called damaged
    Case("plot-nested-scan-name", ["plot", "r.h5", "--figure", "fig6"], ("fig6.png",), code=0,
         setup=crafted_h5(lambda f: (f.create_group("scan/a"), f.move(S1, "scan/a/b")))),
    Case("plot-nested-scan-by-name", ["plot", "r.h5", "--figure", "fig6", "--name", "a/b"],
         ("fig6.png",), code=0,
         setup=crafted_h5(lambda f: (f.create_group("scan/a"), f.move(S1, "scan/a/b")))),
]  # fmt: skip


def _named_ckpt(name: str) -> Callable[[Path, Path], None]:
    def setup(d: Path, base: Path) -> None:
        copy_ok(d, base)
        (d / name).write_bytes((base / "ok.pt").read_bytes())

    return setup


MATH = r"$\foo$"
TEXT_CASES = [
    Case("plot-labels-mathtext", ["plot", "full.h5", "--figure", "fig5", "--labels", MATH],
         ("fig5.png",), code=0, setup=crafted_h5(lambda f: None, "full.h5")),
    Case("plot-labels-underscore", ["plot", "full.h5", "--figure", "fig6", "--labels", "_x"],
         ("fig6.png",), code=0, setup=crafted_h5(lambda f: None, "full.h5")),
    Case("plot-file-label-mathtext", ["plot", "r.h5", "--figure", "fig5", "--figure", "fig6",
         "--figure", "contour"], ("fig5.png", "fig6.png", "contour.png"), code=0,
         setup=crafted_h5(h5_attr("/", "label", MATH))),
    Case("plot-scan-name-mathtext", ["plot", "r.h5", "--figure", "contour"], ("contour.png",),
         code=0, setup=crafted_h5(h5_move(S2, "scan/" + MATH))),
    Case("plot-layer-name-mathtext", ["plot", "r.h5", "--figure", "layers"], ("layers.png",),
         code=0, setup=crafted_h5(h5_move("hessian/per_layer/net.1.weight",
                                          "hessian/per_layer/" + MATH))),
    Case("plot-measured-on-mathtext", ["plot", "r.h5", "full.h5", "--figure", "fig5"],
         ("fig5.png",), code=0,
         setup=both(crafted_h5(lambda f: None, "full.h5"),
                    crafted_h5(h5_attr("hessian", "split", MATH)))),
    Case("hessian-out-markup", ["hessian", "ok.pt", *HFAST, "--out", "runs[/]/r.h5"],
         ("runs[/]/r.h5",), code=0),
    Case("scan-out-markup", ["scan", "ok.pt", *FAST, "--points", "3", "--out", "runs[/]/s.h5"],
         ("runs[/]/s.h5",), code=0,
         setup=both(copy_ok, lambda d, base: (d / "runs[/]").mkdir(parents=True))),
    Case("train-out-markup", ["train", "--model", "mlp", "--model-option", "hidden=[4]",
         "--epochs", "1", "--out", "runs[/]/m.pt"], ("runs[/]/m.pt",), code=0),
    # (the table's checkpoint column is cut to the terminal's width: the title is checked)
    Case("audit-checkpoint-markup", ["audit", "[red]x:y:.pt", *FAST, "--density-probes", "0"],
         ("flatness audit",), code=0, setup=_named_ckpt("[red]x:y:.pt")),
    Case("audit-report-mathtext", ["audit", MATH + ".pt", *FAST, "--report", "r.md"],
         ("flatness audit",), code=0, setup=_named_ckpt(MATH + ".pt")),
]  # fmt: skip


def _unfinished(edit: Callable[[h5py.File], None]) -> Callable[[h5py.File], None]:
    """The 1-D scan with its middle point not computed yet, then ``edit``."""

    def apply(f: h5py.File) -> None:
        f[f"{S1}/loss"][1] = math.nan
        edit(f)

    return apply


# a scan resumes on the directions it stored: they must fit the model (names and shapes)
RESUME_CASES = [
    Case(f"scan-resume-{key}", ["scan", "ok.pt", *FAST, "--points", "3", "--out", "r.h5"],
         ("r.h5", "do not fit the model", *words), setup=crafted_h5(_unfinished(edit)))
    for key, edit, words in (
        ("direction-reshaped", h5_swap(f"{S1}/directions/x/net.1.weight", np.zeros((2, 128))),
         ("net.1.weight",)),
        ("direction-missing", h5_drop(f"{S1}/directions/x/net.3.bias"), ("net.3.bias",)),
        ("direction-extra", h5_swap(f"{S1}/directions/x/other", np.zeros(3)), ("other",)),
    )
]  # fmt: skip

CASES += RESULTS_CASES + CHECKPOINT_CASES + OPTION_CASES + IMAGE_CASES + NAME_CASES + TEXT_CASES
CASES += RESUME_CASES


def _settings(**changes) -> Callable[[h5py.File], None]:
    """``/hessian``'s settings JSON with ``changes``: valid JSON, values of the wrong type."""

    def edit(f: h5py.File) -> None:
        settings = json.loads(f["hessian"].attrs["settings"])
        f["hessian"].attrs["settings"] = json.dumps({**settings, **changes})

    return edit


# an audit that would reuse /hessian reads its settings' values: wrong types are not reused
CASES += [
    Case(f"audit-reuse-settings-{key}-{kind}", ["audit", "ok.pt", *FAST, "--top-k", "2",
         "--trace-probes", "4", "--density-probes", "0", "--json"], ('"hessian_source"',),
         code=0, setup=crafted_h5(_settings(**{key: value}), "ok.h5"), writes=("ok.h5",))
    for key, kind, value in (("tol", "string", "abc"), ("max_steps", "null", None),
                             ("tol", "list", [1]))
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
        if case.code == 0 and path.name in case.writes:
            continue
        assert path in after, f"{path.name} was removed"
        assert after[path] == data, f"{path.name} was changed"
    assert not (d / MARK).exists(), "code from a file ran"


@pytest.mark.parametrize("command", ["hessian", "resume"])
def test_a_model_the_weights_do_not_fit_is_never_built(command, base, tmp_path, monkeypatch):
    """A small checkpoint declaring a huge width is refused on the meta device: the real model,
    which would take the memory, is never built (and a checkpoint that fits still is)."""
    import landscape_cli.models as models

    real, built = models.build_model, []

    def spy(*args, **kwargs):
        if torch.empty(0).device.type != "meta":  # not under `with torch.device("meta")`
            built.append(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(models, "build_model", spy)
    monkeypatch.chdir(tmp_path)

    def wide(ck: dict) -> None:  # the model's spec, and the training config --resume builds
        ck["model"]["kwargs"].update(hidden=[300000])
        ck["train"]["config"]["model_options"] = {"hidden": [300000]}

    edited_ckpt(wide)(tmp_path, base)
    args = {
        "hessian": ["hessian", "bad.pt", *HFAST, "--out", "x.h5"],
        "resume": ["train", "--resume", "bad.pt", "--epochs", "2", "--out", "next.pt"],
    }[command]
    result = runner.invoke(app, args)
    assert result.exit_code == 2 and "does not fit" in result.stderr, result.output
    assert built == []
    if command == "resume":
        result = runner.invoke(app, ["train", "--resume", str(base / "ok.pt"), "--epochs", "2",
                                     "--out", "next.pt"])  # fmt: skip
    else:
        result = runner.invoke(app, ["hessian", str(base / "ok.pt"), *HFAST, "--out", "x.h5"])
    assert result.exit_code == 0, result.output
    assert len(built) == 1, built


def test_user_strings_reach_a_figure_as_they_are(base):
    """Labels, file labels, scan and parameter names: every text a figure draws from a user or
    a file is shown as written, never typeset as mathtext, and a leading '_' stays in the legend."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.cbook import is_math_text
    from matplotlib.text import Text

    from landscape_cli import plotting as pl
    from landscape_cli.results import read_hessian, read_scan

    h = read_hessian(base / "full.h5")
    s1, s2 = (read_scan(base / "full.h5", n) for n in ("1d-random", "2d-random"))
    s2 = dataclasses.replace(s2, name=r"$\beta$ scan")
    labels = [r"$\alpha$ run", "_hidden"]
    figures = [
        pl.draw_spectra([h, h], labels),
        pl.layers([h, h], labels),
        pl.draw_loss_curves([s1, s1], labels),
        pl.contour(s2).figure,
    ]
    for fig in figures:
        FigureCanvasAgg(fig).draw()  # mathtext would be parsed (and fail) here
        texts = [t.get_text() for t in fig.findobj(Text) if t.get_text()]
        mine = [t for t in texts if not t.startswith(r"$\mathdefault")]  # matplotlib's ticks
        assert not any(is_math_text(t) for t in mine), [t for t in mine if is_math_text(t)]
        shown = " ".join(t.replace(r"\$", "$") for t in mine)
        if fig is figures[-1]:
            assert r"$\beta$ scan" in shown
        else:
            assert r"$\alpha$ run" in shown and "\u200b_hidden" in shown, shown
