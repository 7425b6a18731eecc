"""Options and output helpers shared by the measuring commands (hessian, scan, audit)."""

from __future__ import annotations

import ast
import json
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer

from landscape_cli.commands import _threads
from landscape_cli.commands._errors import cli_message
from landscape_cli.errors import Interrupted, LandscapeError

# Help panels: ``--help`` groups every option of every command into one of these (pass one as
# ``rich_help_panel=`` to each new option; tests/commands/test_logs_cli.py checks that none is
# left out). Panels show in this order.
ESTIMATE_PANEL = "What to estimate"
SCAN_PANEL = "What to scan"
FIGURE_PANEL = "Figure"
MODEL_DATA_PANEL = "Model and data"
TRAINING_PANEL = "Training"
OUTPUT_PANEL = "Output"
RUN_PANEL = "Run"
HELP_PANEL = "Help"
PANELS = (
    ESTIMATE_PANEL,
    SCAN_PANEL,
    FIGURE_PANEL,
    MODEL_DATA_PANEL,
    TRAINING_PANEL,
    OUTPUT_PANEL,
    RUN_PANEL,
    HELP_PANEL,
)

Checkpoint = Annotated[
    Path,
    typer.Argument(
        help="Checkpoint: landscape .pt, state dict, .safetensors, or a Hugging Face folder."
    ),
]
ModelOpt = Annotated[
    str | None,
    typer.Option(
        "--model",
        help="Architecture for files without a model spec: a name, torchvision:NAME, timm:NAME, "
        "hf:FOLDER, or package.module:factory.",
        rich_help_panel=MODEL_DATA_PANEL,
    ),
]
ModelOptionOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--model-option",
        metavar="KEY=VALUE",
        help="KEY=VALUE for --model (repeatable).",
        rich_help_panel=MODEL_DATA_PANEL,
    ),
]
DatasetOpt = Annotated[
    str | None,
    typer.Option(
        "--dataset",
        help="digits, cifar10, cifar100, imagefolder:PATH, text:FILE, package.module:factory "
        "(default: the checkpoint's).",
        rich_help_panel=MODEL_DATA_PANEL,
    ),
]
DataRootOpt = Annotated[
    str | None,
    typer.Option(
        "--data-root", help="Folder holding CIFAR data.", rich_help_panel=MODEL_DATA_PANEL
    ),
]
SplitOpt = Annotated[
    str, typer.Option("--split", help="train or test.", rich_help_panel=MODEL_DATA_PANEL)
]
SamplesOpt = Annotated[
    int,
    typer.Option(
        "--samples",
        help="N samples of the split (0 = all): a class-stratified subset chosen by --seed, "
        "the same for every command.",
        rich_help_panel=MODEL_DATA_PANEL,
    ),
]
BatchSizeOpt = Annotated[
    int,
    typer.Option("--batch-size", help="Samples per batch.", rich_help_panel=MODEL_DATA_PANEL),
]
DeviceOpt = Annotated[
    str, typer.Option("--device", help="auto, cpu, cuda or cuda:N.", rich_help_panel=RUN_PANEL)
]
AllowTf32Opt = Annotated[
    bool,
    typer.Option(
        "--allow-tf32",
        help="Let NVIDIA GPUs compute float32 products in TF32 on their tensor cores: faster, but "
        "each product then carries ~1e-3 relative error, and so do the certificates. Default: "
        "IEEE float32.",
        rich_help_panel=RUN_PANEL,
    ),
]
SeedOpt = Annotated[
    int, typer.Option("--seed", help="Seed of every random choice.", rich_help_panel=RUN_PANEL)
]
TrustOpt = Annotated[
    bool,
    typer.Option(
        "--trust-checkpoint",
        help="Allow pickled Python objects and package.module:factory specs stored in the file "
        "(both can run arbitrary code: trusted files only).",
        rich_help_panel=MODEL_DATA_PANEL,
    ),
]
OutOpt = Annotated[
    Path | None,
    typer.Option(
        "--out",
        help="Results file (default: the checkpoint's path with .h5).",
        rich_help_panel=OUTPUT_PANEL,
    ),
]
LossOpt = Annotated[
    str | None,
    typer.Option(
        "--loss",
        help="ce or mse (default: the checkpoint's training loss).",
        rich_help_panel=MODEL_DATA_PANEL,
    ),
]
JsonOpt = Annotated[
    bool,
    typer.Option("--json", help="Print one JSON object on stdout.", rich_help_panel=OUTPUT_PANEL),
]
TextColumnOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--text-column",
        help="Text column of --dataset text:FILE (default text; twice for sentence pairs).",
        rich_help_panel=MODEL_DATA_PANEL,
    ),
]
LabelColumnOpt = Annotated[
    str,
    typer.Option(
        "--label-column",
        help="Label column of --dataset text:FILE.",
        rich_help_panel=MODEL_DATA_PANEL,
    ),
]
SeqLenOpt = Annotated[
    int | None,
    typer.Option(
        "--seq-len",
        help="Language models: tokens per sequence, longer ones truncated (default 128, or "
        "the model's positions when fewer).",
        rich_help_panel=MODEL_DATA_PANEL,
    ),
]
PackOpt = Annotated[
    bool,
    typer.Option(
        "--pack",
        help="Language models: join the texts with EOS and cut blocks of --seq-len tokens "
        "(--samples counts blocks).",
        rich_help_panel=MODEL_DATA_PANEL,
    ),
]

CurvatureOpt = Annotated[
    str,
    typer.Option(
        "--curvature",
        help="hessian (the loss's Hessian), ggn (generalized Gauss-Newton: the Hessian of the "
        "network linearised at the checkpoint, PSD) or fisher (empirical Fisher: the mean outer "
        "product of per-sample gradients, PSD).",
        rich_help_panel=ESTIMATE_PANEL,
    ),
]


@dataclass(frozen=True)
class ParamOptions:
    """Which parameters a measurement covers (``landscape_cli.params``): hessian, scan, audit."""

    params: Annotated[
        list[str] | None,
        typer.Option(
            "--params",
            metavar="GLOB",
            help="Only the parameters whose names (as model.named_parameters() gives them) match "
            "this shell-style pattern, e.g. 'layer4.*' (repeatable).",
            rich_help_panel=MODEL_DATA_PANEL,
        ),
    ] = None
    include_frozen: Annotated[
        bool,
        typer.Option(
            "--include-frozen",
            help="Also measure parameters with requires_grad=False (by default they are left "
            "out and listed).",
            rich_help_panel=MODEL_DATA_PANEL,
        ),
    ] = False

    def build(self):
        """The options as a :class:`landscape_cli.params.ParamSelection`."""
        from landscape_cli.params import ParamSelection

        return ParamSelection(tuple(self.params or ()), self.include_frozen)


def tf32_note(allow_tf32: bool, device: str | None = None, dtype: str = "float32") -> str | None:
    """What a table says under ``--allow-tf32`` (None without it): the numbers are approximate.

    ``device`` and ``dtype`` (where the command knows them) say whether TF32 could act at all.
    """
    if not allow_tf32:
        return None
    if dtype != "float32" or (device is not None and not device.startswith("cuda")):
        where = "float64 products" if dtype != "float32" else "the CPU, which stays IEEE"
        return f"TF32 allowed (--allow-tf32), without effect here ({where})"
    return (
        "TF32 allowed (--allow-tf32): on an NVIDIA GPU each float32 product carries ~1e-3 "
        "relative error, so these numbers and their certificates are approximate"
    )


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


#: The width of stdout's rich output when stdout is not a terminal (a file, a pipe, a SLURM log):
#: wide enough that no table is cut to fit ("0.0003…"), so a log keeps every number.
LOG_WIDTH = 10_000


def console():
    """A rich Console on stdout for the commands' tables and lines.

    The terminal's width on a terminal; when stdout is not one, :data:`LOG_WIDTH`, so that
    tables print at their full width instead of rich's default of 80 columns, which cuts the
    cells ("0.0003…", "checkp…"). Without markup or emoji codes: paths, labels and names from
    users and files (``runs[/]/a.pt``, ``:x:``) print as they are instead of failing or
    changing; the tables' own styles are objects, not markup.
    """
    from rich.console import Console

    try:
        terminal = bool(sys.stdout.isatty())
    except (AttributeError, ValueError):  # a replaced or closed stream
        terminal = False
    width = None if terminal else LOG_WIDTH
    return Console(markup=False, emoji=False, width=width)


def _escape(text: str) -> str:
    from rich.markup import escape

    return escape(text)


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
    """Stop a rich Progress.

    After an error (not an interrupt) erase it, so that the error's one line is all that the failed
    command printed.
    """
    if exc_type is not None and not issubclass(exc_type, (KeyboardInterrupt, Interrupted)):
        progress.live.transient = True
        progress.console.quiet = True  # the bar's own console: nothing more from it
    progress.stop()


#: Seconds between two plain progress lines within a phase (stderr not a terminal).
PLAIN_INTERVAL = 10.0


def clock_text(seconds: float) -> str:
    """``mm:ss``, or ``h:mm:ss`` from one hour on."""
    s = max(0, int(seconds))
    h, rest = divmod(s, 3600)
    return f"{h}:{rest // 60:02d}:{rest % 60:02d}" if h else f"{rest // 60:02d}:{rest % 60:02d}"


class Progress:
    """Progress of a command, in phases.

    Rich bars when stderr is a terminal, plain lines otherwise (SLURM, nohup, CI logs, where a bar
    would only appear at the end).

    ``phase(name, total, unit)`` starts a phase (the previous one ends there), ``advance(k,
    detail=...)`` counts work in it and ``detail(text)`` changes the text shown beside it. Use it
    as a context manager around the work, and start the first phase only once the inputs are
    validated: an error before it leaves the error's one line alone on stderr (a rich bar is
    erased after an error; plain lines already written cannot be, so none is written before the
    first phase). Build it with :func:`progress`.

    ``on_work`` (None by default) is called after each unit of work: the display knows nothing
    of what it is for (:func:`progress` hands it the CPU share's rebalancing, which must run on
    the working thread).
    """

    on_work: Callable[[], None] | None = None

    def phase(
        self, name: str, total: int, unit: str | None = None, done: int = 0, detail: str = ""
    ) -> None:
        raise NotImplementedError

    def advance(self, k: int = 1, detail: str | None = None) -> None:
        raise NotImplementedError

    def detail(self, text: str) -> None:
        raise NotImplementedError

    def close(self, exc_type: Any = None) -> None:
        raise NotImplementedError

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close(exc_type)


class RichProgress(Progress):
    """One rich bar per phase on stderr (started at the first phase)."""

    def __init__(self, command: str, unit: str = "") -> None:
        from rich.progress import TextColumn

        self._unit = unit
        self._bar = progress_bar(
            TextColumn("[bold]{task.description}"),
            TextColumn("{task.fields[unit]}"),
            TextColumn("{task.fields[detail]}"),
        )
        self._task: Any = None

    def _end_phase(self) -> None:
        if self._task is not None:  # a phase that ended early (converged) shows what it spent
            task = self._bar.tasks[-1]
            if task.total is not None and task.completed < task.total:
                self._bar.update(self._task, total=task.completed)

    def phase(
        self, name: str, total: int, unit: str | None = None, done: int = 0, detail: str = ""
    ) -> None:
        if self._task is None:
            self._bar.start()
        self._end_phase()
        self._task = self._bar.add_task(
            _escape(name),
            total=total,
            completed=done,
            unit=_escape(self._unit if unit is None else unit),
            detail=_escape(detail),
        )

    def advance(self, k: int = 1, detail: str | None = None) -> None:
        if self._task is not None:
            self._bar.advance(self._task, k)
            if detail is not None:
                self._bar.update(self._task, detail=_escape(detail))
        if self.on_work is not None:
            self.on_work()

    def detail(self, text: str) -> None:
        if self._task is not None:
            self._bar.update(self._task, detail=_escape(text))

    def close(self, exc_type: Any = None) -> None:
        if self._task is not None:
            if exc_type is None:
                self._end_phase()
            stop(self._bar, exc_type)
            self._task = None


class PlainProgress(Progress):
    """Plain progress lines on a stream that is not a terminal.

    One when each phase ends, and while one runs at most one every ``interval`` seconds (the first
    as soon as work starts), each with the phase, done/total, the phase's elapsed time and an
    estimate of the time left::

        [hessian] density (SLQ): 120/400 HVPs (at most), 00:31 elapsed, ~01:12 left
        [hessian] density (SLQ): 400/400 HVPs (at most), 01:43 elapsed, done

    A phase with nothing to do (a total of 0) prints nothing.
    """

    def __init__(
        self,
        command: str,
        unit: str = "",
        *,
        stream: Any = None,
        interval: float = PLAIN_INTERVAL,
        clock: Any = None,
    ) -> None:
        self._command = command
        self._unit = unit
        self._stream = stream if stream is not None else sys.stderr
        self._interval = interval
        self._clock = clock or time.monotonic
        self._name: str | None = None
        self._last = -math.inf  # when the last line was written

    def _line(self, end: bool = False) -> str:
        now = self._clock()
        elapsed = now - self._t0
        unit = f" {self._phase_unit}" if self._phase_unit else ""
        text = f"[{self._command}] {self._name}: {self._done}/{self._total}{unit}, "
        text += f"{clock_text(elapsed)} elapsed"
        if end:
            text += ", done"
        else:
            rate_done = self._done - self._done0
            if rate_done > 0 and self._total > self._done:
                left = elapsed / rate_done * (self._total - self._done)
                text += f", ~{clock_text(left)} left"
        if self._detail:
            text += f" · {self._detail}"
        return text

    def _write(self, text: str) -> None:
        self._last = self._clock()
        if self._stream is None:
            return
        try:
            self._stream.write(" ".join(text.split()) + "\n")  # one line, whatever names hold
            self._stream.flush()
        except (OSError, ValueError):  # a closed pipe or stream: progress is not worth failing
            self._stream = None

    def _end(self) -> None:
        if self._name is not None and (self._total or self._done):
            self._write(self._line(end=True))
        self._name = None

    def phase(
        self, name: str, total: int, unit: str | None = None, done: int = 0, detail: str = ""
    ) -> None:
        self._end()
        self._name, self._total, self._done, self._done0 = name, int(total), int(done), int(done)
        self._phase_unit = self._unit if unit is None else unit
        self._detail = detail
        self._t0 = self._clock()
        if self._total and self._t0 - self._last >= self._interval:  # the first phase, or news
            self._write(self._line())

    def advance(self, k: int = 1, detail: str | None = None) -> None:
        if self._name is not None:
            self._done += k
            if detail is not None:
                self._detail = detail
            if self._clock() - self._last >= self._interval:
                self._write(self._line())
        if self.on_work is not None:
            self.on_work()

    def detail(self, text: str) -> None:
        if self._name is not None:
            self._detail = text

    def close(self, exc_type: Any = None) -> None:
        if exc_type is None:
            self._end()
        self._name = None  # after an error or an interrupt: no "done" for work not done


def stderr_is_terminal() -> bool:
    try:
        return bool(sys.stderr.isatty())
    except (AttributeError, ValueError):  # a replaced or closed stream
        return False


def progress(command: str, unit: str = "") -> Progress:
    """The progress display of ``command``: rich bars on a terminal, plain lines otherwise.

    Each unit of work also gives torch's threads their current share of the machine's CPUs
    (:func:`landscape_cli.commands._threads.rebalance`, rate-limited).
    """
    shown: Progress = (
        RichProgress(command, unit) if stderr_is_terminal() else PlainProgress(command, unit)
    )
    shown.on_work = _rebalance_threads
    return shown


def _rebalance_threads() -> None:
    _threads.rebalance()  # looked up per call: tests count the units of work through it


def note(message: str) -> None:
    """Print ``note: message`` as one plain line on stderr (what the user should know).

    Notes from the library name its parameters in backticks; they are shown as flags
    (:func:`landscape_cli.commands._errors.cli_message`).
    """
    line = " ".join(cli_message(str(message)).split())
    if line in _NOTED:  # one line per note, however many paths report it
        return
    _NOTED.add(line)
    sys.stderr.write(f"note: {line}\n")
    sys.stderr.flush()


_NOTED: set[str] = set()


def reset_notes() -> None:
    """Forget the notes printed so far (a new command starts)."""
    _NOTED.clear()


@dataclass(frozen=True)
class SourceOptions:
    """The model and data options of the measuring commands (hessian, scan, audit).

    A command takes this group as one parameter (see :mod:`landscape_cli.commands._options`); a
    subclass changes a default for one command.
    """

    model: ModelOpt = None
    model_option: ModelOptionOpt = None
    dataset: DatasetOpt = None
    data_root: DataRootOpt = None
    split: SplitOpt = "train"
    samples: SamplesOpt = 1024
    batch_size: BatchSizeOpt = 128
    trust_checkpoint: TrustOpt = False
    seed: SeedOpt = 0
    text_column: TextColumnOpt = None
    label_column: LabelColumnOpt = "label"
    seq_len: SeqLenOpt = None
    pack: PackOpt = False

    def build(self):
        """The options as a :class:`landscape_cli.workload.Source` (notes go to :func:`note`)."""
        from landscape_cli.workload import Source

        if self.text_column is not None and not 1 <= len(self.text_column) <= 2:
            raise LandscapeError("--text-column is given once, or twice for sentence pairs")
        return Source(
            model=self.model,
            model_options=parse_options(self.model_option, "--model-option"),
            dataset=self.dataset,
            data_root=self.data_root,
            split=self.split,
            samples=self.samples,
            batch_size=self.batch_size,
            trust=self.trust_checkpoint,
            seed=self.seed,
            on_note=note,
            text_columns=tuple(self.text_column or ("text",)),
            label_column=self.label_column,
            seq_len=self.seq_len,
            pack=self.pack,
        )
