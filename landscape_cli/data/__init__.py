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

The loaders live in :mod:`landscape_cli.data.loaders` (``imagefolder:PATH`` in
:mod:`landscape_cli.data.imagefolder`); the digits, CIFAR and text data in
:mod:`~landscape_cli.data.digits`, :mod:`~landscape_cli.data.cifar` and
:mod:`~landscape_cli.data.text`.
"""

from landscape_cli.data.imagefolder import IMAGENET_MEAN, IMAGENET_STD
from landscape_cli.data.loaders import DATASET_NAMES, SPLITS, LoadedDataset, load_dataset

__all__ = [
    "DATASET_NAMES",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "SPLITS",
    "LoadedDataset",
    "load_dataset",
]
