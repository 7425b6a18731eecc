"""Options and output helpers shared by the measuring commands (hessian, scan, audit)."""

from __future__ import annotations

import ast
import json
import math
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from landscape_cli.commands import _threads
from landscape_cli.errors import LandscapeError

Checkpoint = Annotated[
    Path, typer.Argument(help="Checkpoint: landscape .pt, state dict, or .safetensors.")
]
ModelOpt = Annotated[
    str | None,
    typer.Option(
        "--model",
        help="Architecture for files without a model spec: a name, torchvision:NAME, timm:NAME, or "
        "package.module:factory.",
    ),
]
ModelOptionOpt = Annotated[
    list[str] | None,
    typer.Option("--model-option", help="KEY=VALUE for --model (repeatable)."),
]
DatasetOpt = Annotated[
    str | None,
    typer.Option(
        "--dataset",
        help="digits, cifar10, cifar100, imagefolder:PATH, package.module:factory "
        "(default: the checkpoint's).",
    ),
]
DataRootOpt = Annotated[str | None, typer.Option("--data-root", help="Folder holding CIFAR data.")]
SplitOpt = Annotated[str, typer.Option("--split", help="train or test.")]
SamplesOpt = Annotated[
    int,
    typer.Option(
        "--samples",
        help="N samples of the split (0 = all): a class-stratified subset chosen by --seed, "
        "the same for every command.",
    ),
]
BatchSizeOpt = Annotated[int, typer.Option("--batch-size", help="Samples per batch.")]
DeviceOpt = Annotated[str, typer.Option("--device", help="auto, cpu, cuda or cuda:N.")]
SeedOpt = Annotated[int, typer.Option("--seed", help="Seed of every random choice.")]
TrustOpt = Annotated[
    bool,
    typer.Option(
        "--trust-checkpoint",
        help="Allow pickled Python objects and package.module:factory specs stored in the file "
        "(both can run arbitrary code: trusted files only).",
    ),
]
OutOpt = Annotated[
    Path | None,
    typer.Option("--out", help="Results file (default: the checkpoint's path with .h5)."),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout.")]


def parse_options(items: list[str] | None, flag: str) -> dict[str, Any]:
    """``KEY=VALUE`` pairs; values are Python literals where they parse (3, 0.5, (4, 4), True)."""
    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip().isidentifier():
            raise LandscapeError(f"{flag} takes KEY=VALUE, got {item!r}")
        try:
            value: Any = ast.literal_eval(raw)
        except (ValueError, SyntaxError):
            value = raw
        out[key.strip()] = list(value) if isinstance(value, tuple) else value
    return out


def _clean(value: Any) -> Any:
    """JSON-safe: NaN/inf become null, numpy scalars and arrays become Python values."""
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if hasattr(value, "tolist"):
        return _clean(value.tolist())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def print_json(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(_clean(obj)) + "\n")
    sys.stdout.flush()


def progress_bar(*columns: Any):
    """A rich Progress on stderr: a bar, done/total, the given text columns, elapsed time."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    class _Progress(Progress):
        def __exit__(self, exc_type, exc_val, exc_tb) -> None:
            stop(self, exc_type)

    first, *rest = columns
    return _Progress(
        first,
        BarColumn(),
        MofNCompleteColumn(),
        *rest,
        TimeElapsedColumn(),
        console=Console(stderr=True),
    )


def stop(progress: Any, exc_type: Any = None) -> None:
    """Stop a rich Progress; after an error (not an interrupt) erase it, so that the error's
    one line is all that the failed command printed."""
    if exc_type is not None and not issubclass(exc_type, KeyboardInterrupt):
        from landscape_cli.errors import Interrupted

        if not issubclass(exc_type, Interrupted):
            progress.live.transient = True
            progress.console.quiet = True  # the bar's own console: nothing more from it
    progress.stop()


class PhaseProgress:
    """A rich progress bar on stderr with one row per phase (started at the first phase, so
    errors raised before any work stay one clean line)."""

    def __init__(self, unit: str) -> None:
        from rich.progress import TextColumn

        self._progress = progress_bar(TextColumn("[bold]{task.description:<14}"), TextColumn(unit))
        self._task: Any = None

    def phase(self, name: str, budget: int) -> None:
        if self._task is None:
            self._progress.start()
        else:  # the phase ended early (converged): show what it spent
            done = self._progress.tasks[-1].completed
            self._progress.update(self._task, total=done)
        self._task = self._progress.add_task(name, total=budget)

    def advance(self, k: int = 1) -> None:
        if self._task is not None:
            self._progress.advance(self._task, k)
        _threads.rebalance()

    def __enter__(self) -> PhaseProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._task is not None:
            if exc[0] is None:
                self._progress.update(self._task, total=self._progress.tasks[-1].completed)
            stop(self._progress, exc[0])


class PointProgress:
    """A rich progress bar on stderr over the points of a scan (started when the scan starts)."""

    def __init__(self) -> None:
        from rich.progress import TextColumn

        self._progress = progress_bar(
            TextColumn("[bold]{task.description}"),
            TextColumn("points · loss {task.fields[loss]:.4g}"),
        )
        self._task: Any = None

    def start(self, name: str, done: int, total: int) -> None:
        self._progress.start()
        self._task = self._progress.add_task(name, total=total, completed=done, loss=float("nan"))

    def point(self, i: int, j: int, loss: float, acc: float) -> None:
        if self._task is not None:
            self._progress.update(self._task, advance=1, loss=loss)
        _threads.rebalance()

    def __enter__(self) -> PointProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._task is not None:
            stop(self._progress, exc[0])


def note(message: str) -> None:
    """Print ``note: message`` as one plain line on stderr (what the user should know)."""
    line = " ".join(str(message).split())
    sys.stderr.write(f"note: {line}\n")
    sys.stderr.flush()


def source(
    model: str | None,
    model_option: list[str] | None,
    dataset: str | None,
    data_root: str | None,
    split: str,
    samples: int,
    batch_size: int,
    trust_checkpoint: bool,
    seed: int = 0,
):
    """The shared model/data options as a :class:`landscape_cli.pipeline.Source`."""
    from landscape_cli.pipeline import Source

    return Source(
        model=model,
        model_options=parse_options(model_option, "--model-option"),
        dataset=dataset,
        data_root=data_root,
        split=split,
        samples=samples,
        batch_size=batch_size,
        trust=trust_checkpoint,
        seed=seed,
        on_note=note,
    )
