"""Option groups: a command's dataclass-typed parameters are its options, one flag per field."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

import pytest
import typer
import typer.main
from typer.testing import CliRunner

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
    return CliRunner().invoke(tiny, [command.__name__, *args])


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


def _shared_defaults(group: type, library: object) -> list[tuple[str, object, object]]:
    """``(field, the option's default, the library's)`` for each field ``group`` shares with
    ``library`` (a dataclass, or a function's keyword parameters)."""
    import dataclasses
    import inspect

    if dataclasses.is_dataclass(library):
        theirs = {
            f.name: f.default if f.default is not dataclasses.MISSING else f.default_factory()
            for f in dataclasses.fields(library)
            if f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING
        }
    else:
        params = inspect.signature(library).parameters.values()
        theirs = {p.name: p.default for p in params if p.default is not inspect.Parameter.empty}
    return [
        (f.name, f.default, theirs[f.name]) for f in dataclasses.fields(group) if f.name in theirs
    ]


def _group_pairs():
    from landscape_cli import jobs
    from landscape_cli.audit import AuditSettings
    from landscape_cli.commands import audit, hessian, scan
    from landscape_cli.hessian import HessianSettings

    return {
        "hessian.HessianEstimateOptions ~ HessianSettings": (
            hessian.HessianEstimateOptions,
            HessianSettings,
        ),
        "hessian.HessianRunOptions ~ hessian_job": (hessian.HessianRunOptions, jobs.hessian_job),
        "scan.Grid ~ ScanOptions": (scan.Grid, jobs.ScanOptions),
        "audit.AuditEstimateOptions ~ AuditSettings": (audit.AuditEstimateOptions, AuditSettings),
        "SourceOptions ~ Source": (c.SourceOptions, jobs.Source),
    }


@pytest.mark.parametrize("pair", list(_group_pairs()))
def test_option_groups_default_to_what_the_library_defaults_to(pair) -> None:
    """A command's options and the library settings they fill start from the same defaults,
    field by field, so that a command run and a library call with the defaults measure alike."""
    group, library = _group_pairs()[pair]
    shared = _shared_defaults(group, library)
    assert len(shared) >= 3, shared  # the pair does share its fields

    def normal(value):  # a repeatable option's "none given" is None, the library's ()
        return None if value in (None, (), []) else value

    differ = [(name, a, b) for name, a, b in shared if normal(a) != normal(b)]
    assert differ == []
