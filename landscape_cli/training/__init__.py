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

The package's modules:

- :mod:`~landscape_cli.training.config`: :class:`TrainConfig`, the optimizers and their default
  rates, the learning-rate schedule (:func:`lr_at`), the epoch seeds, the default checkpoint name,
  and the stored config of a checkpoint read back (:func:`same_run`);
- :mod:`~landscape_cli.training.resume`: the run's files: output checks (:func:`check_output`),
  snapshots, writes checked again under their locks, and resuming from a checkpoint;
- :mod:`~landscape_cli.training.loop`: the loop itself (:func:`train`, :func:`evaluate`, the
  :class:`Callbacks` and what a run returns).

Every public name is importable from ``landscape_cli.training`` itself.
"""

from landscape_cli.training.config import (
    DEFAULT_LR,
    DEFAULT_WEIGHT_DECAY,
    OPTIMIZERS,
    SCHEDULERS,
    SWITCH_FRACTION,
    TrainConfig,
    build_optimizer,
    config_tag,
    default_output,
    epoch_seed,
    lr_at,
    same_run,
)
from landscape_cli.training.loop import (
    Callbacks,
    EpochMetrics,
    TrainResult,
    evaluate,
    train,
)
from landscape_cli.training.resume import check_output, snapshot_path

__all__ = [
    "DEFAULT_LR",
    "DEFAULT_WEIGHT_DECAY",
    "OPTIMIZERS",
    "SCHEDULERS",
    "SWITCH_FRACTION",
    "Callbacks",
    "EpochMetrics",
    "TrainConfig",
    "TrainResult",
    "build_optimizer",
    "check_output",
    "config_tag",
    "default_output",
    "epoch_seed",
    "evaluate",
    "lr_at",
    "same_run",
    "snapshot_path",
    "train",
]
