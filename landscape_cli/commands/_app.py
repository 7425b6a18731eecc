"""The Typer application: command registration and the error contract.

Every failure a user can cause ends as one plain line ``error: ...`` on stderr and exit code 2:
Typer/Click usage errors, :class:`~landscape_cli.errors.LandscapeError` raised by the library, and
interrupted runs (exit 130). Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import sys
from typing import Any

import typer
from typer.core import TyperGroup

try:  # Typer >= 0.22 ships its own copy of Click
    from typer import _click as click
except ImportError:  # pragma: no cover - older Typer uses Click itself
    import click

from landscape_cli import __version__
from landscape_cli.errors import LandscapeError


def fail(message: str, code: int = 2) -> None:
    """Print ``error: message`` as one plain line on stderr and exit with ``code``."""
    line = " ".join(str(message).split())  # one line, whatever the message contained
    sys.stderr.write(f"error: {line}\n")
    sys.stderr.flush()
    sys.exit(code)


class LandscapeGroup(TyperGroup):
    """A Typer group whose errors follow the command contract instead of rich panels."""

    def main(  # type: ignore[override]
        self,
        args: Any = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        try:
            rv = super().main(
                args=args,
                prog_name=prog_name or "landscape",
                complete_var=complete_var,
                standalone_mode=False,
                **extra,
            )
        except click.exceptions.UsageError as exc:
            hint = f" (see '{exc.ctx.command_path} --help')" if exc.ctx is not None else ""
            fail(f"{exc.format_message()}{hint}")
        except click.exceptions.ClickException as exc:
            fail(exc.format_message())
        except LandscapeError as exc:
            fail(str(exc))
        except (typer.Abort, KeyboardInterrupt):
            fail("interrupted", code=130)
        code = rv if isinstance(rv, int) else 0
        if code == 130:  # Typer turns KeyboardInterrupt into Exit(130) before we can see it
            fail("interrupted", code=130)
        if standalone_mode:
            sys.exit(code)
        return code


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
        False, "--version", callback=_version, is_eager=True, help="Show the version and exit."
    ),
) -> None:
    """landscape: Hessian spectra, traces and loss-landscape scans of PyTorch checkpoints."""


def _register() -> None:
    from landscape_cli.commands import audit, demo, hessian, plot, scan, train

    app.command(name="train")(train.train)
    app.command(name="hessian")(hessian.hessian)
    app.command(name="scan")(scan.scan)
    app.command(name="audit")(audit.audit)
    app.command(name="plot")(plot.plot)
    app.command(name="demo")(demo.demo)


_register()


def main() -> None:
    """Entry point of the ``landscape`` console script."""
    app()
