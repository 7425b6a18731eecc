"""``landscape train``: train a model with Adam, AdamW, SGD, RAdam, NAdam, InvAdam or DualAdam."""

from __future__ import annotations

from pathlib import Path

import typer

from landscape_cli.commands import _common as c

OPTIMIZER_HELP = "adam, adamw, sgd, radam, nadam, invadam or dualadam."


def train(
    model: str = typer.Option(
        "cnn",
        help="Registry name (mlp, cnn, resnet18, resnet50, vgg16, vit_small), "
        "torchvision:NAME, timm:NAME, or package.module:factory.",
        rich_help_panel=c.MODEL_DATA_PANEL,
    ),
    dataset: str = typer.Option(
        "digits",
        help="digits (embedded), cifar10, cifar100, imagefolder:PATH, or package.module:factory.",
        rich_help_panel=c.MODEL_DATA_PANEL,
    ),
    optimizer: str = typer.Option("adam", help=OPTIMIZER_HELP, rich_help_panel=c.TRAINING_PANEL),
    loss: str = typer.Option(
        "ce",
        help="ce (cross-entropy, integer class targets) or mse (regression, or one-hot "
        "classes); stored in the checkpoint as the later commands' default.",
        rich_help_panel=c.TRAINING_PANEL,
    ),
    epochs: int | None = typer.Option(
        None,
        help="Epochs in all (default 20; with --resume, the stored total).",
        rich_help_panel=c.TRAINING_PANEL,
    ),
    lr: float | None = typer.Option(
        None,
        help="Learning rate (default per optimizer: adam/adamw 1e-3, dualadam 1e-2, ...).",
        rich_help_panel=c.TRAINING_PANEL,
    ),
    weight_decay: float | None = typer.Option(
        None,
        help="Weight decay (decoupled for adamw/dualadam/invadam; default 0, adamw 1e-2).",
        rich_help_panel=c.TRAINING_PANEL,
    ),
    switch_rate: float | None = typer.Option(
        None,
        help="DualAdam's ξ (default 6 / total steps: α reaches 0 after a sixth of training).",
        rich_help_panel=c.TRAINING_PANEL,
    ),
    momentum: float = typer.Option(0.9, help="SGD momentum.", rich_help_panel=c.TRAINING_PANEL),
    scheduler: str = typer.Option(
        "cosine", help="cosine (per epoch, to lr/1000) or none.", rich_help_panel=c.TRAINING_PANEL
    ),
    warmup_steps: int = typer.Option(
        0, help="Linear learning-rate warm-up over N steps.", rich_help_panel=c.TRAINING_PANEL
    ),
    batch_size: int = typer.Option(128, help="Mini-batch size.", rich_help_panel=c.TRAINING_PANEL),
    seed: int = typer.Option(
        0, help="Seed of initialisation, shuffling and augmentation.", rich_help_panel=c.RUN_PANEL
    ),
    data_root: str | None = typer.Option(
        None, help="Folder holding CIFAR data.", rich_help_panel=c.MODEL_DATA_PANEL
    ),
    augment: bool = typer.Option(
        True, help="Training augmentation (CIFAR: crop + flip).", rich_help_panel=c.TRAINING_PANEL
    ),
    model_option: list[str] | None = typer.Option(
        None,
        "--model-option",
        metavar="KEY=VALUE",
        help="KEY=VALUE passed to the model (repeatable).",
        rich_help_panel=c.MODEL_DATA_PANEL,
    ),
    device: str = typer.Option(
        "auto", help="auto, cpu, cuda or cuda:N.", rich_help_panel=c.RUN_PANEL
    ),
    out: Path | None = typer.Option(
        None,
        help="Checkpoint path (default checkpoints/<model>-<dataset>-<optimizer>-s<seed>.pt).",
        rich_help_panel=c.OUTPUT_PANEL,
    ),
    save_every: int = typer.Option(
        0,
        help="Also save every N epochs (and keep -epochN copies).",
        rich_help_panel=c.OUTPUT_PANEL,
    ),
    resume: Path | None = typer.Option(
        None, help="Continue the run stored in this checkpoint.", rich_help_panel=c.TRAINING_PANEL
    ),
    json_out: bool = typer.Option(
        False, "--json", help="Print the final metrics as JSON.", rich_help_panel=c.OUTPUT_PANEL
    ),
    overwrite: bool = typer.Option(
        False,
        help="Replace an --out file that is not a checkpoint of this run.",
        rich_help_panel=c.OUTPUT_PANEL,
    ),
    trust_checkpoint: bool = typer.Option(
        False,
        "--trust-checkpoint",
        help="With --resume: allow a stored package.module:factory model or dataset spec "
        "(it imports and runs that code).",
        rich_help_panel=c.MODEL_DATA_PANEL,
    ),
) -> None:
    """Train a model and write a checkpoint that `landscape hessian/scan/audit` read."""
    from rich.console import Console

    from landscape_cli import training

    config = training.TrainConfig(
        model=model,
        dataset=dataset,
        optimizer=optimizer,
        loss=loss,
        epochs=epochs if epochs is not None else (0 if resume else 20),
        batch_size=batch_size,
        lr=lr,
        weight_decay=weight_decay,
        switch_rate=switch_rate,
        momentum=momentum,
        scheduler=scheduler,
        warmup_steps=warmup_steps,
        seed=seed,
        data_root=data_root,
        augment=augment,
        model_options=c.parse_options(model_option, "--model-option"),
    )

    progress = c.progress("train", "steps")
    with progress:
        result = training.train(
            config,
            out=out,
            device=device,
            save_every=save_every,
            resume=resume,
            callbacks=_show_progress(training, progress),
            trust=trust_checkpoint,
            overwrite=overwrite,
        )

    summary = _summary(result)
    if json_out:
        c.print_json(summary)
    else:
        Console().print(_table(result, summary))


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
