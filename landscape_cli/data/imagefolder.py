"""``imagefolder:PATH``: torchvision's ImageFolder over a folder of class folders, one split each.

Images are read as RGB (an unreadable one stops the command with one line naming the file), must
share one size (landscape never resizes), and are normalised with the ImageNet mean and std.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from landscape_cli.data.loaders import LoadedDataset
from landscape_cli.errors import LandscapeError, one_line

#: ImageNet per-channel mean and std, used for ``imagefolder:PATH``.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


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
        # lazy: torchvision takes seconds to import; only image folders need it
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
    # lazy: torchvision takes seconds to import; only image folders need it
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
