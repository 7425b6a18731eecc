"""The command layer: the only package that imports typer or rich.

Each command lives in its own module and imports torch, h5py or matplotlib inside the command
function, so that ``landscape --help`` stays instant.
"""

from landscape_cli.commands._app import app, fail, main

__all__ = ["app", "fail", "main"]
