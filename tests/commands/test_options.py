"""Option groups: a command's dataclass-typed parameters are its options, one flag per field."""

from __future__ import annotations

import dataclasses
import inspect
from dataclasses import dataclass
from typing import Annotated

import pytest
import typer
import typer.main
from cases import runner

from landscape_cli.commands import _common as c
from landscape_cli.commands._app import app
from landscape_cli.commands._options import grouped


@dataclass(frozen=True)
class Size:
    width: Annotated[int, typer.Option(help="Width.")] = 3
    tall: Annotated[bool, typer.Option("--tall", help="Tall.")] = False


@dataclass(frozen=True)
class Wide(Size):
    width: Annotated[int, typer.Option(help="Width.")] = 7


def _run(command, *args: str):
    tiny = typer.Typer()
    tiny.command()(command)
    tiny.command("other")(lambda: None)  # two commands: typer then expects the command's name
    return runner.invoke(tiny, [command.__name__, *args])


def test_groups_are_rebuilt_from_their_fields_and_plain_options_stay() -> None:
    seen = {}

    @grouped
    def draw(name: Annotated[str, typer.Argument()], *, size: Size, color: str = "red") -> None:
        seen.update(name=name, size=size, color=color)

    result = _run(draw, "x", "--width", "5", "--tall", "--color", "blue")
    assert result.exit_code == 0, result.output
    assert seen == {"name": "x", "size": Size(width=5, tall=True), "color": "blue"}
    assert _run(draw, "y").exit_code == 0
    assert seen["size"] == Size()


def test_a_subclass_changes_a_default_for_one_command() -> None:
    seen = {}

    @grouped
    def draw(*, size: Wide) -> None:
        seen["size"] = size

    assert _run(draw).exit_code == 0
    assert seen["size"] == Wide(width=7)
    assert isinstance(seen["size"], Wide)


def test_a_name_declared_twice_is_refused() -> None:
    def draw(*, size: Size, width: int = 1) -> None: ...

    with pytest.raises(TypeError, match="width"):
        grouped(draw)


def _defaults(command: str) -> dict[str, object]:
    click_command = typer.main.get_command(app).commands[command]
    return {p.name: p.default for p in click_command.params}


def test_the_commands_share_the_source_options_with_their_own_defaults() -> None:
    fields = {"model", "dataset", "samples", "batch_size", "trust_checkpoint", "text_column"}
    hessian, scan, audit = (_defaults(name) for name in ("hessian", "scan", "audit"))
    for defaults in (hessian, scan, audit):
        assert fields <= defaults.keys()
    assert (hessian["samples"], hessian["batch_size"]) == (c.SourceOptions.samples, 128)
    assert (scan["samples"], scan["batch_size"]) == (0, 512)
    assert (audit["samples"], audit["batch_size"]) == (1024, 256)
    for group in ("source", "estimate", "run"):  # groups never leak as options
        assert group not in hessian


#: The options whose library field has another name (``SourceOptions.build`` maps them).
RENAMED = {
    "trust_checkpoint": "trust",
    "text_column": "text_columns",
    "model_option": "model_options",
}
#: What an option left out (None) stands for where the library's default is not "none given".
UNSET = {"text_column": ("text",)}  # SourceOptions.build: no --text-column reads the column "text"
#: Defaults known to differ: (command, option) -> how (aligning them would change what one side
#: measures). The test checks that they still differ, so that the list stays true.
DIFFERENT = {
    ("audit", "loss"): "no --loss is each checkpoint's own training loss (AuditSettings(loss='')); "
    "AuditSettings() itself measures cross-entropy",
    ("audit", "batch_size"): "audit reads batches of 256 (AuditSource); audit_job's default "
    "Source() keeps 128",
}


def _library_defaults(library: object) -> dict[str, object]:
    """The defaults of a dataclass's fields (or of an instance's values), or of a function's
    keyword parameters."""
    if dataclasses.is_dataclass(library):
        if not isinstance(library, type):  # an instance: its values
            return {f.name: getattr(library, f.name) for f in dataclasses.fields(library)}
        return {
            f.name: f.default if f.default is not dataclasses.MISSING else f.default_factory()
            for f in dataclasses.fields(library)
            if f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING
        }
    params = inspect.signature(library).parameters.values()
    return {p.name: p.default for p in params if p.default is not inspect.Parameter.empty}


def _libraries(command: str) -> dict[str, dict[str, object]]:
    """What the options of ``command`` fill in the library: its settings dataclass, its job's
    keyword parameters and the :class:`~landscape_cli.workload.Source` the job loads with."""
    from landscape_cli import jobs
    from landscape_cli.audit import AuditSettings
    from landscape_cli.hessian import HessianSettings

    settings, job = {
        "hessian": (HessianSettings, jobs.hessian_job),
        "scan": (jobs.ScanOptions, jobs.scan_job),
        "audit": (AuditSettings, jobs.audit_job),
    }[command]
    keywords = _library_defaults(job)
    source = keywords.pop("source")
    return {
        settings.__name__: _library_defaults(settings),
        f"{job.__name__}()": keywords,
        f"{job.__name__}(source=)": _library_defaults(source),
    }


def _compared(command: str) -> list[tuple[str, str, object, object]]:
    """``(option, library, the option's default, the library's)`` for every option of
    ``command`` (as Typer registered it) whose field a library of the command shares."""

    def normal(name: str, value: object) -> object:  # a repeatable option's "none given" is None
        value = UNSET.get(name, value) if value is None else value
        return None if value in (None, (), [], {}) else value

    pairs = []
    for option, default in _defaults(command).items():
        for where, theirs in _libraries(command).items():
            field = RENAMED.get(option, option)
            if field in theirs:
                pairs.append((option, where, normal(option, default), normal(field, theirs[field])))
    return pairs


@pytest.mark.parametrize("command", ["hessian", "scan", "audit"])
def test_option_defaults_are_what_the_library_defaults_to(command: str) -> None:
    """A command's options (the defaults Typer parses, groups and plain options alike) and the
    library settings, job keywords and Source they fill start from the same values, field by
    field, so that a command run and a library call with the defaults measure alike."""
    compared = _compared(command)
    assert len({option for option, *_ in compared}) >= 15, compared  # it does share its fields
    differ = [
        (option, where, ours, theirs)
        for option, where, ours, theirs in compared
        if ours != theirs and (command, option) not in DIFFERENT
    ]
    assert differ == []
    for (listed, option), why in DIFFERENT.items():  # the listed differences are still there
        if listed == command:
            assert any(o == option and a != b for o, _, a, b in compared), why
