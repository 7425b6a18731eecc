"""Tests for landscape_cli.data: digits, CIFAR from the python-pickle format, imagefolder, user."""

from __future__ import annotations

import os
import struct
import sys
import textwrap
import uuid
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from cases import dump_py2, write_cifar10
from PIL import Image

from landscape_cli.data import DATASET_NAMES, LoadedDataset, load_dataset
from landscape_cli.data.cifar import CIFAR_FORMATS
from landscape_cli.data.digits import digits_normalisation, digits_split_indices
from landscape_cli.errors import LandscapeError


def _write_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, source: str) -> str:
    name = f"datamod_{uuid.uuid4().hex[:10]}"
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(source))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, name, raising=False)
    return name


def _unnormalise(x: torch.Tensor, name: str) -> np.ndarray:
    spec = CIFAR_FORMATS[name]
    mean = torch.tensor(spec.mean).view(3, 1, 1)
    std = torch.tensor(spec.std).view(3, 1, 1)
    return ((x * std + mean) * 255).numpy()


def _py2_str(b: bytes) -> bytes:
    return b"U" + bytes([len(b)]) + b if len(b) < 256 else b"T" + struct.pack("<i", len(b)) + b


def _py2_int(v: int) -> bytes:
    return b"K" + bytes([v]) if v < 256 else b"M" + struct.pack("<H", v)


def _py2_value(v: object) -> bytes:
    if isinstance(v, bytes):
        return _py2_str(v)
    if isinstance(v, int):
        return _py2_int(v)
    if isinstance(v, list):
        return b"](" + b"".join(_py2_value(x) for x in v) + b"e"
    assert isinstance(v, np.ndarray) and v.dtype == np.uint8
    shape = b"(" + b"".join(_py2_int(d) for d in v.shape) + b"t"
    dtype = b"cnumpy\ndtype\n" + _py2_str(b"u1") + b"K\x00K\x01\x87R(K\x03" + _py2_str(b"|")
    dtype += b"NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb"
    return (
        b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\nK\x00\x85"
        + _py2_str(b"b")
        + b"\x87R(K\x01"
        + shape
        + dtype
        + b"\x89"
        + _py2_str(v.tobytes())
        + b"tb"
    )


def py2_pickle(d: dict) -> bytes:
    """Pickle ``d`` as Python 2's cPickle (protocol 2) wrote the published CIFAR files: py2 str
    (SHORT_BINSTRING/BINSTRING) for keys and raw data, ``numpy.core.multiarray._reconstruct``."""
    return b"\x80\x02}(" + b"".join(_py2_str(k) + _py2_value(v) for k, v in d.items()) + b"u."


def write_cifar100(root: Path, n_train: int = 6, n_test: int = 3, seed: int = 1) -> dict:
    rng = np.random.default_rng(seed)
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    out = {}
    for split, n in [("train", n_train), ("test", n_test)]:
        data = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
        fine = [int(v) for v in rng.integers(50, 100, size=n)]
        coarse = [v // 5 for v in fine]
        dump_py2(
            folder / split,
            {
                b"filenames": [f"f{i}.png".encode() for i in range(n)],
                b"batch_label": f"{split}ing batch 1 of 1".encode(),
                b"fine_labels": fine,
                b"coarse_labels": coarse,
                b"data": data,
            },
        )
        out[split] = (data, fine)
    dump_py2(
        folder / "meta",
        {
            b"fine_label_names": [f"fine{i}".encode() for i in range(100)],
            b"coarse_label_names": [f"coarse{i}".encode() for i in range(20)],
        },
    )
    return out


# ----------------------------------------------------------------------------- digits


def test_dataset_names() -> None:
    assert DATASET_NAMES == ("digits", "cifar10", "cifar100")


def test_digits_shapes_sizes_and_types() -> None:
    train = load_dataset("digits", "train")
    test = load_dataset("digits", "test")
    assert isinstance(train, LoadedDataset)
    assert (len(train.dataset), len(test.dataset)) == (1438, 359)
    for loaded, split in [(train, "train"), (test, "test")]:
        assert loaded.name == "digits" and loaded.split == split
        assert loaded.input_shape == (1, 8, 8) and loaded.num_classes == 10
        x, y = loaded.dataset.tensors
        assert x.dtype == torch.float32 and y.dtype == torch.int64
        assert x.shape[1:] == (1, 8, 8)
        assert torch.equal(torch.unique(y), torch.arange(10))  # every class in both splits
    with pytest.raises(AttributeError):
        train.name = "other"  # frozen


def test_digits_normalised_with_train_statistics() -> None:
    from sklearn.datasets import load_digits

    x, _ = load_dataset("digits", "train").dataset.tensors
    assert abs(float(x.mean())) < 1e-5
    assert float(x.std(unbiased=False)) == pytest.approx(1.0, abs=1e-5)
    # The test split uses the train statistics: undoing them gives back the raw 0-16 pixels.
    mean, std = digits_normalisation()
    raw = load_digits()
    _, test_idx = digits_split_indices()
    xt, yt = load_dataset("digits", "test").dataset.tensors
    np.testing.assert_allclose(
        xt[:, 0].double().numpy() * std + mean, raw.images[test_idx], atol=1e-4
    )
    np.testing.assert_array_equal(yt.numpy(), raw.target[test_idx])
    assert abs(float(xt.mean())) > 1e-4  # not re-normalised with its own statistics


def test_digits_split_is_fixed_disjoint_and_stratified() -> None:
    train_a, test_a = digits_split_indices()
    train_b, test_b = digits_split_indices()
    np.testing.assert_array_equal(train_a, train_b)
    np.testing.assert_array_equal(test_a, test_b)
    assert not set(train_a) & set(test_a)
    assert sorted([*train_a, *test_a]) == list(range(1797))
    # Pinned: a change to the split procedure must be deliberate (it changes every result).
    assert train_a[:5].tolist() == [1639, 1331, 1050, 1756, 1688]
    assert test_a[:5].tolist() == [1094, 1160, 1362, 1525, 588]
    a = load_dataset("digits", "train").dataset.tensors
    b = load_dataset("digits", "train", augment=True, root="/nonexistent").dataset.tensors
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])  # root and augment are ignored


def test_bad_split_and_unknown_dataset() -> None:
    with pytest.raises(LandscapeError, match="unknown split 'val': choose train or test"):
        load_dataset("digits", "val")
    with pytest.raises(LandscapeError) as info:
        load_dataset("mnist")
    message = str(info.value)
    assert message.startswith("unknown dataset 'mnist': choose one of digits, cifar10, cifar100")
    assert "imagefolder:PATH" in message and "package.module:factory" in message


# ----------------------------------------------------------------------------- CIFAR


def test_cifar10_round_trip(tmp_path: Path) -> None:
    written = write_cifar10(tmp_path)
    for split, n in [("train", 15), ("test", 4)]:
        loaded = load_dataset("cifar10", split, root=str(tmp_path))
        assert (loaded.name, loaded.split, loaded.num_classes) == ("cifar10", split, 10)
        assert loaded.input_shape == (3, 32, 32) and len(loaded.dataset) == n
        assert loaded.classes[0] == "airplane" and loaded.classes[9] == "truck"
        data, labels = written[split]
        assert [loaded.dataset[i][1] for i in range(n)] == labels
        for i in (0, n - 1):
            x, y = loaded.dataset[i]
            assert x.dtype == torch.float32 and x.shape == (3, 32, 32)
            assert isinstance(y, int)
            pixels = _unnormalise(x, "cifar10")
            # Row-major RGB planes: byte 0 is red at (0, 0), 1024 + 32·1 + 1 green at (1, 1),
            # 2048 + 32·31 + 5 blue at (31, 5).
            assert pixels[0, 0, 0] == pytest.approx(data[i, 0], abs=1e-3)
            assert pixels[1, 1, 1] == pytest.approx(data[i, 1024 + 33], abs=1e-3)
            assert pixels[2, 31, 5] == pytest.approx(data[i, 2048 + 32 * 31 + 5], abs=1e-3)
            np.testing.assert_allclose(pixels.reshape(-1), data[i], atol=1e-3)


def test_cifar10_file_written_by_python2(tmp_path: Path) -> None:
    """The published files are Python 2 pickles naming numpy.core (NumPy 1); they must load."""
    write_cifar10(tmp_path)
    rng = np.random.default_rng(5)
    data = rng.integers(0, 256, size=(3, 3072), dtype=np.uint8)
    record = {b"batch_label": b"testing batch 1 of 1", b"labels": [7, 0, 3], b"data": data}
    record[b"filenames"] = [b"a.png", b"b.png", b"c.png"]
    (tmp_path / "cifar-10-batches-py" / "test_batch").write_bytes(py2_pickle(record))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no NumPy deprecation warning about numpy.core either
        loaded = load_dataset("cifar10", "test", root=str(tmp_path))
    assert [loaded.dataset[i][1] for i in range(3)] == [7, 0, 3]
    np.testing.assert_allclose(
        _unnormalise(loaded.dataset[2][0], "cifar10").reshape(-1), data[2], atol=1e-3
    )


def test_cifar10_augmentation(tmp_path: Path) -> None:
    write_cifar10(tmp_path)
    plain = load_dataset("cifar10", "train", root=str(tmp_path))
    augmented = load_dataset("cifar10", "train", root=str(tmp_path), augment=True)
    x = plain.dataset[0][0]
    differs = 0
    for seed in range(8):
        torch.manual_seed(seed)
        xa, ya = augmented.dataset[0]
        assert xa.shape == (3, 32, 32) and ya == plain.dataset[0][1]
        differs += not torch.equal(xa, x)
    assert differs > 0
    torch.manual_seed(3)
    first = augmented.dataset[0][0]
    torch.manual_seed(3)
    assert torch.equal(first, augmented.dataset[0][0])  # the seed decides the augmentation


def test_cifar100_uses_fine_labels(tmp_path: Path) -> None:
    written = write_cifar100(tmp_path)
    for split, n in [("train", 6), ("test", 3)]:
        loaded = load_dataset("cifar100", split, root=str(tmp_path))
        assert loaded.num_classes == 100 and loaded.input_shape == (3, 32, 32)
        assert len(loaded.dataset) == n and loaded.classes[99] == "fine99"
        data, fine = written[split]
        assert [loaded.dataset[i][1] for i in range(n)] == fine
        pixels = _unnormalise(loaded.dataset[n - 1][0], "cifar100")
        np.testing.assert_allclose(pixels.reshape(-1), data[n - 1], atol=1e-3)


def test_cifar_root_may_be_the_folder_itself_and_meta_is_optional(tmp_path: Path) -> None:
    write_cifar10(tmp_path)
    folder = tmp_path / "cifar-10-batches-py"
    (folder / "batches.meta").unlink()
    loaded = load_dataset("CIFAR-10", "test", root=str(folder))
    assert len(loaded.dataset) == 4 and loaded.classes == ()


def test_cifar_missing_folder_names_it(tmp_path: Path) -> None:
    with pytest.raises(LandscapeError) as info:
        load_dataset("cifar10", root=str(tmp_path))
    assert str(info.value) == (
        f"CIFAR-10 not found: expected {tmp_path / 'cifar-10-batches-py'}/ (the python version "
        "from https://www.cs.toronto.edu/~kriz/cifar.html, extracted); pass `root`"
    )
    with pytest.raises(LandscapeError, match=r"cifar-100-python/"):
        load_dataset("cifar100", "test", root=str(tmp_path))
    with pytest.raises(LandscapeError, match=r"CIFAR-10 needs a data folder: pass `root`"):
        load_dataset("cifar10")


def test_cifar_missing_or_bad_files(tmp_path: Path) -> None:
    write_cifar10(tmp_path)
    folder = tmp_path / "cifar-10-batches-py"
    (folder / "data_batch_3").unlink()
    with pytest.raises(LandscapeError, match=r"lacks data_batch_3 \(expected the python version"):
        load_dataset("cifar10", root=str(tmp_path))
    (folder / "test_batch").write_bytes(b"not a pickle")
    with pytest.raises(LandscapeError, match="is not a readable CIFAR-10 python-version file"):
        load_dataset("cifar10", "test", root=str(tmp_path))
    dump_py2(folder / "test_batch", {b"data": np.zeros((2, 10), np.uint8), b"labels": [0, 1]})
    with pytest.raises(LandscapeError, match=r"must be uint8 of shape \(N, 3072\)"):
        load_dataset("cifar10", "test", root=str(tmp_path))


class _Payload:
    def __reduce__(self):  # what a malicious pickle does: call something on load
        return (os.getcwd, ())


def test_cifar_pickle_cannot_run_code(tmp_path: Path) -> None:
    write_cifar10(tmp_path)
    path = tmp_path / "cifar-10-batches-py" / "test_batch"
    dump_py2(path, {b"data": _Payload(), b"labels": []})
    with pytest.raises(LandscapeError, match=r"refusing to load posix\.getcwd|refusing to load nt"):
        load_dataset("cifar10", "test", root=str(tmp_path))


# ----------------------------------------------------------------------------- imagefolder


def _png(path: Path, color: tuple[int, int, int], size: tuple[int, int] = (5, 6)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path)


def test_imagefolder_with_train_and_val(tmp_path: Path) -> None:
    for split in ("train", "val"):
        _png(tmp_path / split / "cat" / "a.png", (255, 0, 0))
        _png(tmp_path / split / "cat" / "b.png", (250, 10, 0))
        _png(tmp_path / split / "dog" / "c.png", (0, 128, 255))
    train = load_dataset(f"imagefolder:{tmp_path}", "train")
    test = load_dataset(f"imagefolder:{tmp_path}", "test")  # falls back to val/
    assert train.input_shape == (3, 6, 5) and train.num_classes == 2
    assert train.classes == ("cat", "dog") and len(train.dataset) == 3 and len(test.dataset) == 3
    assert train.name == f"imagefolder:{tmp_path}"
    x, y = test.dataset[2]
    assert y == 1
    mean = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)
    rgb = (x * std + mean) * 255
    assert rgb[:, 0, 0].tolist() == pytest.approx([0, 128, 255], abs=1e-3)
    augmented = load_dataset(f"imagefolder:{tmp_path}", "train", augment=True)
    assert augmented.dataset[0][0].shape == (3, 6, 5)


def test_imagefolder_without_split_folders_serves_both(tmp_path: Path) -> None:
    for i, name in enumerate(["a", "b", "c"]):
        _png(tmp_path / name / "x.png", (i * 40, 0, 0), size=(4, 4))
    for split in ("train", "test"):
        loaded = load_dataset(f"imagefolder:{tmp_path}", split)
        assert loaded.num_classes == 3 and loaded.input_shape == (3, 4, 4)


def test_imagefolder_errors(tmp_path: Path) -> None:
    with pytest.raises(LandscapeError, match=r"folder .*missing not found"):
        load_dataset(f"imagefolder:{tmp_path / 'missing'}")
    _png(tmp_path / "only" / "train" / "cat" / "a.png", (1, 2, 3))
    with pytest.raises(LandscapeError, match=r"has train/ but no test/ or val/ for the test split"):
        load_dataset(f"imagefolder:{tmp_path / 'only'}", "test")
    (tmp_path / "empty").mkdir()
    with pytest.raises(LandscapeError, match="cannot read"):
        load_dataset(f"imagefolder:{tmp_path / 'empty'}")
    with pytest.raises(LandscapeError, match="imagefolder needs a path"):
        load_dataset("imagefolder:")


# ----------------------------------------------------------------------------- user factories

USER_MODULE = """
import torch
from torch.utils.data import Dataset, TensorDataset

def tensors(split):
    n = 12 if split == "train" else 5
    g = torch.Generator().manual_seed(0)
    return TensorDataset(torch.randn(n, 2, 3, generator=g), torch.arange(n) % 4)

class Named(Dataset):
    classes = ["a", "b", "c", "d", "e"]
    def __init__(self, split):
        self.split = split
    def __len__(self):
        return 3
    def __getitem__(self, i):
        return torch.zeros(7), i

def named(split="train"):
    return Named(split)

class Counted(Named):
    classes = None
    num_classes = 9

def counted(split):
    return Counted(split)

class WithTargets(Named):
    classes = None
    targets = [0, 5, 2]

def with_targets(split):
    return WithTargets(split)

def plain_list(split):
    return [(torch.ones(3), 2), (torch.ones(3), 6)]

def sees_everything(split, root, augment):
    return [(torch.zeros(1), 0)] * (10 if (root == "/r" and augment) else 1)

def not_a_dataset(split):
    return 3

def empty(split):
    return []

def bad_samples(split):
    return [torch.zeros(3)]
"""


def test_user_factories(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    mod = _write_module(tmp_path, monkeypatch, USER_MODULE)
    train = load_dataset(f"{mod}:tensors")
    test = load_dataset(f"{mod}:tensors", "test")
    assert (train.input_shape, train.num_classes, len(train.dataset)) == ((2, 3), 4, 12)
    assert (test.split, len(test.dataset), train.name) == ("test", 5, f"{mod}:tensors")
    named = load_dataset(f"{mod}:named", "test")
    assert (named.num_classes, named.classes, named.input_shape) == (5, tuple("abcde"), (7,))
    assert named.dataset.split == "test"
    assert load_dataset(f"{mod}:counted").num_classes == 9
    assert load_dataset(f"{mod}:with_targets").num_classes == 6
    assert load_dataset(f"{mod}:plain_list").num_classes == 7  # scanned: max target 6, plus 1
    assert len(load_dataset(f"{mod}:sees_everything", root="/r", augment=True).dataset) == 10


def test_user_factory_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    mod = _write_module(tmp_path, monkeypatch, USER_MODULE)
    with pytest.raises(LandscapeError, match=rf"`dataset='{mod}:not_a_dataset'` returned int"):
        load_dataset(f"{mod}:not_a_dataset")
    with pytest.raises(LandscapeError, match="returned an empty test split"):
        load_dataset(f"{mod}:empty", "test")
    with pytest.raises(LandscapeError, match=r"samples must be \(input tensor, target\) pairs"):
        load_dataset(f"{mod}:bad_samples")
    with pytest.raises(LandscapeError, match=rf"module {mod!r} has no attribute 'nope'"):
        load_dataset(f"{mod}:nope")
    with pytest.raises(LandscapeError, match="cannot import module 'no_such_data_mod'"):
        load_dataset("no_such_data_mod:build")
