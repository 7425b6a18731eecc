"""``landscape train``: train a model with Adam, AdamW, SGD, RAdam, NAdam, InvAdam or DualAdam."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Annotated

import typer

from landscape_cli.commands import _common as c
from landscape_cli.commands._common import parse_options
from landscape_cli.commands._options import grouped

OPTIMIZER_HELP = "adam, adamw, sgd, radam, nadam, invadam or dualadam."


@dataclass(frozen=True)
class Recipe:
    """What to train and how: the options that make a ``TrainConfig``."""

    model: Annotated[
        str,
        typer.Option(
            help="Registry name (mlp, cnn, resnet18, resnet50, vgg16, vit_small), "
            "torchvision:NAME, timm:NAME, or package.module:factory.",
            rich_help_panel=c.MODEL_DATA_PANEL,
        ),
    ] = "cnn"
    dataset: Annotated[
        str,
        typer.Option(
            help="digits (embedded), cifar10, cifar100, imagefolder:PATH, or "
            "package.module:factory.",
            rich_help_panel=c.MODEL_DATA_PANEL,
        ),
    ] = "digits"
    data_root: Annotated[
        str | None,
        typer.Option(help="Folder holding CIFAR data.", rich_help_panel=c.MODEL_DATA_PANEL),
    ] = None
    model_option: Annotated[
        list[str] | None,
        typer.Option(
            "--model-option",
            metavar="KEY=VALUE",
            help="KEY=VALUE passed to the model (repeatable).",
            rich_help_panel=c.MODEL_DATA_PANEL,
        ),
    ] = None
    optimizer: Annotated[
        str, typer.Option(help=OPTIMIZER_HELP, rich_help_panel=c.TRAINING_PANEL)
    ] = "adam"
    loss: Annotated[
        str,
        typer.Option(
            help="ce (cross-entropy, integer class targets) or mse (regression, or one-hot "
            "classes); stored in the checkpoint as the later commands' default.",
            rich_help_panel=c.TRAINING_PANEL,
        ),
    ] = "ce"
    epochs: Annotated[
        int | None,
        typer.Option(
            help="Epochs in all (default 20; with --resume, the stored total).",
            rich_help_panel=c.TRAINING_PANEL,
        ),
    ] = None
    lr: Annotated[
        float | None,
        typer.Option(
            help="Learning rate (default per optimizer: adam/adamw 1e-3, dualadam 1e-2, ...).",
            rich_help_panel=c.TRAINING_PANEL,
        ),
    ] = None
    weight_decay: Annotated[
        float | None,
        typer.Option(
            help="Weight decay (decoupled for adamw/dualadam/invadam; default 0, adamw 1e-2).",
            rich_help_panel=c.TRAINING_PANEL,
        ),
    ] = None
    switch_rate: Annotated[
        float | None,
        typer.Option(
            help="DualAdam's ξ (default 6 / total steps: α reaches 0 after a sixth of training).",
            rich_help_panel=c.TRAINING_PANEL,
        ),
    ] = None
    momentum: Annotated[
        float, typer.Option(help="SGD momentum.", rich_help_panel=c.TRAINING_PANEL)
    ] = 0.9
    scheduler: Annotated[
        str,
        typer.Option(
            help="cosine (per epoch, to lr/1000) or none.", rich_help_panel=c.TRAINING_PANEL
        ),
    ] = "cosine"
    warmup_steps: Annotated[
        int,
        typer.Option(
            help="Linear learning-rate warm-up over N steps.", rich_help_panel=c.TRAINING_PANEL
        ),
    ] = 0
    batch_size: Annotated[
        int, typer.Option(help="Mini-batch size.", rich_help_panel=c.TRAINING_PANEL)
    ] = 128
    augment: Annotated[
        bool,
        typer.Option(
            help="Training augmentation (CIFAR: crop + flip).", rich_help_panel=c.TRAINING_PANEL
        ),
    ] = True
    seed: Annotated[
        int,
        typer.Option(
            help="Seed of initialisation, shuffling and augmentation.", rich_help_panel=c.RUN_PANEL
        ),
    ] = 0

    def config(self, resume: Path | None):
        """The :class:`~landscape_cli.training.TrainConfig` (20 epochs, or the stored total)."""
        from landscape_cli import training

        fields = asdict(self) | {
            "model_options": parse_options(self.model_option, "--model-option")
        }
        del fields["model_option"]
        if self.epochs is None:
            fields["epochs"] = 0 if resume else 20
        return training.TrainConfig(**fields)


@dataclass(frozen=True)
class Output:
    """Where the checkpoint goes and how the metrics are shown."""

    out: Annotated[
        Path | None,
        typer.Option(
            help="Checkpoint path (default checkpoints/<model>-<dataset>-<optimizer>-s<seed>.pt).",
            rich_help_panel=c.OUTPUT_PANEL,
        ),
    ] = None
    save_every: Annotated[
        int,
        typer.Option(
            help="Also save every N epochs (and keep -epochN copies).",
            rich_help_panel=c.OUTPUT_PANEL,
        ),
    ] = 0
    json_out: Annotated[
        bool,
        typer.Option(
            "--json", help="Print the final metrics as JSON.", rich_help_panel=c.OUTPUT_PANEL
        ),
    ] = False
    overwrite: Annotated[
        bool,
        typer.Option(
            help="Replace an --out file that is not a checkpoint of this run.",
            rich_help_panel=c.OUTPUT_PANEL,
        ),
    ] = False


@grouped
def train(
    *,
    recipe: Recipe,
    device: c.DeviceOpt = "auto",
    output: Output,
    resume: Annotated[
        Path | None,
        typer.Option(
            help="Continue the run stored in this checkpoint.", rich_help_panel=c.TRAINING_PANEL
        ),
    ] = None,
    trust_checkpoint: Annotated[
        bool,
        typer.Option(
            "--trust-checkpoint",
            help="With --resume: allow a stored package.module:factory model or dataset spec "
            "(it imports and runs that code).",
            rich_help_panel=c.MODEL_DATA_PANEL,
        ),
    ] = False,
) -> None:
    """Train a model and write a checkpoint that `landscape hessian/scan/audit` read."""
    from landscape_cli import training

    config = recipe.config(resume)
    progress = c.progress("train", "steps")
    with progress:
        result = training.train(
            config,
            out=output.out,
            device=device,
            save_every=output.save_every,
            resume=resume,
            callbacks=_show_progress(training, progress),
            trust=trust_checkpoint,
            overwrite=output.overwrite,
        )

    summary = _summary(result)
    if output.json_out:
        c.print_json(summary)
    else:
        c.console().print(_table(result, summary))


def _show_progress(training, progress):
    """Training callbacks that drive ``progress``: one phase per epoch, the loss per batch."""

    class Show(training.Callbacks):
        def on_start(self, cfg, *, epochs, steps_per_epoch, first_epoch):
            self.total, self.steps = epochs, steps_per_epoch

        def on_batch(self, epoch, batch, loss):
            if batch == 0:  # the first phase starts only now: errors before stay one clean line
                progress.phase(f"epoch {epoch + 1}/{self.total}", self.steps)
            progress.advance(1, f"loss {loss:.4f}")

        def on_epoch(self, m):
            alpha = f" α {m.alpha:.3f}" if m.alpha is not None else ""
            progress.detail(
                f"loss {m.train_loss:.4f} acc {m.train_acc:.3f} | test {m.test_loss:.4f} / "
                f"{m.test_acc:.3f}{alpha}"
            )

    return Show()


def _summary(result) -> dict:
    """The ``--json`` object of a training run."""
    f = result.final
    return {
        "checkpoint": str(result.path),
        "model": result.config.model,
        "dataset": result.config.dataset,
        "optimizer": result.config.optimizer,
        "loss": result.config.loss,
        "hparams": result.hparams,
        "seed": result.config.seed,
        "epochs": f.epoch,
        "steps": f.step,
        "parameters": result.parameters,
        "train_loss": f.train_loss,
        "train_acc": f.train_acc,
        "test_loss": f.test_loss,
        "test_acc": f.test_acc,
        "seconds": sum(result.history["seconds"]),
        "snapshots": [str(p) for p in result.snapshots],
    }


def _table(result, summary: dict):
    """The rich table of a training run."""
    from rich.table import Table

    f = result.final
    table = Table(
        title=f"{result.config.model} on {result.config.dataset}, {result.config.optimizer}"
    )
    table.add_column("measure")
    table.add_column("value", justify="right")
    for key in ("train_loss", "train_acc", "test_loss", "test_acc"):
        if key.endswith("acc") and summary[key] != summary[key]:
            continue  # regression: no accuracy
        table.add_row(key, f"{summary[key]:.4f}")
    table.add_row("epochs / steps", f"{f.epoch} / {f.step}")
    table.add_row("parameters", f"{result.parameters:,}")
    table.add_row("hyperparameters", ", ".join(f"{k}={v:g}" for k, v in result.hparams.items()))
    table.add_row("seconds", f"{summary['seconds']:.1f}")
    table.add_row("checkpoint", str(result.path))
    return table
