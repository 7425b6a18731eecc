"""The embedded dataset: scikit-learn's copy of the UCI optical handwritten digits.

1,797 real 8×8 grey-level images (pixel values 0–16) of the digits 0–9, shipped inside
scikit-learn (``sklearn.datasets.load_digits``), so nothing is downloaded.

The split is fixed and stratified: for each class, in class order, a
``numpy.random.RandomState(0)`` permutation of that class's indices puts the first
``round(0.2 · n_class)`` into the test split and the rest into the train split; each split is
then shuffled by the same generator. That gives **1,438 train and 359 test images**, every class
in both. NumPy guarantees the ``RandomState`` stream across versions, so the split never changes.

Inputs are float32 shaped ``(1, 8, 8)``, normalised with one scalar mean and standard deviation
(population, over all pixels of all *train* images), the same for both splits: the train split
has mean 0 and standard deviation 1 over all its pixels. Targets are int64.
"""

from __future__ import annotations

import gzip
import importlib.util
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import TensorDataset

SPLIT_SEED = 0
TEST_FRACTION = 0.2
INPUT_SHAPE = (1, 8, 8)
NUM_CLASSES = 10


@lru_cache(maxsize=1)
def _load() -> tuple[np.ndarray, np.ndarray]:
    """The 1,797 images and labels, as ``sklearn.datasets.load_digits`` returns them.

    Read straight from scikit-learn's ``datasets/data/digits.csv.gz`` (what ``load_digits``
    parses), found without importing scikit-learn, whose import alone takes about 0.6 s of a
    command's start-up; ``load_digits`` itself where the file is not there.
    """
    spec = importlib.util.find_spec("sklearn")  # locates the package, imports nothing
    folders = list(spec.submodule_search_locations or []) if spec is not None else []
    for folder in folders:
        path = Path(folder) / "datasets" / "data" / "digits.csv.gz"
        if path.is_file():
            with gzip.open(path, "rt", encoding="utf-8") as fh:
                data = np.loadtxt(fh, delimiter=",")
            images = data[:, :-1].reshape(-1, 8, 8).astype(np.float64)
            return images, data[:, -1].astype(np.int64)
    # lazy: scikit-learn takes about 0.6 s to import (docstring)
    from sklearn.datasets import load_digits

    bunch = load_digits()
    return bunch.images.astype(np.float64), bunch.target.astype(np.int64)


def digits_split_indices() -> tuple[np.ndarray, np.ndarray]:
    """The fixed ``(train, test)`` indices into ``load_digits()``, in each split's own order."""
    _, targets = _load()
    rng = np.random.RandomState(SPLIT_SEED)
    train: list[np.ndarray] = []
    test: list[np.ndarray] = []
    for label in range(NUM_CLASSES):
        members = rng.permutation(np.flatnonzero(targets == label))
        n_test = int(np.floor(TEST_FRACTION * len(members) + 0.5))
        test.append(members[:n_test])
        train.append(members[n_test:])
    train_idx = rng.permutation(np.concatenate(train))
    test_idx = rng.permutation(np.concatenate(test))
    return train_idx, test_idx


@lru_cache(maxsize=1)
def _normalised() -> tuple[dict[str, np.ndarray], float, float]:
    images, _ = _load()
    train_idx, test_idx = digits_split_indices()
    mean = float(images[train_idx].mean())
    std = float(images[train_idx].std())
    return {"train": train_idx, "test": test_idx}, mean, std


def digits_normalisation() -> tuple[float, float]:
    """The scalar ``(mean, std)`` of the train pixels (in 0–16 units) used for both splits."""
    _, mean, std = _normalised()
    return mean, std


def digits_dataset(split: str) -> TensorDataset:
    """The ``split`` ("train" or "test") of the digits as a TensorDataset of (input, target)."""
    images, targets = _load()
    indices, mean, std = _normalised()
    idx = indices[split]
    inputs = ((images[idx] - mean) / std).astype(np.float32)[:, None, :, :]
    return TensorDataset(torch.from_numpy(inputs), torch.from_numpy(targets[idx].copy()))
