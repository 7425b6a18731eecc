"""What ``hessian``, ``scan`` and ``audit`` measure on: a checkpoint's model and a fixed sample set.

DESIGN.md's shared options: ``--model`` (needed for files that carry no model spec, or to
override it), ``--dataset``/``--data-root`` (default: the dataset recorded in a landscape
checkpoint), ``--split`` (train by default), ``--samples N`` (a seeded, class-stratified
subset of N samples of the split, :func:`landscape_cli.evaluation.select_indices`, the same
for every command given the same ``--seed``; no augmentation), ``--batch-size``, ``--device``,
``--trust-checkpoint``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from landscape_cli.checkpoints import LoadedModel, load_model
from landscape_cli.errors import LandscapeError
from landscape_cli.evaluation import Batch, indices_sha256, select_indices


@dataclass(frozen=True)
class Workload:
    """A model ready to evaluate, and the ordered batches of samples it is measured on."""

    loaded: LoadedModel
    batches: list[Batch]
    dataset: str
    split: str
    samples: int
    batch_size: int
    seed: int = 0
    samples_sha256: str = ""
    loss: str | None = None  # the loss the checkpoint was trained with, where it says

    def resolve_loss(self, loss: str | None) -> str:
        """``--loss`` when given, else the checkpoint's training loss, else cross-entropy."""
        return (
            loss or self.loss or "ce"
        )  # SHA-256 of the chosen sample indices (little-endian int64)

    @property
    def model(self) -> torch.nn.Module:
        return self.loaded.model


def load_workload(
    checkpoint: str | os.PathLike[str],
    *,
    model: str | None = None,
    model_options: dict[str, Any] | None = None,
    dataset: str | None = None,
    data_root: str | None = None,
    split: str = "train",
    samples: int | None = 1024,
    batch_size: int = 128,
    trust: bool = False,
    seed: int = 0,
) -> Workload:
    """Load ``checkpoint`` and ``samples`` samples of ``split`` of its dataset (chosen by
    :func:`~landscape_cli.evaluation.select_indices` with ``seed``)."""
    from landscape_cli.checkpoints import (
        check_version,
        is_landscape_checkpoint,
        read_file,
        stored_model_spec,
    )
    from landscape_cli.data import load_dataset
    from landscape_cli.specs import check_file_spec

    if batch_size < 1:
        raise LandscapeError(f"--batch-size must be >= 1, got {batch_size}")
    if samples is not None and samples < 0:
        raise LandscapeError(f"--samples must be >= 0 (0 = all), got {samples}")
    path = Path(checkpoint)
    raw = read_file(path, trust=trust)
    if is_landscape_checkpoint(raw):
        # Specs stored in the file are checked before anything is imported or loaded.
        check_version(raw, path)
        if model is None:
            stored_model_spec(raw, path, trust=trust)
    ds_name, root = dataset, data_root
    if ds_name is None:
        stored = raw.get("dataset") if isinstance(raw, dict) else None
        if isinstance(stored, dict) and stored.get("name"):
            ds_name = check_file_spec(stored["name"], "dataset", str(path), trust=trust)
            stored_root = stored.get("root")
            if stored_root is not None and not isinstance(stored_root, str):
                raise LandscapeError(f"{path} records a dataset root that is not a string")
            root = root if root is not None else stored_root
        else:
            raise LandscapeError(
                f"{path} does not record its dataset; pass --dataset (digits, cifar10, cifar100, "
                "imagefolder:PATH or package.module:factory)"
            )
    data = load_dataset(ds_name, split, root=root, augment=False)
    loaded = load_model(
        path,
        model=model,
        input_shape=data.input_shape,
        num_classes=data.num_classes,
        model_options=model_options,
        trust=trust,
        contents=raw,
    )
    indices = select_indices(data.dataset, samples, seed)
    subset = torch.utils.data.Subset(data.dataset, indices.tolist())
    loader = torch.utils.data.DataLoader(subset, batch_size=batch_size, shuffle=False)
    batches = [Batch(x, torch.as_tensor(y)) for x, y in loader]
    return Workload(
        loaded=loaded,
        batches=batches,
        dataset=ds_name,
        split=split,
        samples=sum(len(b) for b in batches),
        batch_size=batch_size,
        seed=seed,
        samples_sha256=indices_sha256(indices),
        loss=stored_loss(raw),
    )


def stored_loss(raw: Any) -> str | None:
    """The training loss a landscape checkpoint records (``loss``), None when it does not."""
    if not isinstance(raw, dict):
        return None
    value = raw.get("loss")
    if value is None and isinstance(raw.get("train"), dict):
        config = raw["train"].get("config")
        value = config.get("loss") if isinstance(config, dict) else None
    return value if value in ("ce", "mse") else None
