"""Library messages name parameters in backticks; the command layer renders them as flags."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
import torch
import typer
from cases import one_error_line, runner

import landscape_cli
from landscape_cli.commands import _common, app
from landscape_cli.commands._errors import FLAGS, NEGATABLE, cli_message, flag
from landscape_cli.errors import Interrupted, LandscapeError
from landscape_cli.losses import check_loss
from landscape_cli.training import TrainConfig


@pytest.mark.parametrize(
    ("text", "rendered"),
    [
        ("`epochs` must be >= 1, got 0", "--epochs must be >= 1, got 0"),
        ("raise `max_steps` or lower `top_k`", "raise --max-steps or lower --top-k"),
        ("pass `overwrite=True` to replace it", "pass --overwrite to replace it"),
        ("pass `trust=True` only if", "pass --trust-checkpoint only if"),
        ("pass `log=False`", "pass --no-log"),
        ("pass `loss='mse'` (regression)", "pass --loss mse (regression)"),
        ("`dataset='text:FILE'`", "--dataset text:FILE"),
        ("`name='my scan'`", "--name 'my scan'"),
        ("`top_k=5` exceeds", "--top-k 5 exceeds"),
        ("`lr=0.1`", "--lr 0.1"),
        ("`model_options={'num_classes': 10}`", "--model-option num_classes=10"),
        ("`model_options={'a': 1, 'b': [2]}`", "--model-option a=1 --model-option 'b=[2]'"),
        ("`text_columns=('q', 'a')`", "--text-column q --text-column a"),
        ("pass `root`", "pass --data-root"),
        ("`some_new_option` is unknown", "--some-new-option is unknown"),
        ("run `landscape hessian --per-layer` on it", "run `landscape hessian --per-layer` on it"),
        ("run `landscape scan` first", "run `landscape scan` first"),
        ("`a + b` and `x = 1`", "`a + b` and `x = 1`"),
        ("`x=f(1)` is no literal", "`x=f(1)` is no literal"),
        ("`overwrite=False` has no --no- flag", "`overwrite=False` has no --no- flag"),
        ("no backticks --at all", "no backticks --at all"),
        ("unpaired ` backtick", "unpaired ` backtick"),
    ],
)
def test_cli_message_renders_each_form(text, rendered):
    assert cli_message(text) == rendered


def _options() -> set[str]:
    """Every flag of every command (``--x`` and ``--no-x`` forms)."""
    commands = typer.main.get_command(app).commands  # type: ignore[attr-defined]
    assert {"train", "hessian", "scan", "audit", "plot"} <= set(commands)
    names: set[str] = set()
    for command in commands.values():
        for param in command.params:
            names.update(param.opts)
            names.update(getattr(param, "secondary_opts", ()))
    return names


def test_the_table_names_real_flags():
    options = _options()
    for name in FLAGS:
        assert flag(name) in options, name
    for name in NEGATABLE:
        assert flag(name) in options and "--no-" + flag(name)[2:] in options, name
    for name in ("epochs", "loss", "max_steps", "top_k", "overwrite", "data_root", "log"):
        assert flag(name) in options, name  # the mechanical rule


def test_library_error_names_the_parameter_not_the_flag():
    with pytest.raises(LandscapeError) as info:
        TrainConfig(model="mlp", epochs=0).validate()
    assert str(info.value) == "`epochs` must be >= 1, got 0"
    with pytest.raises(LandscapeError) as info:
        check_loss("hinge", torch.zeros(2, 3), torch.tensor([0, 1]))
    assert str(info.value).startswith("`loss` must be ce or mse") and "--" not in str(info.value)
    with pytest.raises(LandscapeError) as info:
        check_loss("ce", torch.zeros(2, 3), torch.randn(2, 3))
    assert "pass `loss='mse'`" in str(info.value) and "--" not in str(info.value)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"top_k": 0}, "`top_k` must be >= 1"),
        ({"top_k": 9, "max_steps": 3}, "`top_k=9` needs at least as many Lanczos steps"),
        ({"tau": 2.0}, "`tau` must be in [0, 1)"),
        ({"loss": "hinge"}, "`loss` must be ce or mse"),
    ],
)
def test_audit_job_checks_its_settings_before_loading(tmp_path, settings, message):
    from landscape_cli.audit import AuditSettings
    from landscape_cli.jobs import audit_job

    missing = tmp_path / "never-read.pt"  # refused before any file is opened
    with pytest.raises(LandscapeError) as info:
        audit_job([missing], AuditSettings(**settings))
    assert str(info.value).startswith(message) and "--" not in str(info.value)
    with pytest.raises(LandscapeError, match="give at least one checkpoint"):
        audit_job([], AuditSettings())


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--epochs", "0"], "error: --epochs must be >= 1, got 0\n"),
        (["--loss", "hinge"], "error: --loss must be ce or mse, got 'hinge'\n"),
    ],
)
def test_the_same_error_through_the_cli_names_the_flag(tmp_path, monkeypatch, args, expected):
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["train", "--model", "mlp", *args, "--out", "r.pt"])
    assert one_error_line(result) == expected
    assert not (tmp_path / "r.pt").exists()


def test_notes_from_the_library_name_flags(capsys):
    _common.note("PyHessian has no per-layer estimates: `per_layer=True` uses landscape's")
    assert capsys.readouterr().err == (
        "note: PyHessian has no per-layer estimates: --per-layer uses landscape's\n"
    )


_FLAG = re.compile(r"(^|[\s(\[,;:'\"])--[a-z]")


def _docstrings(tree: ast.AST) -> set[int]:
    """The ids of the string constants that are docstrings."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                found.add(id(body[0].value))
    return found


def test_library_strings_name_no_flags():
    """Outside ``commands/`` no string in the code (docstrings and comments aside) names a flag.

    Messages, notes and hints of the library name parameters in backticks instead (f-strings
    are checked by their constant parts).
    """
    package = Path(landscape_cli.__file__).parent
    offenders = []
    for path in sorted(package.rglob("*.py")):
        if "commands" in path.relative_to(package).parts:
            continue
        tree = ast.parse(path.read_text(), filename=str(path))
        skip = _docstrings(tree)
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Constant)
                and isinstance(node.value, str)
                and id(node) not in skip
                and _FLAG.search(node.value)
            ):
                offenders.append(f"{path.relative_to(package)}:{node.lineno}: {node.value!r}")
    assert not offenders, "\n".join(offenders)


@pytest.mark.parametrize(
    ("error", "code", "line"),
    [
        (Interrupted("kept in `out`"), 130, "error: interrupted: kept in --out\n"),
        (LandscapeError("pass `trust=True`"), 2, "error: pass --trust-checkpoint\n"),
    ],
)
def test_the_app_renders_errors_and_notes_of_the_library(monkeypatch, error, code, line):
    """What ``hessian_job`` raises, and the notes it passes to ``Source.on_note``, reach the
    terminal with flags."""
    from landscape_cli import jobs

    def job(checkpoint, settings, *, source, **kwargs):
        source.on_note("`engine='pyhessian'` is PyHessian's")
        raise error

    monkeypatch.setattr(jobs, "hessian_job", job)
    result = runner.invoke(app, ["hessian", "x.pt"])
    assert result.exit_code == code
    assert result.stderr == f"note: --engine pyhessian is PyHessian's\n{line}"


def test_the_renderer_examples_run():
    import doctest

    from landscape_cli.commands import _errors

    result = doctest.testmod(_errors, verbose=False)
    assert result.attempted > 0 and result.failed == 0


def test_one_line_collapses_a_message_and_names_an_empty_one():
    from landscape_cli.errors import one_line

    assert one_line(OSError("disk\n  full\tnow ")) == "disk full now"
    assert one_line(KeyError()) == "KeyError"  # an empty message: the exception's type
    assert one_line("a\nb") == "a b" and one_line("  ") == ""  # a string stays a string


#: Files still collapsing messages by hand: owned by the language-model work, to move to
#: `errors.one_line` once it has landed (issue 25.4).
_ONE_LINE_PENDING = {"losses.py", "models/hf.py", "data/text.py"}


def test_messages_are_collapsed_by_one_helper():
    """``errors.one_line`` is the one place that puts an exception's message on one line."""
    package = Path(landscape_cli.__file__).parent
    pattern = re.compile(r'" "\.join\(str\(')
    found = {
        path.relative_to(package).as_posix()
        for path in package.rglob("*.py")
        if pattern.search(path.read_text())
    }
    assert found <= {"errors.py", *_ONE_LINE_PENDING}, sorted(found)


@pytest.mark.parametrize(
    ("choices", "one_of", "message"),
    [
        (("ce", "mse"), False, "`loss` must be ce or mse, got 'hinge'"),
        (("a", "b", "c"), False, "`loss` must be a, b or c, got 'hinge'"),
        (("lanczos", "pyhessian"), True, "`loss` must be one of lanczos, pyhessian, got 'hinge'"),
        ({"ce": 0, "mse": 1}, False, "`loss` must be ce or mse, got 'hinge'"),  # a registry
    ],
)
def test_check_choice_words_every_choice_check_alike(choices, one_of, message):
    from landscape_cli.errors import check_choice

    check_choice("loss", "ce" if "ce" in choices else "a" if "a" in choices else "lanczos",
                 choices, one_of=one_of)  # fmt: skip
    with pytest.raises(LandscapeError) as info:
        check_choice("loss", "hinge", choices, one_of=one_of)
    assert str(info.value) == message
    assert cli_message(str(info.value)) == message.replace("`loss`", "--loss")


@pytest.mark.parametrize(
    ("job", "option", "value", "line"),
    [
        ("hessian", "--bn-mode", "sgd", "--bn-mode must be eval or train, got 'sgd'"),
        ("hessian", "--dtype", "half", "--dtype must be float32 or float64, got 'half'"),
        ("hessian", "--trace-method", "x", "--trace-method must be one of auto, hutchinson, "
         "hutch++, deflated, got 'x'"),
        ("hessian", "--loss", "hinge", "--loss must be ce or mse, got 'hinge'"),
        ("scan", "--norm", "x", "--norm must be one of filter, layer, none, got 'x'"),
        ("scan", "--ignore", "x", "--ignore must be biasbn or none, got 'x'"),
        ("scan", "--direction", "x", "--direction must be random, eigenvector or pca, got 'x'"),
        ("scan", "--split", "x", "--split must be train or test, got 'x'"),
        ("audit", "--loss", "hinge", "--loss must be ce or mse, got 'hinge'"),
        ("audit", "--rank-by", "x", "--rank-by must be one of lambda_max, trace, sharpness_1d, "
         "adaptive_sharpness, got 'x'"),
    ],
)  # fmt: skip
def test_choice_errors_through_the_cli(tmp_path, job, option, value, line):
    """Each command's choice options, refused before any file is read (the checkpoint is
    missing), with the one wording of ``check_choice``."""
    missing = str(tmp_path / "never-read.pt")
    result = runner.invoke(app, [job, missing, option, value])
    assert one_error_line(result) == f"error: {line}\n"
