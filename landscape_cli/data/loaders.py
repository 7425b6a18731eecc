"""The dataset loaders behind :func:`load_dataset` (:mod:`landscape_cli.data` documents each spec).

The digits and CIFAR (from :mod:`~landscape_cli.data.digits` and :mod:`~landscape_cli.data.cifar`),
image folders (:mod:`landscape_cli.data.imagefolder`) and a user's ``package.module:factory``,
each returned as a :class:`LoadedDataset` with its input shape and number of classes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.data import Dataset, TensorDataset

from landscape_cli.data.cifar import CIFAR_FORMATS, load_cifar
from landscape_cli.data.digits import INPUT_SHAPE, NUM_CLASSES, digits_dataset
from landscape_cli.errors import LandscapeError, one_line
from landscape_cli.specs import call_factory, resolve_spec

#: The registry names accepted by :func:`load_dataset` (besides ``imagefolder:PATH`` and
#: ``module:factory``).
DATASET_NAMES: tuple[str, ...] = ("digits", "cifar10", "cifar100")
SPLITS: tuple[str, ...] = ("train", "test")


@dataclass(frozen=True)
class LoadedDataset:
    """A dataset with the facts a model needs: input shape and number of classes.

    ``dataset`` yields (float32 input tensor, integer target) pairs; ``classes`` holds the class
    names where the source has them (else it is empty).
    """

    dataset: Dataset
    name: str
    input_shape: tuple[int, ...]
    num_classes: int
    split: str
    classes: tuple[str, ...] = ()


def _unknown_dataset_message(name: str) -> str:
    return (
        f"unknown dataset {name!r}: choose one of {', '.join(DATASET_NAMES)}, "
        "or imagefolder:PATH, or package.module:factory"
    )


def _load_digits(split: str) -> LoadedDataset:
    return LoadedDataset(
        dataset=digits_dataset(split),
        name="digits",
        input_shape=INPUT_SHAPE,
        num_classes=NUM_CLASSES,
        split=split,
        classes=tuple(str(d) for d in range(NUM_CLASSES)),
    )


def _load_cifar(name: str, split: str, root: str | None, augment: bool) -> LoadedDataset:
    dataset = load_cifar(name, split, root, augment)
    return LoadedDataset(
        dataset=dataset,
        name=name,
        input_shape=(3, 32, 32),
        num_classes=CIFAR_FORMATS[name].num_classes,
        split=split,
        classes=dataset.classes,
    )


def _target_classes(target: Any) -> int:
    """Classes implied by one target: label + 1 for an integer, K for a vector of K values."""
    value = torch.as_tensor(target)
    if value.ndim == 0:
        if value.is_floating_point() and value != value.round():
            return 1  # a regression target: one output
        return int(value.item()) + 1
    return int(value.shape[-1])


def _infer_num_classes(dataset: Any) -> int:
    classes = getattr(dataset, "classes", None)
    if isinstance(classes, Sequence) and not isinstance(classes, str) and len(classes) > 0:
        return len(classes)
    num_classes = getattr(dataset, "num_classes", None)
    if isinstance(num_classes, int) and not isinstance(num_classes, bool) and num_classes > 0:
        return num_classes
    targets = getattr(dataset, "targets", None)
    if targets is None and isinstance(dataset, TensorDataset) and len(dataset.tensors) >= 2:
        targets = dataset.tensors[1]
    if targets is not None:
        values = torch.as_tensor(targets)
        if values.numel() > 0:
            if values.ndim >= 2:
                return int(values.shape[-1])
            if values.is_floating_point() and not bool(torch.all(values == values.round())):
                return 1  # one regression target per sample: the output width, not a class count
            return int(values.max().item()) + 1
    return max(_target_classes(dataset[i][1]) for i in range(len(dataset)))


def _load_user(spec: str, split: str, root: str | None, augment: bool) -> LoadedDataset:
    factory = resolve_spec(spec, "dataset")
    dataset = call_factory(factory, split=split, root=root, augment=augment)
    if not (hasattr(dataset, "__getitem__") and hasattr(dataset, "__len__")):
        raise LandscapeError(
            f"`dataset={spec!r}` returned {type(dataset).__name__}, not a Dataset "
            "(an object with __len__ and __getitem__ yielding (input, target) pairs)"
        )
    try:
        size = len(dataset)
    except Exception as exc:
        raise LandscapeError(f"`dataset={spec!r}`: len() of the dataset failed: {exc}") from exc
    if size == 0:
        raise LandscapeError(f"`dataset={spec!r}` returned an empty {split} split")
    try:
        sample = dataset[0]
        inputs, _ = sample
        input_shape = tuple(int(d) for d in torch.as_tensor(inputs).shape)
        num_classes = _infer_num_classes(dataset)
    except LandscapeError:
        raise
    except Exception as exc:
        detail = one_line(exc)
        raise LandscapeError(
            f"`dataset={spec!r}`: samples must be (input tensor, target) pairs; {detail}"
        ) from exc
    classes = getattr(dataset, "classes", ())
    names: tuple[str, ...] = ()
    if isinstance(classes, Sequence) and not isinstance(classes, str):
        names = tuple(str(c) for c in classes)
    return LoadedDataset(
        dataset=dataset,
        name=spec,
        input_shape=input_shape,
        num_classes=num_classes,
        split=split,
        classes=names,
    )


def load_dataset(
    spec: str, split: str = "train", *, root: str | None = None, augment: bool = False
) -> LoadedDataset:
    """Load ``split`` ("train" or "test") of the dataset named by ``spec``.

    ``spec`` is a registry name (:data:`DATASET_NAMES`, case-insensitive), ``imagefolder:PATH``
    or ``package.module:factory``; ``root`` is the data folder for CIFAR; ``augment`` turns on
    the training augmentation where the dataset has one (CIFAR, imagefolder; the digits have
    none). See :mod:`landscape_cli.data` for each. Raises :class:`LandscapeError` for an unknown
    spec, a bad split, or missing or malformed data.
    """
    if split not in SPLITS:
        raise LandscapeError(f"unknown split {split!r}: choose train or test")
    name = spec.strip()
    if ":" in name:
        prefix = name.partition(":")[0].strip().lower()
        if prefix == "imagefolder":
            # lazy: import cycle with data.imagefolder (it imports LoadedDataset)
            from landscape_cli.data.imagefolder import _load_imagefolder

            return _load_imagefolder(name, split, augment)
        return _load_user(name, split, root, augment)
    key = name.lower().replace("-", "")
    if key == "digits":
        return _load_digits(split)
    if key in ("cifar10", "cifar100"):
        return _load_cifar(key, split, root, augment)
    raise LandscapeError(_unknown_dataset_message(name))
