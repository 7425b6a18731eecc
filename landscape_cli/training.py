"""The training loop behind ``landscape train``: optimizers, schedules, resumable checkpoints.

Reproducibility contract: on the CPU, the same :class:`TrainConfig` gives the same weights bit for
bit, and a run resumed from any epoch-end checkpoint ends with the same weights as the run that
was never interrupted. That holds because every random choice is derived from ``(seed, epoch)``:
the model's initialisation from ``seed``; each epoch's shuffling and augmentation from a fresh
seed for that epoch; and the learning rate is a pure function of the step and epoch counters
(no scheduler state to lose).

Learning rate at optimizer step ``t`` (1-based) in epoch ``e`` (0-based) of ``E``::

    lr(t, e) = lr · min(1, t / warmup_steps) · c(e),
    c(e) = 1                                                  (scheduler "none")
    c(e) = ρ + (1 − ρ)(1 + cos(π e / E)) / 2, ρ = 1/1000      (scheduler "cosine")

i.e. cosine annealing per epoch down to lr/1000 as in the DualAdam authors' code
(``CosineAnnealingLR(T_max=epochs, eta_min=lr/1000)``), with an optional linear warm-up.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from landscape_cli import files, interrupts
from landscape_cli.checkpoints import (
    FORMAT,
    check_checkpoint,
    check_optimizer_state,
    checkpoint_bytes,
    fit_state_dict,
    read_file,
    training_checkpoint,
)
from landscape_cli.devices import resolve_device
from landscape_cli.errors import LandscapeError, check_choice, one_line
from landscape_cli.evaluation import LOSSES, Batch, evaluation_mode, metric_sums

OPTIMIZERS = ("adam", "adamw", "sgd", "radam", "nadam", "invadam", "dualadam")
SCHEDULERS = ("cosine", "none")

#: Default learning rates, chosen so that ``--model cnn --dataset digits`` reaches >= 95 % test
#: accuracy with the defaults alone (measured: docs/commands.md). Adam/AdamW use the paper's 1e-3,
#: DualAdam the authors' CIFAR recipe (1e-2); RAdam needs 3e-3 to get there in 20 epochs.
#: InvAdam's step is m̂·√v̂, the size of the squared gradient, so it needs a much larger rate to
#: move at all (10 reaches ~94 % on digits; on its own it may not converge, paper §IV-H).
DEFAULT_LR = {
    "adam": 1e-3,
    "adamw": 1e-3,
    "sgd": 5e-2,
    "radam": 3e-3,
    "nadam": 2e-3,
    "invadam": 10.0,
    "dualadam": 1e-2,
}
DEFAULT_WEIGHT_DECAY = {"adamw": 1e-2}
#: α reaches 0 after the first sixth of training, as the paper's 8e-5 does on CIFAR
#: (12,500 of 78,200 steps): ξ = 6 / total steps.
SWITCH_FRACTION = 6.0


@dataclass(frozen=True)
class TrainConfig:
    """Everything that determines a training run (stored in the checkpoint)."""

    model: str = "cnn"
    dataset: str = "digits"
    optimizer: str = "adam"
    epochs: int = 20
    batch_size: int = 128
    lr: float | None = None
    weight_decay: float | None = None
    switch_rate: float | None = None
    momentum: float = 0.9
    scheduler: str = "cosine"
    warmup_steps: int = 0
    seed: int = 0
    data_root: str | None = None
    augment: bool = True
    model_options: dict[str, Any] = field(default_factory=dict)
    loss: str = "ce"  # "ce" (classification) or "mse" (regression, or one-hot class targets)

    def resolved_lr(self) -> float:
        """The learning rate, or the optimizer's default."""
        return DEFAULT_LR[self.optimizer] if self.lr is None else float(self.lr)

    def resolved_weight_decay(self) -> float:
        """The weight decay, or the optimizer's default."""
        if self.weight_decay is not None:
            return float(self.weight_decay)
        return DEFAULT_WEIGHT_DECAY.get(self.optimizer, 0.0)

    def resolved_switch_rate(self, total_steps: int) -> float:
        """DualAdam's switch rate, or the default for a run of ``total_steps`` steps."""
        if self.switch_rate is not None:
            return float(self.switch_rate)
        return SWITCH_FRACTION / max(1, total_steps)

    def validate(self) -> TrainConfig:
        """The config with the optimizer and loss checked and normalised.

        Every count, rate and the seed must be in its domain (:func:`resources.check_options`).
        """
        from landscape_cli import resources

        opt = self.optimizer.lower()
        if opt not in OPTIMIZERS:
            raise LandscapeError(
                f"unknown optimizer {self.optimizer!r}: choose {', '.join(OPTIMIZERS)}"
            )
        check_choice("loss", self.loss, LOSSES)
        if self.scheduler not in SCHEDULERS:
            raise LandscapeError(f"unknown scheduler {self.scheduler!r}: choose cosine or none")
        checks = [
            (self.epochs >= 1, f"`epochs` must be >= 1, got {self.epochs}"),
            (self.batch_size >= 1, f"`batch_size` must be >= 1, got {self.batch_size}"),
            (self.warmup_steps >= 0, f"`warmup_steps` must be >= 0, got {self.warmup_steps}"),
            (
                self.lr is None or (self.lr > 0 and math.isfinite(self.lr)),
                f"`lr` must be > 0, got {self.lr}",
            ),
            (
                self.weight_decay is None or self.weight_decay >= 0,
                f"`weight_decay` must be >= 0, got {self.weight_decay}",
            ),
            (
                self.switch_rate is None
                or (self.switch_rate >= 0 and math.isfinite(self.switch_rate)),
                f"`switch_rate` must be >= 0, got {self.switch_rate}",
            ),
            (0 <= self.momentum < 1, f"`momentum` must be in [0, 1), got {self.momentum}"),
        ]
        for ok, message in checks:
            if not ok:
                raise LandscapeError(message)
        resources.check_fields(self)  # and each in its domain: finite, the seed, the counts
        return replace(self, optimizer=opt)


#: Fields of a :class:`TrainConfig` that the default checkpoint name does not spell out.
#: ``epochs`` is left out: a run resumed for more epochs keeps its file.
_NAMED = ("model", "dataset", "optimizer", "seed", "epochs", "data_root")


def config_tag(config: TrainConfig) -> str:
    """Six hex digits of the settings that differ from the defaults, or ``""`` when none do.

    The settings the default name does not spell out (``lr``, ``warmup_steps``,
    ``model_options``, ...), so that two different configurations never share a default file.
    """
    import hashlib
    import json

    base = asdict(TrainConfig())
    changed = {
        k: v for k, v in asdict(config).items() if k not in _NAMED and _plain(v) != _plain(base[k])
    }
    if not changed:
        return ""
    text = json.dumps(_plain(changed), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:6]


def _plain(value: Any) -> Any:
    """``value`` with tuples as lists and keys as str (a config as stored and as given compare)."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def default_output(config: TrainConfig) -> Path:
    """``checkpoints/<model>-<dataset>-<optimizer>-s<seed>[-<tag>].pt``, specs made filename-safe.

    ``<tag>`` (:func:`config_tag`) is there when any other setting but ``epochs`` differs from its
    default: Adam at lr 1e-2 with a warm-up never replaces the plain Adam run's file.
    """

    def safe(text: str) -> str:
        keep = "".join(c if c.isalnum() or c in "-_." else "-" for c in text.split("/")[-1])
        return keep.strip("-.") or "custom"

    tag = config_tag(config)
    return Path("checkpoints") / (
        f"{safe(config.model)}-{safe(config.dataset)}-{config.optimizer}-s{config.seed}"
        + (f"-{tag}" if tag else "")
        + ".pt"
    )


def build_optimizer(
    config: TrainConfig, params: Any, total_steps: int
) -> tuple[torch.optim.Optimizer, dict[str, Any]]:
    """The optimizer named by ``config`` and the hyperparameters it was built with."""
    from dualadam import DualAdam, InvAdam

    name = config.optimizer
    lr, wd = config.resolved_lr(), config.resolved_weight_decay()
    hp: dict[str, Any] = {"lr": lr, "weight_decay": wd}
    if name == "adam":
        opt = torch.optim.Adam(params, lr=lr, weight_decay=wd)
    elif name == "adamw":
        opt = torch.optim.AdamW(params, lr=lr, weight_decay=wd)
    elif name == "sgd":
        hp["momentum"] = config.momentum
        opt = torch.optim.SGD(params, lr=lr, momentum=config.momentum, weight_decay=wd)
    elif name == "radam":
        opt = torch.optim.RAdam(params, lr=lr, weight_decay=wd)
    elif name == "nadam":
        opt = torch.optim.NAdam(params, lr=lr, weight_decay=wd)
    elif name == "invadam":
        opt = InvAdam(params, lr=lr, weight_decay=wd)
    else:
        hp["switch_rate"] = config.resolved_switch_rate(total_steps)
        opt = DualAdam(params, lr=lr, weight_decay=wd, switch_rate=hp["switch_rate"])
    return opt, hp


def lr_at(config: TrainConfig, base_lr: float, step: int, epoch: int) -> float:
    """The learning rate of optimizer step ``step`` (1-based) in ``epoch`` (0-based)."""
    factor = 1.0
    if config.warmup_steps > 0:
        factor = min(1.0, step / config.warmup_steps)
    if config.scheduler == "cosine":
        floor = 1e-3
        factor *= floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * epoch / config.epochs))
    return base_lr * factor


def epoch_seed(seed: int, epoch: int) -> int:
    """The seed of epoch ``epoch``'s shuffling and augmentation (independent of earlier epochs)."""
    return (seed * 1_000_003 + epoch * 7_919 + 1) % (2**63 - 1)


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
    floating-point, i.e. regression, targets): :func:`~landscape_cli.evaluation.metric_sums`,
    the sums behind :func:`~landscape_cli.evaluation.loss_and_accuracy`, on the loader's
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
    from landscape_cli.evaluation import check_loss

    x, y = next(iter(torch.utils.data.DataLoader(dataset, batch_size=2, shuffle=False)))
    from landscape_cli.evaluation import first_output

    was_training = model.training
    model.eval()
    try:
        out = first_output(model, x.to(dev), config.dataset)
    finally:
        model.train(was_training)
    check_loss(config.loss, out, y.to(dev), f"the targets of {config.dataset}")


def _config_from_checkpoint(
    ckpt: Mapping[str, Any], path: Path, *, trust: bool = False, given: tuple[str, ...] = ()
) -> TrainConfig:
    """The training config stored in ``ckpt``, checked before anything in it is used.

    Its values must be plain data of the types :class:`TrainConfig` declares, and its model and
    dataset specs built-in ones unless ``trust`` or the user gave them (``given``).
    """
    from landscape_cli.specs import check_file_spec, check_plain

    try:
        stored = dict(ckpt["train"]["config"])
    except (KeyError, TypeError, ValueError):
        raise LandscapeError(f"{path} has no training config to resume from") from None
    check_plain(stored, "the training config", str(path))
    known = {f for f in TrainConfig.__dataclass_fields__}
    values = {k: v for k, v in stored.items() if k in known}
    for key, types in _CONFIG_TYPES.items():
        value = values.get(key)
        ok = isinstance(value, types) and (bool in types or not isinstance(value, bool))
        if key in values and not ok:
            raise LandscapeError(
                f"{path}: the stored training config has {key}={values[key]!r} of the wrong type"
            )
    for key in ("model", "dataset"):
        if key in values:
            values[key] = check_file_spec(values[key], key, str(path), trust=trust, given=given)
    return TrainConfig(**values)


_NONE = type(None)
_CONFIG_TYPES: dict[str, tuple[type, ...]] = {
    "model": (str,),
    "dataset": (str,),
    "optimizer": (str,),
    "epochs": (int,),
    "batch_size": (int,),
    "lr": (int, float, _NONE),
    "weight_decay": (int, float, _NONE),
    "switch_rate": (int, float, _NONE),
    "momentum": (int, float),
    "scheduler": (str,),
    "warmup_steps": (int,),
    "seed": (int,),
    "data_root": (str, _NONE),
    "augment": (bool,),
    "model_options": (dict,),
    "loss": (str,),
}


def same_run(stored: Any, config: TrainConfig, *, any_epochs: bool = False) -> bool:
    """Whether ``stored`` (a checkpoint's ``train.config``) is the configuration ``config``.

    Every setting counts but ``data_root`` (where the data lies), and ``epochs`` when
    ``any_epochs`` (a resumed run goes on for more epochs in the same file).
    """
    if not isinstance(stored, Mapping):
        return False
    base = asdict(TrainConfig())
    for key, value in asdict(config).items():
        if key == "data_root" or (any_epochs and key == "epochs"):
            continue
        if _plain(stored.get(key, base[key])) != _plain(value):
            return False
    return True


def _holds_same_run(path: Path, config: TrainConfig, any_epochs: bool) -> bool:
    """Whether the existing file ``path`` is a landscape checkpoint of the run ``config``."""
    try:
        obj = read_file(path)
    except LandscapeError:
        return False
    if not (isinstance(obj, Mapping) and obj.get("format") == FORMAT):
        return False
    train = obj.get("train")
    return isinstance(train, Mapping) and same_run(
        train.get("config"), config, any_epochs=any_epochs
    )


def check_output(
    path: Path,
    config: TrainConfig,
    *,
    overwrite: bool = False,
    any_epochs: bool = False,
    what: str = "checkpoint",
) -> None:
    """Check a checkpoint path before training.

    ``path`` must be creatable and writable (:func:`landscape_cli.files.check_output`: a device,
    FIFO, socket or folder is refused even with ``overwrite``), and an existing file there a
    landscape checkpoint of the same run (every setting, :func:`same_run`) unless ``overwrite``.
    """
    if path.is_dir():
        raise LandscapeError(f"`out` {path} is a folder; give a file path such as {path}/run.pt")
    files.check_output(path, what)
    if path.exists() and not overwrite and not _holds_same_run(path, config, any_epochs):
        raise LandscapeError(
            f"the {what} {path} exists and is not a landscape checkpoint of this run (same "
            "settings); refusing to overwrite it (choose another `out`, or pass `overwrite=True`)"
        )


def snapshot_path(out_path: Path, epoch: int) -> Path:
    """The ``save_every`` snapshot of ``epoch``: ``<out stem>-epoch<epoch><out suffix>``."""
    return out_path.with_name(f"{out_path.stem}-epoch{epoch}{out_path.suffix}")


def _snapshots(out_path: Path, first_epoch: int, epochs: int, save_every: int) -> list[Path]:
    """The snapshots a run from ``first_epoch`` to ``epochs`` will write."""
    if not save_every:
        return []
    due = range(first_epoch + 1, epochs + 1)
    return [snapshot_path(out_path, e) for e in due if e % save_every == 0]


def _checkpoint_size(run: _Run) -> int:
    """About the bytes of the run's checkpoint: weights, buffers, optimizer state, history."""
    params = sum(p.numel() * p.element_size() for p in run.model.parameters())
    buffers = sum(b.numel() * b.element_size() for b in run.model.buffers())
    slots = 1 if run.config.optimizer == "sgd" else 2  # momentum; Adam's two moments
    history = 64 * run.config.epochs * 8
    return params * (1 + slots) + buffers + history + 64 * 1024


def _save_or_fallback(path: Path, state: Mapping[str, Any], what: str = "checkpoint") -> None:
    """Save ``state`` to ``path``.

    If that fails after training, save it to a fresh ``<stem>.rescued-<random>.pt``
    (beside ``path``, else in the working or temporary folder), read it back, and name it in
    the error (:func:`landscape_cli.files.save`).
    """
    files.save(path, checkpoint_bytes(state), what=what, product="the trained model")


def _signature(path: Path) -> tuple[int, int, int, int] | None:
    """What tells a file apart from the one this run wrote: device, inode, size, mtime."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns


class _Outputs:
    """The run's checkpoint files, each checked again under its lock right before it is written.

    A file that changed since the checks before training (another process wrote it) is replaced
    only if it is a checkpoint of this run, or with ``overwrite``; otherwise this run's checkpoint
    is rescued to a fresh file and the error says where.
    """

    def __init__(self, config: TrainConfig, paths: list[Path], overwrite: bool) -> None:
        self.config, self.overwrite = config, overwrite
        self.known = {p: _signature(p) for p in paths}

    def save(self, path: Path, state: Mapping[str, Any], what: str = "checkpoint") -> None:
        """Write ``state`` to ``path`` (or rescue it, see the class)."""
        try:
            with files.locked(path, what=what):
                now = _signature(path)
                changed = now is not None and now != self.known.get(path)
                if changed and not self.overwrite and not _holds_same_run(path, self.config, True):
                    raise files.WriteError(
                        f"the {what} {path} was written meanwhile by another run; it was kept "
                        "(pass another `out` to keep both, or `overwrite=True`)"
                    )
                _save_or_fallback(path, state, what)
                self.known[path] = _signature(path)
        except files.WriteError as exc:  # the lock, or the file another run wrote
            try:
                saved = files.rescue_bytes(path, checkpoint_bytes(state), what=what)
            except files.WriteError as again:
                raise LandscapeError(f"{exc}; {again}") from None
            raise LandscapeError(f"{exc}; the trained model was saved to {saved} instead") from None


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
    from landscape_cli import resources
    from landscape_cli.data import load_dataset
    from landscape_cli.models import build_meta, build_model

    train_data = load_dataset(
        config.dataset, "train", root=config.data_root, augment=config.augment
    )
    test_data = load_dataset(config.dataset, "test", root=config.data_root, augment=False)
    steps_per_epoch = math.ceil(len(train_data.dataset) / config.batch_size)
    model_kwargs = _model_kwargs(config, train_data)
    probe = build_meta(config.model, **model_kwargs)
    if probe is not None:
        if weights is not None:
            fit_state_dict(probe, weights, source, load=False)
        resources.require_model(probe, dev, training=True)
    torch.manual_seed(config.seed)
    model = build_model(config.model, **model_kwargs).to(dev)
    optimizer, hparams = build_optimizer(
        config, model.parameters(), steps_per_epoch * config.epochs
    )
    return _Run(config, model, model_kwargs, optimizer, hparams, train_data, dev), test_data


def _read_resume(
    resume: str | os.PathLike[str], config: TrainConfig, trust: bool
) -> tuple[Mapping[str, Any], TrainConfig]:
    """The checkpoint to resume and the run's config: the stored one, with ``config``'s epochs."""
    ckpt = read_file(resume)
    if not (isinstance(ckpt, Mapping) and ckpt.get("format") == FORMAT):
        raise LandscapeError(f"{resume} is not a landscape training checkpoint; cannot resume")
    for key in ("state_dict", "optimizer", "train"):
        if key not in ckpt:
            raise LandscapeError(
                f"{resume} has no {key!r} entry; it cannot be resumed (start a new run)"
            )
    check_checkpoint(ckpt, resume, resume=True)
    stored = _config_from_checkpoint(
        ckpt, Path(resume), trust=trust, given=(config.model, config.dataset)
    )
    _check_stored_domains(stored, resume)
    if ckpt["optimizer"]["name"] != stored.optimizer.lower():
        raise LandscapeError(
            f"{resume}: its optimizer state was saved by {ckpt['optimizer']['name']!r} but its "
            f"training config names {stored.optimizer!r}: the optimizer does not match its state"
        )
    return ckpt, replace(stored, epochs=config.epochs if config.epochs else stored.epochs)


def _check_stored_domains(stored: TrainConfig, path: str | os.PathLike[str]) -> None:
    """The stored config's counts, rates and seed in their domains, the error naming the file."""
    from dataclasses import fields

    from landscape_cli.resources import DOMAINS

    for f in fields(stored):
        value, domain = getattr(stored, f.name), DOMAINS.get(f.name)
        if domain is not None and value is not None and not domain.holds(value):
            if f.name == "epochs" and value == 0:
                continue  # replaced by the command's --epochs (checked as given)
            raise LandscapeError(
                f"{path}: its training config has {f.name}={value!r}, expected {domain.text()}; "
                "it cannot be resumed"
            )


def _restore(run: _Run, ckpt: Mapping[str, Any], resume: str | os.PathLike[str]) -> None:
    """Put the weights, optimizer state, counters and history of ``ckpt`` into ``run``."""
    fit_state_dict(run.model, ckpt["state_dict"], str(resume))
    check_optimizer_state(run.optimizer, ckpt["optimizer"]["state_dict"], resume)
    try:
        run.optimizer.load_state_dict(ckpt["optimizer"]["state_dict"])
        run.hparams = dict(ckpt["optimizer"]["hparams"])
        for group in run.optimizer.param_groups:  # keep the switch rate the run started with
            if "switch_rate" in run.hparams:
                group["switch_rate"] = run.hparams["switch_rate"]
        run.first_epoch, run.step = int(ckpt["train"]["epoch"]), int(ckpt["train"]["step"])
        run.history = {k: list(v) for k, v in ckpt["train"]["history"].items()}
        float(run.hparams["lr"])
    except (KeyError, TypeError, ValueError, AttributeError, RuntimeError) as exc:
        reason = one_line(exc)
        raise LandscapeError(
            f"{resume}: the optimizer or training state does not fit the run "
            f"({type(exc).__name__}: {reason}); it cannot be resumed"
        ) from None
    if run.first_epoch >= run.config.epochs:
        raise LandscapeError(
            f"{resume} already holds {run.first_epoch} epochs; pass `epochs` above that to go on"
        )


def _train_epoch(run: _Run, epoch: int, cb: Callbacks) -> tuple[float, float, float]:
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
        cb.on_batch(epoch, batch, loss.item())
    regression = torch.is_floating_point(torch.as_tensor(run.train_data.dataset[0][1]))
    return loss_sum / seen, (correct / seen if not regression else float("nan")), lr


def _alpha(run: _Run) -> float | None:
    """DualAdam's α at the run's step (InvAdam: 1; other optimizers: None)."""
    if "switch_rate" in run.hparams:
        from dualadam import switch_alpha

        return switch_alpha(run.step, run.hparams["switch_rate"])
    return 1.0 if run.config.optimizer == "invadam" else None


def _epoch(run: _Run, epoch: int, cb: Callbacks, test_loader) -> EpochMetrics:
    """Train one epoch, evaluate on the test set and record the epoch in the run's history."""
    t0 = time.perf_counter()
    train_loss, train_acc, lr = _train_epoch(run, epoch, cb)
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
    from landscape_cli.models import count_parameters

    cb = callbacks or Callbacks()
    dev = resolve_device(device)
    from landscape_cli import resources

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
    cb.on_start(
        config, epochs=config.epochs, steps_per_epoch=steps_per_epoch, first_epoch=run.first_epoch
    )
    snapshots: list[Path] = []
    metrics: EpochMetrics | None = None
    for epoch in range(run.first_epoch, config.epochs):
        metrics = _epoch(run, epoch, cb, test_loader)
        cb.on_epoch(metrics)
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
