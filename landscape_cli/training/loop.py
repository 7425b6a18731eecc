"""The training loop: a run's epochs, its evaluation and its checkpoints (:func:`train`)."""

from __future__ import annotations

import math
import os
import time
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from dualadam import switch_alpha
from landscape_cli import files, interrupts, models, resources
from landscape_cli.batches import Batch, evaluation_mode
from landscape_cli.checkpoints import (
    fit_state_dict,
    training_checkpoint,
)
from landscape_cli.data import load_dataset
from landscape_cli.devices import resolve_device
from landscape_cli.errors import LandscapeError
from landscape_cli.losses import LOSSES, check_loss, first_output, metric_sums
from landscape_cli.models import count_parameters
from landscape_cli.training.config import (
    TrainConfig,
    build_optimizer,
    default_output,
    epoch_seed,
    lr_at,
)
from landscape_cli.training.resume import (
    _checkpoint_size,
    _Outputs,
    _read_resume,
    _restore,
    _snapshots,
    check_output,
    snapshot_path,
)


@dataclass(frozen=True)
class EpochMetrics:
    """Metrics after one epoch: losses, accuracies, learning rate, DualAdam's alpha and time."""

    epoch: int
    step: int
    train_loss: float
    train_acc: float
    test_loss: float
    test_acc: float
    lr: float
    alpha: float | None
    seconds: float


@dataclass(frozen=True)
class TrainResult:
    """What a finished (or resumed and finished) run produced."""

    path: Path
    config: TrainConfig
    hparams: dict[str, Any]
    history: dict[str, list[float]]
    final: EpochMetrics
    parameters: int
    snapshots: tuple[Path, ...] = ()


class Callbacks:
    """Hooks through which the command layer shows progress; the library itself never prints."""

    def on_start(self, config: TrainConfig, *, epochs: int, steps_per_epoch: int, first_epoch: int):
        """Called once before the first epoch."""
        pass

    def on_batch(self, epoch: int, batch: int, loss: float) -> None:
        """Called after each batch with its loss."""
        pass

    def on_epoch(self, metrics: EpochMetrics) -> None:
        """Called after each epoch with its metrics."""
        pass


@torch.no_grad()
def evaluate(
    model: nn.Module,
    loader: torch.utils.data.DataLoader,
    device: torch.device,
    loss: str = "ce",
) -> tuple[float, float]:
    """Mean loss and accuracy of ``model`` in eval mode over ``loader``.

    Mean loss and accuracy of ``model`` in eval mode over ``loader`` (accuracy NaN for
    floating-point, i.e. regression, targets): :func:`~landscape_cli.losses.metric_sums`,
    the sums behind :func:`~landscape_cli.losses.loss_and_accuracy`, on the loader's
    batches moved to ``device``.
    """

    def batches() -> Iterator[Batch]:
        for x, y in loader:
            x, y = x.to(device), y.to(device)
            if torch.is_floating_point(y):
                y = y.to(torch.get_default_dtype())
            yield Batch(x, y)

    with evaluation_mode(model):
        total_loss, correct, count, classify = metric_sums(model, batches(), LOSSES[loss])
    return total_loss / max(count, 1), (correct / max(count, 1) if classify else float("nan"))


@torch.no_grad()
def _check_loss_first(model: nn.Module, dataset: Any, config: TrainConfig, dev) -> None:
    """The loss must fit the targets and the model's output: checked before the first step."""
    x, y = next(iter(torch.utils.data.DataLoader(dataset, batch_size=2, shuffle=False)))

    was_training = model.training
    model.eval()
    try:
        out = first_output(model, x.to(dev), config.dataset)
    finally:
        model.train(was_training)
    check_loss(config.loss, out, y.to(dev), f"the targets of {config.dataset}")


def _model_kwargs(config, train_data) -> dict[str, Any]:
    """The model's constructor arguments.

    The dataset's shape and class count, which ``--model-option`` may override (a head wider than
    the classes is allowed, a narrower one not).
    """
    kwargs = {
        "input_shape": tuple(train_data.input_shape),
        "num_classes": train_data.num_classes,
        **config.model_options,
    }
    classes = kwargs["num_classes"]
    if train_data.num_classes and (
        not isinstance(classes, int)
        or isinstance(classes, bool)
        or classes < train_data.num_classes
    ):
        raise LandscapeError(
            f"`model_options={{'num_classes': {classes!r}}}`: {config.dataset} has "
            f"{train_data.num_classes} classes, so the head needs at least that many outputs"
        )
    return kwargs


@dataclass
class _Run:
    """A run between epochs: what each epoch advances and each checkpoint stores."""

    config: TrainConfig
    model: nn.Module
    model_kwargs: dict[str, Any]
    optimizer: torch.optim.Optimizer
    hparams: dict[str, Any]
    train_data: Any
    device: torch.device
    first_epoch: int = 0
    step: int = 0
    history: dict[str, list[float]] = field(
        default_factory=lambda: {
            k: [] for k in ("train_loss", "train_acc", "test_loss", "test_acc", "lr", "seconds")
        }
    )

    def checkpoint(self, epoch: int) -> dict[str, Any]:
        """The run's checkpoint after ``epoch`` epochs (:func:`checkpoints.training_checkpoint`)."""
        return training_checkpoint(
            asdict(self.config),
            model=self.model,
            model_kwargs=self.model_kwargs,
            data_shape=self.train_data.input_shape,
            num_classes=self.train_data.num_classes,
            optimizer=self.optimizer,
            hparams=self.hparams,
            epoch=epoch,
            step=self.step,
            history=self.history,
        )


def _new_run(
    config: TrainConfig,
    dev: torch.device,
    weights: Mapping[str, Any] | None = None,
    source: str = "the checkpoint",
) -> tuple[_Run, Any]:
    """The datasets, and the model (initialised from the seed) and optimizer of a fresh run.

    Returns the run and the test set. The model is first built on the meta device: ``weights``
    (a resumed run's) that do not fit it, or a model whose training state does not fit in
    memory, are refused before it is allocated.
    """
    train_data = load_dataset(
        config.dataset, "train", root=config.data_root, augment=config.augment
    )
    test_data = load_dataset(config.dataset, "test", root=config.data_root, augment=False)
    steps_per_epoch = math.ceil(len(train_data.dataset) / config.batch_size)
    model_kwargs = _model_kwargs(config, train_data)
    probe = models.build_meta(config.model, **model_kwargs)
    if probe is not None:
        if weights is not None:
            fit_state_dict(probe, weights, source, load=False)
        resources.require_model(probe, dev, training=True)
    torch.manual_seed(config.seed)
    model = models.build_model(config.model, **model_kwargs).to(dev)
    optimizer, hparams = build_optimizer(
        config, model.parameters(), steps_per_epoch * config.epochs
    )
    return _Run(config, model, model_kwargs, optimizer, hparams, train_data, dev), test_data


def _train_epoch(run: _Run, epoch: int, callbacks: Callbacks) -> tuple[float, float, float]:
    """One pass over the training set, shuffled and augmented from ``(seed, epoch)``.

    Returns the epoch's mean training loss, its accuracy (NaN for regression) and the last step's
    lr.
    """
    config, dev = run.config, run.device
    gen = torch.Generator().manual_seed(epoch_seed(config.seed, epoch))
    torch.manual_seed(epoch_seed(config.seed, epoch))  # augmentation, dropout
    loader = torch.utils.data.DataLoader(
        run.train_data.dataset, batch_size=config.batch_size, shuffle=True, generator=gen
    )
    loss_fn, base_lr = LOSSES[config.loss], run.hparams["lr"]
    run.model.train()
    loss_sum, correct, seen = 0.0, 0, 0
    lr = base_lr
    for batch, (x, y) in enumerate(loader):
        x, y = x.to(dev), y.to(dev)
        run.step += 1
        lr = lr_at(config, base_lr, run.step, epoch)
        for group in run.optimizer.param_groups:
            group["lr"] = lr
        run.optimizer.zero_grad(set_to_none=True)
        out = run.model(x)
        if torch.is_floating_point(y):
            y = y.to(out.dtype)
        loss = loss_fn(out, y)
        if not torch.isfinite(loss):
            raise LandscapeError(
                f"training diverged at epoch {epoch + 1}, step {run.step} (loss {loss.item()}); "
                "lower `lr`"
            )
        loss.backward()
        run.optimizer.step()
        loss_sum += loss.item() * len(y)
        if not torch.is_floating_point(y):
            correct += (out.argmax(1) == y).sum().item()
        seen += len(y)
        callbacks.on_batch(epoch, batch, loss.item())
    regression = torch.is_floating_point(torch.as_tensor(run.train_data.dataset[0][1]))
    return loss_sum / seen, (correct / seen if not regression else float("nan")), lr


def _alpha(run: _Run) -> float | None:
    """DualAdam's α at the run's step (InvAdam: 1; other optimizers: None)."""
    if "switch_rate" in run.hparams:
        return switch_alpha(run.step, run.hparams["switch_rate"])
    return 1.0 if run.config.optimizer == "invadam" else None


def _epoch(run: _Run, epoch: int, callbacks: Callbacks, test_loader) -> EpochMetrics:
    """Train one epoch, evaluate on the test set and record the epoch in the run's history."""
    t0 = time.perf_counter()
    train_loss, train_acc, lr = _train_epoch(run, epoch, callbacks)
    test_loss, test_acc = evaluate(run.model, test_loader, run.device, run.config.loss)
    alpha = _alpha(run)
    metrics = EpochMetrics(
        epoch=epoch + 1,
        step=run.step,
        train_loss=train_loss,
        train_acc=train_acc,
        test_loss=test_loss,
        test_acc=test_acc,
        lr=lr,
        alpha=alpha,
        seconds=time.perf_counter() - t0,
    )
    for key in ("train_loss", "train_acc", "test_loss", "test_acc", "lr", "seconds"):
        run.history[key].append(getattr(metrics, key))
    if alpha is not None:
        run.history.setdefault("alpha", []).append(alpha)
    return metrics


def _save_epoch(
    run: _Run, epoch: int, out_path: Path, save_every: int, outputs: _Outputs
) -> Path | None:
    """Save the checkpoint after epoch ``epoch`` (1-based) when it is due.

    The checkpoint to ``out_path`` at the end and every ``save_every``-th epoch, then also as a
    snapshot beside it (returned).
    """
    snapshot = bool(save_every) and epoch % save_every == 0
    if not (epoch == run.config.epochs or snapshot):
        return None
    state = run.checkpoint(epoch)
    with interrupts.deferred():  # a signal now waits until the checkpoint is written
        outputs.save(out_path, state)
        if not snapshot:
            return None
        snap = snapshot_path(out_path, epoch)
        outputs.save(snap, state, "snapshot")
    return snap


def train(
    config: TrainConfig,
    *,
    out: str | os.PathLike[str] | None = None,
    device: str = "auto",
    save_every: int = 0,
    resume: str | os.PathLike[str] | None = None,
    callbacks: Callbacks | None = None,
    trust: bool = False,
    overwrite: bool = False,
) -> TrainResult:
    """Train ``config`` (or continue the run in ``resume`` up to ``config.epochs``).

    Writes the checkpoint to ``out`` at the end and, with ``save_every`` N, also after every N-th
    epoch (to ``out``, which always holds the latest state, and to ``<out stem>-epochN.pt``).
    ``out`` and every snapshot the run will write are checked before training
    (:func:`check_output`, and the disk's free space); a write that still fails saves the run to a
    fresh file named in the error. On ``resume``, the stored config's model and
    dataset specs must be built-in ones, or ``config``'s own (the command line's), or ``trust``.
    """
    callbacks = callbacks or Callbacks()
    dev = resolve_device(device)

    resources.check_options({"save_every": save_every})
    ckpt = None
    if resume is not None:
        ckpt, config = _read_resume(resume, config, trust)
    config = config.validate()
    out_path = Path(out) if out is not None else (Path(resume) if resume is not None else None)
    out_path = out_path or default_output(config)
    resuming = resume is not None
    check_output(
        out_path, config, overwrite=overwrite or (resuming and out is None), any_epochs=resuming
    )

    weights = None if ckpt is None else ckpt["state_dict"]
    run, test_data = _new_run(config, dev, weights, str(resume))
    if ckpt is not None:
        _restore(run, ckpt, resume)
    snaps = _snapshots(out_path, run.first_epoch, config.epochs, save_every)
    for snap in snaps:  # every file the run writes, before it starts
        check_output(snap, config, overwrite=overwrite, any_epochs=resuming, what="snapshot")
    size = _checkpoint_size(run)
    existing = out_path.stat().st_size if out_path.is_file() else 0
    files.require_space(out_path, size * (1 + len(snaps)) + existing, "checkpoint")
    outputs = _Outputs(config, [out_path, *snaps], overwrite or (resuming and out is None))
    test_loader = torch.utils.data.DataLoader(test_data.dataset, batch_size=512, shuffle=False)
    _check_loss_first(run.model, run.train_data.dataset, config, dev)
    steps_per_epoch = math.ceil(len(run.train_data.dataset) / config.batch_size)
    callbacks.on_start(
        config, epochs=config.epochs, steps_per_epoch=steps_per_epoch, first_epoch=run.first_epoch
    )
    snapshots: list[Path] = []
    metrics: EpochMetrics | None = None
    for epoch in range(run.first_epoch, config.epochs):
        metrics = _epoch(run, epoch, callbacks, test_loader)
        callbacks.on_epoch(metrics)
        snap = _save_epoch(run, epoch + 1, out_path, save_every, outputs)
        if snap is not None:
            snapshots.append(snap)
    assert metrics is not None
    return TrainResult(
        path=out_path,
        config=config,
        hparams=run.hparams,
        history=run.history,
        final=metrics,
        parameters=count_parameters(run.model),
        snapshots=tuple(snapshots),
    )
