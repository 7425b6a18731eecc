"""Groups of options as frozen dataclasses, which Typer sees as the commands' own options.

A command that shares options with others (the model and data of ``hessian``, ``scan`` and
``audit``), or has many of its own, declares them once as the fields of a frozen dataclass, each
field an ``Annotated[type, typer.Option(...)]`` with its default, and takes the group as one
parameter typed by that dataclass::

    @dataclass(frozen=True)
    class HessianEstimateOptions:
        top_k: Annotated[int, typer.Option(help="...", rich_help_panel=...)] = 5

    @grouped
    def hessian(
        checkpoint: Checkpoint, estimate: HessianEstimateOptions, source: SourceOptions
    ) -> None:
        settings = HessianSettings(**asdict(estimate))

:func:`grouped` gives Typer a signature in which each group is replaced by its fields, so
``--help``, parsing and the option names are exactly what the fields declare, and builds the
groups back from the parsed values before the command runs. A group subclass may override a
field's default for one command (``samples`` is 1024 in ``hessian``, all samples in ``scan``).
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import typing
from collections.abc import Callable
from typing import Any


def grouped(command: Callable[..., None]) -> Callable[..., None]:
    """Expand the dataclass-typed parameters of ``command`` into their fields, for Typer.

    Args:
        command: A command function whose parameters are Typer-annotated options or arguments,
            or frozen dataclasses whose fields are (see the module docstring).

    Returns:
        A function with the flat signature that Typer reads (every field a keyword parameter,
        in declaration order), which calls ``command`` with the groups rebuilt.

    Raises:
        TypeError: Two groups, or a group and a plain parameter, declare the same name.
    """
    signature = inspect.signature(command, eval_str=True)
    flat: list[inspect.Parameter] = []
    groups: dict[str, tuple[type, tuple[str, ...]]] = {}
    for param in signature.parameters.values():
        cls = param.annotation
        if not (inspect.isclass(cls) and dataclasses.is_dataclass(cls)):
            flat.append(param.replace(kind=inspect.Parameter.KEYWORD_ONLY))
            continue
        hints = typing.get_type_hints(cls, include_extras=True)
        fields = dataclasses.fields(cls)
        groups[param.name] = (cls, tuple(f.name for f in fields))
        flat += [
            inspect.Parameter(
                f.name, inspect.Parameter.KEYWORD_ONLY, annotation=hints[f.name], default=f.default
            )
            for f in fields
        ]
    names = [p.name for p in flat]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise TypeError(f"{command.__name__}: options declared twice: {', '.join(repeated)}")

    @functools.wraps(command)
    def run(**values: Any) -> None:
        for name, (cls, fields) in groups.items():
            values[name] = cls(**{field: values.pop(field) for field in fields})
        return command(**values)

    run.__signature__ = signature.replace(parameters=flat)  # type: ignore[attr-defined]
    run.__annotations__ = {p.name: p.annotation for p in flat} | {"return": None}
    return run
