"""A training run's configuration: :class:`TrainConfig`, its optimizer, schedule and file name.

Also the stored config of a checkpoint read back (:func:`_config_from_checkpoint`, checked
field by field before it is used) and whether it is the same run as a given one
(:func:`same_run`).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import torch

from dualadam import DualAdam, InvAdam
from landscape_cli import resources
from landscape_cli.errors import LandscapeError, check_choice
from landscape_cli.losses import LOSSES
from landscape_cli.resources import DOMAINS
from landscape_cli.specs import check_file_spec, check_plain

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


def _config_from_checkpoint(
    ckpt: Mapping[str, Any], path: Path, *, trust: bool = False, given: tuple[str, ...] = ()
) -> TrainConfig:
    """The training config stored in ``ckpt``, checked before anything in it is used.

    Its values must be plain data of the types :class:`TrainConfig` declares, and its model and
    dataset specs built-in ones unless ``trust`` or the user gave them (``given``).
    """
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


def _check_stored_domains(stored: TrainConfig, path: str | os.PathLike[str]) -> None:
    """The stored config's counts, rates and seed in their domains, the error naming the file."""
    for f in fields(stored):
        value, domain = getattr(stored, f.name), DOMAINS.get(f.name)
        if domain is not None and value is not None and not domain.holds(value):
            if f.name == "epochs" and value == 0:
                continue  # replaced by the command's --epochs (checked as given)
            raise LandscapeError(
                f"{path}: its training config has {f.name}={value!r}, expected {domain.text()}; "
                "it cannot be resumed"
            )
