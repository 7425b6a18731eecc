"""Tests for landscape_cli.specs: resolving module:attr specs, calling factories, and the specs a
checkpoint file may name (the built-in registries, unless the user allows more)."""

from __future__ import annotations

import math
import os
import sys
import textwrap
import uuid
from pathlib import Path

import pytest
from cases import FAST, runner

from landscape_cli.commands import app
from landscape_cli.errors import LandscapeError
from landscape_cli.specs import call_factory, is_spec, resolve_spec, split_spec


def _write_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, source: str) -> str:
    """Write ``source`` as a fresh module in tmp_path, importable for this test only."""
    name = f"specmod_{uuid.uuid4().hex[:10]}"
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(source))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, name, raising=False)
    return name


def test_resolves_stdlib_callables() -> None:
    assert resolve_spec("math:sqrt", "model") is math.sqrt
    assert resolve_spec("os.path:join", "model") is os.path.join
    # the attribute may be dotted, to reach a classmethod or a nested object
    assert resolve_spec("collections:OrderedDict.fromkeys", "model")(["a"]) == {"a": None}


def test_is_spec_and_split_spec() -> None:
    assert is_spec("pkg.mod:fn") and not is_spec("resnet18")
    assert split_spec(" pkg.mod : fn ", "model") == ("pkg.mod", "fn")


@pytest.mark.parametrize("spec", ["math", "math:", ":sqrt", "a:b:c", "ma th:x", "math:1x", "m.:f"])
def test_malformed_spec_is_one_clear_line(spec: str) -> None:
    with pytest.raises(LandscapeError) as info:
        resolve_spec(spec, "model")
    message = str(info.value)
    assert message.startswith(f"invalid `model` spec {spec!r}: expected module:attribute")
    assert "\n" not in message


def test_missing_module_message() -> None:
    with pytest.raises(LandscapeError) as info:
        resolve_spec("no_such_module_xq:build", "model")
    assert str(info.value) == (
        "cannot import module 'no_such_module_xq' for `model='no_such_module_xq:build'`: "
        "No module named 'no_such_module_xq'"
    )


def test_missing_submodule_message() -> None:
    with pytest.raises(LandscapeError) as info:
        resolve_spec("os.no_such_sub:f", "dataset")
    assert str(info.value).startswith("cannot import module 'os.no_such_sub' for `dataset=")


def test_missing_attribute_message() -> None:
    with pytest.raises(LandscapeError) as info:
        resolve_spec("math:nope", "model")
    assert str(info.value) == "module 'math' has no attribute 'nope' (`model='math:nope'`)"


def test_missing_nested_attribute_message() -> None:
    with pytest.raises(LandscapeError) as info:
        resolve_spec("collections:OrderedDict.nope", "model")
    assert str(info.value) == (
        "object 'collections:OrderedDict' has no attribute 'nope' "
        "(`model='collections:OrderedDict.nope'`)"
    )


def test_not_callable_message() -> None:
    with pytest.raises(LandscapeError) as info:
        resolve_spec("math:pi", "dataset")
    assert str(info.value) == "`dataset='math:pi'` is not callable (it is a float)"


def test_module_that_fails_on_import_gives_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = _write_module(tmp_path, monkeypatch, 'raise RuntimeError("boom\\nsecond line")\n')
    with pytest.raises(LandscapeError) as info:
        resolve_spec(f"{name}:f", "model")
    assert str(info.value) == (
        f"cannot import module {name!r} for `model='{name}:f'`: RuntimeError: boom second line"
    )
    assert isinstance(info.value.__cause__, RuntimeError)


def test_module_with_syntax_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    name = _write_module(tmp_path, monkeypatch, "def f(:\n    pass\n")
    with pytest.raises(LandscapeError) as info:
        resolve_spec(f"{name}:f", "model")
    assert "SyntaxError" in str(info.value)
    assert "\n" not in str(info.value)


def test_user_module_on_sys_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    name = _write_module(tmp_path, monkeypatch, "def build():\n    return 42\n")
    assert resolve_spec(f"{name}:build", "model")() == 42


def test_module_in_working_directory_is_found(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A console script does not have the working directory on sys.path; we add it on demand."""
    name = f"cwdmod_{uuid.uuid4().hex[:10]}"
    (tmp_path / f"{name}.py").write_text("def build():\n    return 'here'\n")
    monkeypatch.chdir(tmp_path)
    cwd = os.path.abspath(tmp_path)
    trimmed = [p for p in sys.path if p not in ("", ".") and os.path.abspath(p) != cwd]
    monkeypatch.setattr(sys, "path", trimmed)
    monkeypatch.delitem(sys.modules, name, raising=False)
    assert resolve_spec(f"{name}:build", "model")() == "here"
    assert cwd in [os.path.abspath(p) for p in sys.path]


def test_call_factory_passes_only_accepted_keywords() -> None:
    def factory(input_shape, num_classes=3):
        return (input_shape, num_classes)

    assert call_factory(factory, input_shape=(1, 2), num_classes=5, width=8) == ((1, 2), 5)


def test_call_factory_keyword_only_and_defaults() -> None:
    def factory(*, split="train", depth=2):
        return split, depth

    assert call_factory(factory, split="test", root=None) == ("test", 2)


def test_call_factory_passes_everything_to_var_keyword() -> None:
    def factory(input_shape, **options):
        return input_shape, options

    assert call_factory(factory, input_shape=(3,), num_classes=2, width=4) == (
        (3,),
        {"num_classes": 2, "width": 4},
    )


def test_call_factory_with_a_class_and_an_uninspectable_builtin() -> None:
    class Model:
        def __init__(self, num_classes: int) -> None:
            self.num_classes = num_classes

    assert call_factory(Model, num_classes=7, input_shape=(1,)).num_classes == 7
    # dict has no inspectable signature: every keyword argument goes through
    assert call_factory(dict, a=1, b=2) == {"a": 1, "b": 2}


def test_call_factory_missing_required_argument() -> None:
    def needs_depth(input_shape, depth):
        return depth

    with pytest.raises(LandscapeError) as info:
        call_factory(needs_depth, input_shape=(1,), num_classes=2)
    message = str(info.value)
    assert "needs_depth requires argument(s) 'depth'" in message
    assert "input_shape, num_classes" in message


def test_call_factory_wraps_user_errors_in_one_line() -> None:
    def broken(split):
        raise ValueError(f"no {split}\ndata")

    with pytest.raises(LandscapeError) as info:
        call_factory(broken, split="test")
    assert str(info.value).endswith("broken failed: ValueError: no test data")
    assert isinstance(info.value.__cause__, ValueError)


def test_call_factory_lets_landscape_errors_through() -> None:
    def refuses():
        raise LandscapeError("exactly this")

    with pytest.raises(LandscapeError, match=r"^exactly this$"):
        call_factory(refuses, split="train")


# -- specs stored in a checkpoint ------------------------------------------------------------------


def test_a_stored_factory_spec_runs_when_the_user_allows_it(tmp_path, monkeypatch):
    import sys

    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    (tmp_path / "userfactory10.py").write_text(
        "from torch import nn\n"
        "def build(input_shape, num_classes, hidden=4):\n"
        "    n = 1\n"
        "    for d in input_shape:\n"
        "        n *= d\n"
        "    return nn.Sequential(nn.Flatten(), nn.Linear(n, hidden), nn.ReLU(),\n"
        "                         nn.Linear(hidden, num_classes))\n"
    )
    spec = "userfactory10:build"
    args = ["train", "--model", spec, "--epochs", "1", "--out", "u.pt", "--json"]
    assert runner.invoke(app, args).exit_code == 0  # given on the command line: allowed
    sys.modules.pop("userfactory10", None)
    hess = ["hessian", "u.pt", *FAST, "--top-k", "1", "--trace-probes", "0"]
    hess += ["--density-probes", "0"]
    refused = runner.invoke(app, hess)
    assert refused.exit_code == 2 and spec in refused.stderr and "userfactory10" not in sys.modules
    assert runner.invoke(app, [*hess, "--trust-checkpoint"]).exit_code == 0
    assert runner.invoke(app, [*hess, "--model", spec]).exit_code == 0
    resume = ["train", "--resume", "u.pt", "--epochs", "2", "--out", "v.pt"]
    assert runner.invoke(app, resume).exit_code == 2
    assert runner.invoke(app, [*resume, "--trust-checkpoint"]).exit_code == 0
    assert runner.invoke(app, [*resume, "--model", spec, "--out", "w.pt"]).exit_code == 0


def test_file_specs_pass_only_builtin_registries_unless_allowed():
    from landscape_cli.specs import check_file_spec, check_plain

    for spec, kind in [("cnn", "model"), ("torchvision:resnet18", "model"),
                       ("digits", "dataset"), ("imagefolder:/data/x", "dataset")]:  # fmt: skip
        assert check_file_spec(spec, kind, "f.pt") == spec
    for spec, kind in [("os:system", "model"), ("imagefolder:x", "model"),
                       ("torchvision:x", "dataset"), ("pkg.mod:make", "dataset")]:  # fmt: skip
        with pytest.raises(LandscapeError, match="`trust=True`"):
            check_file_spec(spec, kind, "f.pt")
        assert check_file_spec(spec, kind, "f.pt", trust=True) == spec
        assert check_file_spec(spec, kind, "f.pt", given=(None, f" {spec} ")) == spec
    for bad in (None, 3, "", ["cnn"]):
        with pytest.raises(LandscapeError, match="invalid"):
            check_file_spec(bad, "model", "f.pt")
    with pytest.raises(LandscapeError, match=r"at a\[1\]\.b"):
        check_plain({"a": [1, {"b": object()}]}, "kwargs", "f.pt")
    with pytest.raises(LandscapeError, match="key"):
        check_plain({1: 2}, "kwargs", "f.pt")
