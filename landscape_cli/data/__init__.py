"""Datasets by name, for ``landscape train`` and the commands that evaluate checkpoints.

:func:`load_dataset` takes a spec, a split ("train" or "test") and an optional data folder:

- ``digits`` (the embedded default): scikit-learn's 1,797 real 8×8 handwritten digits, no
  download; a fixed stratified split of 1,438 train / 359 test images, inputs (1, 8, 8)
  normalised with the train split's mean and std. ``root`` and ``augment`` are ignored. See
  :mod:`landscape_cli.data.digits`.
- ``cifar10``, ``cifar100``: the python-pickle versions from
  https://www.cs.toronto.edu/~kriz/cifar.html extracted under ``root``
  (``root/cifar-10-batches-py/``, ``root/cifar-100-python/``); inputs (3, 32, 32) normalised per
  channel; ``augment=True`` adds random crop (padding 4) and horizontal flip. Nothing is ever
  downloaded. See :mod:`landscape_cli.data.cifar`.
- ``imagefolder:PATH``: :class:`torchvision.datasets.ImageFolder` over ``PATH/train`` for the
  train split and ``PATH/test`` (else ``PATH/val``) for the test split; when ``PATH`` has none of
  these subfolders, ``PATH`` itself serves both splits. Images are converted to RGB, then
  ``ToTensor`` + ``Normalize`` with the ImageNet mean and std; ``augment=True`` adds a random
  horizontal flip. Images must share one size (no resizing is done); the input shape is that of
  the first image and ``num_classes`` the number of class folders.
- ``package.module:factory``: the user's own, called as ``factory(split=...)`` (also given
  ``root=`` and ``augment=`` if it takes them), returning a Dataset of (input, target) pairs.
  The input shape is that of the first sample's input; the number of classes comes from the
  dataset's ``classes`` attribute (its length), else its ``num_classes`` attribute, else its
  ``targets`` attribute (max + 1), else a scan of every sample's target (max + 1; a target that
  is a vector of K values counts as K classes). Non-integer floating-point targets are regression
  targets: ``num_classes`` is then the number of outputs (1 per scalar target), not a class count.

Every failure is a one-line :class:`~landscape_cli.errors.LandscapeError`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset, TensorDataset

from landscape_cli.errors import LandscapeError, one_line
from landscape_cli.specs import call_factory, resolve_spec

__all__ = ["DATASET_NAMES", "SPLITS", "LoadedDataset", "load_dataset"]

#: The registry names accepted by :func:`load_dataset` (besides ``imagefolder:PATH`` and
#: ``module:factory``).
DATASET_NAMES: tuple[str, ...] = ("digits", "cifar10", "cifar100")
SPLITS: tuple[str, ...] = ("train", "test")

#: ImageNet per-channel mean and std, used for ``imagefolder:PATH``.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


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
    from landscape_cli.data.digits import INPUT_SHAPE, NUM_CLASSES, digits_dataset

    return LoadedDataset(
        dataset=digits_dataset(split),
        name="digits",
        input_shape=INPUT_SHAPE,
        num_classes=NUM_CLASSES,
        split=split,
        classes=tuple(str(d) for d in range(NUM_CLASSES)),
    )


def _load_cifar(name: str, split: str, root: str | None, augment: bool) -> LoadedDataset:
    from landscape_cli.data.cifar import CIFAR_FORMATS, load_cifar

    dataset = load_cifar(name, split, root, augment)
    return LoadedDataset(
        dataset=dataset,
        name=name,
        input_shape=(3, 32, 32),
        num_classes=CIFAR_FORMATS[name].num_classes,
        split=split,
        classes=dataset.classes,
    )


def _image_folder_for_split(path: Path, split: str, spec: str) -> Path:
    if not path.is_dir():
        raise LandscapeError(
            f"{spec}: folder {path} not found (expected PATH/train/ and PATH/test/ or PATH/val/, "
            "each with one subfolder of images per class, or PATH/<class>/ images directly)"
        )
    present = [name for name in ("train", "test", "val") if (path / name).is_dir()]
    if not present:
        return path  # one folder of class folders serves both splits
    wanted = ("train",) if split == "train" else ("test", "val")
    for name in wanted:
        if (path / name).is_dir():
            return path / name
    raise LandscapeError(
        f"{spec}: {path} has {', '.join(p + '/' for p in present)} but no "
        f"{' or '.join(w + '/' for w in wanted)} for the {split} split"
    )


class _ImageLoader:
    """torchvision's image loader, with an image it cannot read one line naming the file.

    A corrupt or truncated file, a text file named ``.png``, an empty file or a decompression
    bomb each stop the command with one :class:`LandscapeError` line instead of PIL's traceback
    (at the first sample drawn from it).
    """

    def __init__(self, spec: str) -> None:
        self.spec = spec

    def __call__(self, path: str) -> Any:
        from torchvision.datasets.folder import default_loader

        try:
            return default_loader(path)
        except LandscapeError:
            raise
        except Exception as exc:  # PIL raises OSError, ValueError, SyntaxError, its own errors
            detail = one_line(exc)
            if "cannot identify image file" in detail:
                detail = "not an image file, or a damaged one"
            raise LandscapeError(f"{self.spec}: cannot read image {path}: {detail}") from None


class _SameSize:
    """A transform that refuses an image whose size differs from the first one seen.

    Batches of mixed sizes cannot be stacked, and landscape never resizes.
    """

    def __init__(self, spec: str) -> None:
        self.spec, self.size = spec, None

    def __call__(self, image: Any) -> Any:
        size = tuple(image.size)
        if self.size is None:
            self.size = size
        elif size != self.size:
            raise LandscapeError(
                f"{self.spec}: images have different sizes ({self.size[0]}×{self.size[1]} and "
                f"{size[0]}×{size[1]}); landscape does not resize, so give images of one size"
            )
        return image


def _load_imagefolder(spec: str, split: str, augment: bool) -> LoadedDataset:
    from torchvision import datasets, transforms

    raw_path = spec.partition(":")[2].strip()
    if not raw_path:
        raise LandscapeError("imagefolder needs a path: `dataset='imagefolder:PATH'`")
    folder = _image_folder_for_split(Path(raw_path).expanduser(), split, spec)
    steps: list[Any] = [_SameSize(spec)]
    steps += [transforms.RandomHorizontalFlip()] if augment else []
    steps += [transforms.ToTensor(), transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD)]
    try:
        dataset = datasets.ImageFolder(
            str(folder), transform=transforms.Compose(steps), loader=_ImageLoader(spec)
        )
    except (FileNotFoundError, OSError) as exc:
        detail = one_line(str(exc))
        raise LandscapeError(f"{spec}: cannot read {folder}: {detail}") from exc
    if len(dataset) == 0:  # pragma: no cover - ImageFolder already refuses empty folders
        raise LandscapeError(f"{spec}: no images in {folder}")
    try:
        first = dataset[0][0]
    except LandscapeError:
        raise
    except Exception as exc:
        detail = one_line(str(exc))
        raise LandscapeError(
            f"{spec}: cannot read image {dataset.samples[0][0]}: {detail}"
        ) from exc
    return LoadedDataset(
        dataset=dataset,
        name=spec,
        input_shape=tuple(first.shape),
        num_classes=len(dataset.classes),
        split=split,
        classes=tuple(dataset.classes),
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
    none). See the module docstring for each. Raises :class:`LandscapeError` for an unknown
    spec, a bad split, or missing or malformed data.
    """
    if split not in SPLITS:
        raise LandscapeError(f"unknown split {split!r}: choose train or test")
    name = spec.strip()
    if ":" in name:
        prefix = name.partition(":")[0].strip().lower()
        if prefix == "imagefolder":
            return _load_imagefolder(name, split, augment)
        return _load_user(name, split, root, augment)
    key = name.lower().replace("-", "")
    if key == "digits":
        return _load_digits(split)
    if key in ("cifar10", "cifar100"):
        return _load_cifar(key, split, root, augment)
    raise LandscapeError(_unknown_dataset_message(name))
