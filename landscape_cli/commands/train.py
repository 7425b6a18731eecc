"""``landscape train``: train a model with Adam, AdamW, SGD, RAdam, NAdam, InvAdam or DualAdam."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from landscape_cli.commands import _common as c
from landscape_cli.commands import _threads

OPTIMIZER_HELP = "adam, adamw, sgd, radam, nadam, invadam or dualadam."


def train(
    model: str = typer.Option(
        "cnn",
        help="Registry name (mlp, cnn, resnet18, resnet50, vgg16, vit_small), "
        "torchvision:NAME, timm:NAME, or package.module:factory.",
    ),
    dataset: str = typer.Option(
        "digits",
        help="digits (embedded), cifar10, cifar100, imagefolder:PATH, or package.module:factory.",
    ),
    optimizer: str = typer.Option("adam", help=OPTIMIZER_HELP),
    loss: str = typer.Option(
        "ce",
        help="ce (cross-entropy, integer class targets) or mse (regression, or one-hot "
        "classes); stored in the checkpoint as the later commands' default.",
    ),
    epochs: int | None = typer.Option(
        None, help="Epochs in all (default 20; with --resume, the stored total)."
    ),
    lr: float | None = typer.Option(
        None, help="Learning rate (default per optimizer: adam/adamw 1e-3, dualadam 1e-2, ...)."
    ),
    weight_decay: float | None = typer.Option(
        None, help="Weight decay (decoupled for adamw/dualadam/invadam; default 0, adamw 1e-2)."
    ),
    switch_rate: float | None = typer.Option(
        None, help="DualAdam's ξ (default 6 / total steps: α reaches 0 after a sixth of training)."
    ),
    momentum: float = typer.Option(0.9, help="SGD momentum."),
    scheduler: str = typer.Option("cosine", help="cosine (per epoch, to lr/1000) or none."),
    warmup_steps: int = typer.Option(0, help="Linear learning-rate warm-up over N steps."),
    batch_size: int = typer.Option(128, help="Mini-batch size."),
    seed: int = typer.Option(0, help="Seed of initialisation, shuffling and augmentation."),
    data_root: str | None = typer.Option(None, help="Folder holding CIFAR data."),
    augment: bool = typer.Option(True, help="Training augmentation (CIFAR: crop + flip)."),
    model_option: list[str] | None = typer.Option(
        None, "--model-option", help="KEY=VALUE passed to the model (repeatable)."
    ),
    device: str = typer.Option("auto", help="auto, cpu, cuda or cuda:N."),
    out: Path | None = typer.Option(
        None, help="Checkpoint path (default checkpoints/<model>-<dataset>-<optimizer>-s<seed>.pt)."
    ),
    save_every: int = typer.Option(0, help="Also save every N epochs (and keep -epochN copies)."),
    resume: Path | None = typer.Option(None, help="Continue the run stored in this checkpoint."),
    json_out: bool = typer.Option(False, "--json", help="Print the final metrics as JSON."),
    overwrite: bool = typer.Option(
        False, help="Replace an --out file that is not a checkpoint of this run."
    ),
    trust_checkpoint: bool = typer.Option(
        False,
        "--trust-checkpoint",
        help="With --resume: allow a stored package.module:factory model or dataset spec "
        "(it imports and runs that code).",
    ),
) -> None:
    """Train a model and write a checkpoint that `landscape hessian/scan/audit` read."""
    from rich.console import Console
    from rich.progress import TextColumn
    from rich.table import Table

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

    progress = c.progress_bar(
        TextColumn("[bold]epoch {task.fields[epoch]}"),
        TextColumn("loss {task.fields[loss]:.4f}"),
        TextColumn("{task.fields[summary]}"),
    )

    class Show(training.Callbacks):
        task: Any = None

        def on_start(self, cfg, *, epochs, steps_per_epoch, first_epoch):
            self.total, self.steps = epochs, steps_per_epoch
            progress.start()  # only now: errors before this point stay one clean line

        def on_batch(self, epoch, batch, loss):
            _threads.rebalance()
            if batch == 0:
                self.task = progress.add_task(
                    "", total=self.steps, epoch=f"{epoch + 1}/{self.total}", loss=loss, summary=""
                )
            progress.update(self.task, advance=1, loss=loss)

        def on_epoch(self, m):
            alpha = f" α {m.alpha:.3f}" if m.alpha is not None else ""
            progress.update(
                self.task,
                loss=m.train_loss,
                summary=f"acc {m.train_acc:.3f} | test {m.test_loss:.4f} / {m.test_acc:.3f}{alpha}",
            )

    try:
        result = training.train(
            config,
            out=out,
            device=device,
            save_every=save_every,
            resume=resume,
            callbacks=Show(),
            trust=trust_checkpoint,
            overwrite=overwrite,
        )
    except BaseException as exc:
        if progress.live.is_started:
            c.stop(progress, type(exc))
        raise
    if progress.live.is_started:
        progress.stop()

    f = result.final
    summary = {
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
    if json_out:
        c.print_json(summary)
        return
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
    Console().print(table)
