"""A seeded fuzzer over the files the reading commands take: results files and checkpoints.

Each case copies a real file (a results file holding a whole ``/hessian`` and a 1-D and a 2-D
scan, or a trained landscape checkpoint), changes one thing in it at random (a type swap, a
shape, NaN or infinity, a group where a dataset was, a soft, external or looping link, a missing
entry, a sparse or meta tensor), runs one command that reads it, in-process, and checks the
contract: exit 0 or 2 and never a traceback; an error is one ``error: ...`` line; the inputs are
byte-identical afterwards (a results file the command was told to write may change only when the
command succeeds, and then it must still pass the check every command runs before computing);
a link in a results file is always refused. Case ``i`` draws from ``random.Random(SEED + i)``,
so a failure is reproduced by its id alone.
"""

from __future__ import annotations

import math
import random
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from cases import FAST, FULL, HFAST, runner

from landscape_cli.commands import app
from landscape_cli.results import check_target
from landscape_cli.training import TrainConfig

SEED = 2222
RESULTS_CASES = 70
CHECKPOINT_CASES = 50


@pytest.fixture(scope="module")
def base(tmp_path_factory, trained_checkpoint) -> Path:
    """``ok.pt`` (a tiny trained MLP) and ``full.h5`` (every group the readers take)."""
    d = tmp_path_factory.mktemp("fuzz")
    config = TrainConfig(model="mlp", model_options={"hidden": [4]}, epochs=1)
    trained_checkpoint(config, into=d, name="ok.pt")
    full = str(d / "full.h5")
    for args in (
        ["hessian", str(d / "ok.pt"), "--out", full, *FULL],
        ["scan", str(d / "ok.pt"), "--out", full, *FAST, "--points", "3"],
        ["scan", str(d / "ok.pt"), "--out", full, *FAST, "--points", "3", "--dim", "2"],
    ):
        result = runner.invoke(app, args)
        assert result.exit_code == 0, result.output
    return d


def _snapshot(d: Path) -> dict[Path, bytes]:
    return {p: p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}


def _check_contract(result, before: dict[Path, bytes], d: Path, may_change: set[Path]) -> None:
    """Exit 0 or 2, no traceback, one error line, inputs unchanged (``may_change`` on success)."""
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception  # a traceback: the contract is broken
    assert result.exit_code in (0, 2), result.output
    assert "Traceback" not in result.output
    if result.exit_code == 2:
        assert result.stderr.startswith("error: "), result.stderr
        assert result.stderr.count("\n") == 1, result.stderr
    after = _snapshot(d)
    for path, data in before.items():
        if result.exit_code == 0 and path in may_change:
            continue
        assert after.get(path) == data, f"{path.name} was changed or removed"


# ------------------------------------------------------------------------------------------------
# results files


def _targets(path: Path) -> tuple[list[tuple[str, str]], list[str], list[str]]:
    """Every attribute ``(object, name)``, every dataset and every group of ``path``."""
    attrs, datasets, groups = [], [], []
    with h5py.File(path, "r") as f:
        attrs += [("/", key) for key in f.attrs]

        def visit(name: str, obj) -> None:
            attrs.extend((name, key) for key in obj.attrs)
            (datasets if isinstance(obj, h5py.Dataset) else groups).append(name)

        f.visititems(visit)
    return sorted(attrs), sorted(datasets), sorted(groups)


_ATTR_VALUES = [
    "abc",
    "{not json",
    1.5,
    -7,
    2**62,
    math.nan,
    math.inf,
    True,
    np.arange(3),
    np.array([b"a", b"b"]),
    np.zeros((2, 2)),
]
_LINKS = ("soft-link", "soft-loop", "external-link", "hard-link-cycle")


def _mutate_results(f: h5py.File, rng: random.Random, targets) -> str:
    """Apply one random change to the open file; returns what it did (for the failure message)."""
    attrs, datasets, groups = targets
    kind = rng.choice(["attr", "attr", "attr", "dataset", "dataset", "group", "link"])
    if kind == "attr":
        obj, key = rng.choice(attrs)
        if rng.random() < 0.15:
            del f[obj].attrs[key]
            return f"delete attribute {key} of {obj}"
        value = rng.choice(_ATTR_VALUES)
        f[obj].attrs[key] = value
        return f"attribute {key} of {obj} = {value!r}"
    if kind == "dataset":
        path = rng.choice(datasets)
        old = f[path][()]
        how = rng.choice(["string", "group", "nan", "inf", "reshape", "truncate", "int", "drop"])
        if how in ("nan", "inf") and np.asarray(old).dtype.kind == "f" and np.size(old):
            f[path][...] = math.nan if how == "nan" else -math.inf
            return f"{how} in {path}"
        del f[path]
        if how == "group":
            f.create_group(path)
        elif how == "string":
            f[path] = "abc"
        elif how == "reshape":
            f[path] = np.reshape(np.asarray(old, dtype=np.float64), (1, *np.shape(old)))
        elif how == "truncate":
            f[path] = np.asarray(old).ravel()[:-1] if np.size(old) else np.zeros(3)
        elif how == "int":
            f[path] = np.asarray(np.nan_to_num(np.asarray(old, dtype=np.float64))).astype(int)
        return f"{how} {path}"
    if kind == "group":
        path = rng.choice(groups)
        how = rng.choice(["dataset", "drop", "empty"])
        if how == "empty":
            for member in list(f[path]):
                del f[path][member]
        else:
            del f[path]
            if how == "dataset":
                f[path] = 1.0
        return f"{how} group {path}"
    how = rng.choice(_LINKS)
    where = rng.choice([*datasets, *groups, "extra"])
    if how == "hard-link-cycle":
        owner = rng.choice(groups)
        f[f"{owner}/again"] = f[rng.choice(groups)] if rng.random() < 0.5 else f["/"]
        return f"hard link {owner}/again"
    if where in f:
        del f[where]
    if how == "soft-link":
        f[where] = h5py.SoftLink("/" + rng.choice(datasets))
    elif how == "soft-loop":
        f[where] = h5py.SoftLink("/" + where)
    else:
        f[where] = h5py.ExternalLink("elsewhere.h5", "/x")
    return f"{how} at {where}"


def _plot_figure(what: str) -> str:
    if "scan/2d" in what:
        return "contour"
    if "scan/1d" in what:
        return "fig6"
    if "per_layer" in what:
        return "layers"
    return "fig5"


@pytest.mark.parametrize("i", range(RESULTS_CASES))
def test_fuzz_results_file(i: int, base: Path, tmp_path, monkeypatch):
    rng = random.Random(SEED + i)
    d = tmp_path / "case"
    d.mkdir()
    monkeypatch.chdir(d)
    shutil.copyfile(base / "ok.pt", d / "ok.pt")
    command = rng.choice(["plot", "plot", "hessian", "scan", "audit"])
    name = "ok.h5" if command == "audit" else "r.h5"
    shutil.copyfile(base / "full.h5", d / name)
    with h5py.File(d / name, "r+") as f:
        what = _mutate_results(f, rng, _targets(base / "full.h5"))
    args = {
        "plot": ["plot", name, "--figure", _plot_figure(what), "--out", "fig.png"],
        "hessian": ["hessian", "ok.pt", "--out", name, *FULL],  # the stored options: recompute
        "scan": ["scan", "ok.pt", "--out", name, *FAST, "--points", "3"],
        "audit": ["audit", "ok.pt", *FAST, "--top-k", "1", "--trace-probes", "2",
                  "--density-probes", "0"],
    }[command]  # fmt: skip
    before = _snapshot(d)
    result = runner.invoke(app, args)
    writes = set() if command == "plot" else {d / name}
    try:
        _check_contract(result, before, d, writes)
        if what.split()[0] in (*_LINKS, "hard"):
            assert result.exit_code == 2, "a link in a results file was not refused"
        if result.exit_code == 0 and writes:
            check_target(d / name)  # what the command accepted and wrote still reads back
    except BaseException as exc:
        raise AssertionError(f"case {i}: {what}; {' '.join(args)}") from exc


# ------------------------------------------------------------------------------------------------
# checkpoints


def _paths(obj, prefix=()) -> list[tuple]:
    """Every entry path of a nested dict/list checkpoint (tensors are leaves)."""
    out = []
    if isinstance(obj, dict):
        items = obj.items()
    elif isinstance(obj, list):
        items = enumerate(obj)
    else:
        return out
    for key, value in items:
        out.append((*prefix, key))
        out += _paths(value, (*prefix, key))
    return out


def _swap(value, rng: random.Random):
    """A replacement of another type, shape or content for one checkpoint entry."""
    if torch.is_tensor(value) and value.numel() and rng.random() < 0.6:
        how = rng.choice(["sparse", "meta", "nan", "reshape", "wrong-size", "int", "complex"])
        if how == "sparse" and value.dim() >= 1:
            return value.to_sparse()
        if how == "meta":
            return torch.empty_like(value, device="meta")
        if how == "nan" and value.is_floating_point():
            return torch.full_like(value, math.nan)
        if how == "reshape":
            return value.reshape(-1)[None]
        if how == "int":
            return value.to(torch.int64)
        if how == "complex" and value.is_floating_point():
            return value.to(torch.complex64)
        return torch.zeros(7)
    return rng.choice(["abc", 1.5, -1, 2**70, math.nan, None, [], {}, [1, "x"], torch.ones(3)])


@pytest.mark.parametrize("i", range(CHECKPOINT_CASES))
def test_fuzz_checkpoint(i: int, base: Path, tmp_path, monkeypatch):
    rng = random.Random(SEED + 1000 + i)
    d = tmp_path / "case"
    d.mkdir()
    monkeypatch.chdir(d)
    ck = torch.load(base / "ok.pt", weights_only=True)
    path = rng.choice(_paths(ck))
    owner = ck
    for key in path[:-1]:
        owner = owner[key]
    if isinstance(owner, dict) and rng.random() < 0.2:
        del owner[path[-1]]
        what = f"delete {path}"
    else:
        owner[path[-1]] = _swap(owner[path[-1]], rng)
        what = f"{path} = {type(owner[path[-1]]).__name__}"
    torch.save(ck, d / "bad.pt")
    command = rng.choice(["hessian", "scan", "resume", "resume"])
    args = {
        "hessian": ["hessian", "bad.pt", "--out", "new.h5", *HFAST],
        "scan": ["scan", "bad.pt", "--out", "new.h5", *FAST, "--points", "3"],
        "resume": ["train", "--resume", "bad.pt", "--epochs", "2", "--out", "next.pt"],
    }[command]
    before = _snapshot(d)
    result = runner.invoke(app, args)
    try:
        _check_contract(result, before, d, set())
    except BaseException as exc:
        raise AssertionError(f"case {i}: {what}; {' '.join(args)}") from exc
