"""The Typer application: command registration and the error contract.

Every failure a user can cause ends as one plain line ``error: ...`` on stderr and exit code 2:
Typer/Click usage errors, :class:`~landscape_cli.errors.LandscapeError` raised by the library, and
interrupted runs (Ctrl-C: exit 130; SIGTERM, handled the same way: exit 143; see
:mod:`landscape_cli.interrupts`). Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import os
import re
import sys
from typing import Any

import typer
from typer.core import TyperArgument, TyperCommand, TyperGroup, TyperOption

try:  # Typer >= 0.22 ships its own copy of Click
    from typer import _click as click
except ImportError:  # pragma: no cover - older Typer uses Click itself
    import click

from landscape_cli import __version__, interrupts
from landscape_cli.commands import _common, _threads, audit, demo, hessian, plot, scan, train
from landscape_cli.commands._common import HELP_PANEL, PANELS, RUN_PANEL
from landscape_cli.commands._errors import cli_message
from landscape_cli.errors import Interrupted, LandscapeError, one_line


def _rank() -> int:
    """This process's rank under torchrun (0 otherwise)."""
    return int(os.environ.get("RANK", "0")) if int(os.environ.get("WORLD_SIZE", "1")) > 1 else 0


def fail(message: str, code: int = 2) -> None:
    """Print ``error: message`` as one plain line on stderr and exit with ``code``."""
    line = one_line(str(message))  # one line, whatever the message contained
    if _rank():
        line = f"rank {_rank()}: {line}"
    sys.stderr.write(f"error: {line}\n")
    sys.stderr.flush()
    sys.exit(code)


class LandscapeOption(TyperOption):
    """An option as ``--help`` shows it.

    A flag takes no value, so it shows no type (Typer would show ``<bool>``), and a repeatable
    option shows the type of one value (``<str>``, not ``<list[str]>``).
    """

    def display_type_rich(self, ctx: Any) -> str | None:
        if self.is_flag and not self.count:
            return None
        shown = super().display_type_rich(ctx)
        if shown and self.metavar is None:
            shown = re.sub(r"^<list\[(.*)\]>", lambda m: f"<{m.group(1).lower()}>", shown)
        return shown


class LandscapeArgument(TyperArgument):
    """An argument as the usage line shows it, in Click's plain style.

    ``CHECKPOINT``, ``CHECKPOINTS...``, ``[NAME]`` (Typer writes ``{checkpoint}``), or its metavar
    as given.
    """

    def _usage_display_name(self) -> str:
        if self.metavar is not None:
            return self.metavar
        name = (self.name or "").upper()
        if not self.required:
            name = f"[{name}]"
        return name + ("..." if self.nargs != 1 else "")

    def display_type_rich(self, ctx: Any) -> str | None:
        shown = super().display_type_rich(ctx)
        if shown:
            shown = re.sub(r"^<list\[(.*)\]>", lambda m: f"<{m.group(1).lower()}>", shown)
        return shown


def _adopt(params: list[Any]) -> list[Any]:
    """Give Typer's parameters the display above and order the options by panel.

    Give Typer's parameters the display above, and order the options by panel (``PANELS``),
    so that every command shows its panels in the same order.
    """
    for param in params:
        if type(param) is TyperOption:
            param.__class__ = LandscapeOption
        elif type(param) is TyperArgument:
            param.__class__ = LandscapeArgument

    def rank(param: Any) -> int:
        panel = getattr(param, "rich_help_panel", None)
        return PANELS.index(panel) if panel in PANELS else len(PANELS)

    return sorted(params, key=rank)  # stable: within a panel, the order of declaration


def _help_option(option: Any) -> Any:
    if option is not None:
        if type(option) is TyperOption:
            option.__class__ = LandscapeOption
        option.rich_help_panel = HELP_PANEL
    return option


class LandscapeCommand(TyperCommand):
    """A command whose ``--help`` groups every option into a panel and reads plainly."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.params = _adopt(self.params)

    def get_help_option(self, ctx: Any) -> Any:
        return _help_option(super().get_help_option(ctx))


class LandscapeGroup(TyperGroup):
    """A Typer group whose errors follow the command contract instead of rich panels."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.params = _adopt(self.params)

    def get_help_option(self, ctx: Any) -> Any:
        return _help_option(super().get_help_option(ctx))

    def main(  # type: ignore[override]
        self,
        args: Any = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        _common.reset_notes()  # each command prints each note once
        if _rank():  # under torchrun only rank 0 prints; other ranks report only errors
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - for the life of the process
            sys.stderr = _ErrorsOnly(sys.stderr)
        restore = interrupts.install()  # SIGTERM as Ctrl-C; a second signal waits for the cleanup
        try:
            rv = super().main(
                args=args,
                prog_name=prog_name or "landscape",
                complete_var=complete_var,
                standalone_mode=False,
                **extra,
            )
        except click.exceptions.UsageError as exc:
            message = exc.format_message().strip()
            if not message and exc.ctx is not None:  # no arguments at all: show the help
                sys.stdout.write(exc.ctx.get_help() + "\n")
                code = 0 if exc.ctx.parent is None else 2
                if standalone_mode:
                    sys.exit(code)
                return code
            hint = f" (see '{exc.ctx.command_path} --help')" if exc.ctx is not None else ""
            fail(f"{message[:1].lower()}{message[1:]}{hint}")
        except click.exceptions.ClickException as exc:
            message = exc.format_message().strip()
            fail(f"{message[:1].lower()}{message[1:]}")
        except Interrupted as exc:
            fail(f"{interrupts.word()}: {cli_message(str(exc))}", code=interrupts.exit_code())
        except LandscapeError as exc:
            fail(cli_message(str(exc)))
        except (typer.Abort, KeyboardInterrupt):
            fail(interrupts.word(), code=interrupts.exit_code())
        except Exception as exc:
            if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
                raise  # a bug: keep the traceback
            # Under torchrun a failed peer surfaces here as a communication error.
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            fail(f"{type(exc).__name__}: {first} (a worker process failed or exited)", code=1)
        finally:
            _leave_process_group()
            restore()
        code = rv if isinstance(rv, int) else 0
        if code == 130:  # Typer turns KeyboardInterrupt into Exit(130) before we can see it
            fail(interrupts.word(), code=interrupts.exit_code())
        if standalone_mode:
            sys.exit(code)
        return code


class _ErrorsOnly:
    """A stderr for ranks other than 0 under torchrun: passes ``error:`` lines, drops the rest."""

    def __init__(self, stream) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        if text.startswith("error: "):
            self._stream.write(text)
        return len(text)

    def flush(self) -> None:
        self._stream.flush()

    def isatty(self) -> bool:
        return False

    def fileno(self) -> int:
        return self._stream.fileno()


def _leave_process_group() -> None:
    if "torch" in sys.modules:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()


def _version(value: bool) -> None:
    if value:
        typer.echo(f"landscape {__version__}")
        raise typer.Exit()


app = typer.Typer(
    cls=LandscapeGroup,
    name="landscape",
    help="Train or load PyTorch checkpoints and measure how flat their minima are.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


@app.callback()
def _root(
    version: bool = typer.Option(
        False,
        "--version",
        callback=_version,
        is_eager=True,
        help="Show the version and exit.",
        rich_help_panel=HELP_PANEL,
    ),
    threads: int | None = typer.Option(
        None,
        "--threads",
        min=1,
        help="CPU threads for torch (default: OMP_NUM_THREADS, else a fair share of the CPUs "
        "this process may use among the landscape processes running).",
        rich_help_panel=RUN_PANEL,
    ),
) -> None:
    """landscape: Hessian spectra, traces and loss-landscape scans of PyTorch checkpoints."""
    if threads is not None:
        from landscape_cli import resources

        resources.check_options({"threads": threads})
        _threads.fix(threads)


def _register() -> None:
    for name, function in (
        ("train", train.train),
        ("hessian", hessian.hessian),
        ("scan", scan.scan),
        ("audit", audit.audit),
        ("plot", plot.plot),
        ("demo", demo.demo),
    ):
        app.command(name=name, cls=LandscapeCommand)(function)


_register()


def main() -> None:
    """Entry point of the ``landscape`` console script (a fair share of the CPUs, then the app)."""
    interrupts.install()  # for the whole process, exit included
    _threads.start()
    app()
