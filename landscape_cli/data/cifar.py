"""CIFAR-10 and CIFAR-100 read from the standard python-pickle folders, never downloaded.

Krizhevsky, "Learning Multiple Layers of Features from Tiny Images", 2009;
https://www.cs.toronto.edu/~kriz/cifar.html ("CIFAR-10 python version", extracted):

- ``<root>/cifar-10-batches-py/``: ``data_batch_1`` … ``data_batch_5`` (train, 50,000 images),
  ``test_batch`` (10,000), ``batches.meta`` (``label_names``);
- ``<root>/cifar-100-python/``: ``train`` (50,000), ``test`` (10,000), ``meta``
  (``fine_label_names``, ``coarse_label_names``).

Each file is a pickled dict with bytes keys: ``b'data'`` a uint8 array of shape (N, 3072) whose
rows hold the 1024 red, then green, then blue values of a 32×32 image in row-major order, and
``b'labels'`` (CIFAR-10) or ``b'fine_labels'`` (CIFAR-100, used here) a list of N ints.

The files are read by our own loader rather than ``torchvision.datasets.CIFAR10``, whose md5
checks reject anything but the published files, and with a restricted unpickler that only
builds NumPy arrays (a pickle can otherwise run arbitrary code).

Transforms, equal to torchvision's ``ToTensor`` + ``Normalize`` pipeline but applied to uint8
tensors without PIL: evaluation ``x / 255`` normalised by the per-channel train mean and std;
training with ``augment=True`` first ``RandomCrop(32, padding=4)`` (zero padding) and
``RandomHorizontalFlip``, the recipe of He et al. 2016. Random choices use torch's global
generator (seed with ``torch.manual_seed``; DataLoader workers get their own seeds).
"""

from __future__ import annotations

import importlib
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from landscape_cli.errors import LandscapeError, one_line

CIFAR_URL = "https://www.cs.toronto.edu/~kriz/cifar.html"


@dataclass(frozen=True)
class CifarFormat:
    """Where one CIFAR variant keeps its files and what they hold."""

    title: str
    folder: str
    train_files: tuple[str, ...]
    test_files: tuple[str, ...]
    meta_file: str
    label_key: str
    names_key: str
    num_classes: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


CIFAR_FORMATS: dict[str, CifarFormat] = {
    "cifar10": CifarFormat(
        title="CIFAR-10",
        folder="cifar-10-batches-py",
        train_files=tuple(f"data_batch_{i}" for i in range(1, 6)),
        test_files=("test_batch",),
        meta_file="batches.meta",
        label_key="labels",
        names_key="label_names",
        num_classes=10,
        # per-channel mean and (population) std of the 50,000 train images, in [0, 1] units
        mean=(0.4914, 0.4822, 0.4465),
        std=(0.2470, 0.2435, 0.2616),
    ),
    "cifar100": CifarFormat(
        title="CIFAR-100",
        folder="cifar-100-python",
        train_files=("train",),
        test_files=("test",),
        meta_file="meta",
        label_key="fine_labels",
        names_key="fine_label_names",
        num_classes=100,
        mean=(0.5071, 0.4865, 0.4409),
        std=(0.2673, 0.2564, 0.2762),
    ),
}

# The globals a CIFAR pickle may reference: NumPy's array reconstruction (protocols 2-5, NumPy 1
# and 2 module names) and the helper Python 3 uses to pickle bytes under protocol 2.
_ALLOWED_GLOBALS = {
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy._core.numeric", "_frombuffer"),
    ("_codecs", "encode"),
}


class _ArrayUnpickler(pickle.Unpickler):
    """An unpickler that builds only dicts, lists, strings, numbers and NumPy arrays."""

    def find_class(self, module: str, name: str) -> Any:
        if module.startswith("numpy.core"):  # NumPy 1 pickles; NumPy 2 moved these to numpy._core
            module = "numpy._core" + module[len("numpy.core") :]
        if (module, name) not in _ALLOWED_GLOBALS:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        if module.startswith("numpy._core") and not hasattr(np, "_core"):  # pragma: no cover
            module = "numpy.core" + module[len("numpy._core") :]
        return getattr(importlib.import_module(module), name)


def _str_keys(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {(k.decode("latin1") if isinstance(k, bytes) else k): v for k, v in obj.items()}
    return obj


def _read_pickle(path: Path, title: str) -> dict[str, Any]:
    try:
        with path.open("rb") as handle:
            content = _ArrayUnpickler(handle, encoding="bytes").load()
    except Exception as exc:  # truncated, corrupt, or not a pickle at all
        detail = one_line(exc)
        raise LandscapeError(
            f"{path} is not a readable {title} python-version file: {detail}"
        ) from exc
    if not isinstance(content, dict):
        raise LandscapeError(f"{path} is not a {title} python-version file (no dict inside)")
    return _str_keys(content)


def _decode_names(names: Any) -> tuple[str, ...]:
    if not isinstance(names, (list, tuple)):
        return ()
    return tuple(n.decode("utf-8") if isinstance(n, bytes) else str(n) for n in names)


def _folder(spec: CifarFormat, root: str | None) -> Path:
    source = f"the python version from {CIFAR_URL}, extracted"
    if root is None:
        raise LandscapeError(
            f"{spec.title} needs a data folder: pass `root` DIR, where DIR/{spec.folder}/ "
            f"holds {source}"
        )
    base = Path(root).expanduser()
    folder = base / spec.folder
    if folder.is_dir():
        return folder
    if base.name == spec.folder and base.is_dir():  # --data-root pointed at the folder itself
        return base
    raise LandscapeError(f"{spec.title} not found: expected {folder}/ ({source}); pass `root`")


class CifarDataset(Dataset):
    """CIFAR images held as one uint8 tensor (N, 3, 32, 32); items are (float32 image, int).

    Attributes ``data``, ``targets`` (list of ints) and ``classes`` (names, when the meta file
    has them) mirror torchvision's CIFAR datasets.

    Args:
        data: the images, uint8 (N, 3, 32, 32).
        targets: their classes.
        mean: per-channel mean subtracted after scaling to [0, 1].
        std: per-channel standard deviation divided by.
        augment: random crop and horizontal flip (module docstring) on each item.
        classes: the class names, when known.
    """

    def __init__(
        self,
        data: torch.Tensor,
        targets: list[int],
        mean: tuple[float, ...],
        std: tuple[float, ...],
        *,
        augment: bool = False,
        classes: tuple[str, ...] = (),
    ) -> None:
        self.data = data
        self.targets = targets
        self.classes = classes
        self.augment = augment
        self.mean = torch.tensor(mean, dtype=torch.float32).view(3, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(3, 1, 1)
        self.augmentation = None
        if augment:
            # lazy: torchvision takes seconds to import; only augmentation needs it
            from torchvision import transforms

            self.augmentation = transforms.Compose(
                [transforms.RandomCrop(32, padding=4), transforms.RandomHorizontalFlip()]
            )

    def __len__(self) -> int:
        """The number of images."""
        return len(self.targets)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        """Image ``index`` (augmented when augmentation is on) and its class."""
        image = self.data[index]
        if self.augmentation is not None:
            image = self.augmentation(image)
        x = image.to(torch.float32).div_(255.0)
        return (x - self.mean) / self.std, self.targets[index]


def load_cifar(name: str, split: str, root: str | None, augment: bool) -> CifarDataset:
    """Read the ``split`` of ``name`` ("cifar10" or "cifar100") from ``root``."""
    spec = CIFAR_FORMATS[name]
    folder = _folder(spec, root)
    files = spec.train_files if split == "train" else spec.test_files
    missing = [f for f in files if not (folder / f).is_file()]
    if missing:
        raise LandscapeError(
            f"{spec.title} folder {folder}/ lacks {', '.join(missing)} (expected the python "
            f"version from {CIFAR_URL}, extracted)"
        )
    arrays: list[np.ndarray] = []
    targets: list[int] = []
    for file in files:
        path = folder / file
        batch = _read_pickle(path, spec.title)
        if "data" not in batch or spec.label_key not in batch:
            raise LandscapeError(
                f"{path} has no b'data' and b'{spec.label_key}' entries: not {spec.title} "
                "python-version data"
            )
        data = np.asarray(batch["data"])
        labels = [int(v) for v in batch[spec.label_key]]
        if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
            raise LandscapeError(
                f"{path}: b'data' must be uint8 of shape (N, 3072), got {data.dtype} {data.shape}"
            )
        if len(labels) != len(data):
            raise LandscapeError(f"{path}: {len(data)} images but {len(labels)} labels")
        if labels and not 0 <= min(labels) <= max(labels) < spec.num_classes:
            raise LandscapeError(
                f"{path}: labels must lie in 0..{spec.num_classes - 1}, "
                f"found {min(labels)}..{max(labels)}"
            )
        arrays.append(data)
        targets.extend(labels)
    classes: tuple[str, ...] = ()
    if (folder / spec.meta_file).is_file():  # only class names live there; optional
        meta = _read_pickle(folder / spec.meta_file, spec.title)
        classes = _decode_names(meta.get(spec.names_key))
        if len(classes) != spec.num_classes:
            classes = ()
    images = torch.from_numpy(np.concatenate(arrays).reshape(-1, 3, 32, 32).copy())
    return CifarDataset(images, targets, spec.mean, spec.std, augment=augment, classes=classes)
