"""Which samples `--samples N` measures on: a seeded, class-stratified subset (issue 11.5)."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import torch
from PIL import Image
from typer.testing import CliRunner

from landscape_cli.commands import app
from landscape_cli.evaluation import indices_sha256, select_indices

runner = CliRunner()


def _class_sorted(n_per_class: list[int]) -> torch.utils.data.TensorDataset:
    y = torch.cat([torch.full((n,), c) for c, n in enumerate(n_per_class)])
    return torch.utils.data.TensorDataset(torch.randn(len(y), 2), y)


def test_stratified_and_seeded():
    ds = _class_sorted([30, 30, 30])
    a = select_indices(ds, 12, seed=0)
    assert torch.bincount(ds.tensors[1][a], minlength=3).tolist() == [4, 4, 4]
    assert len(set(a.tolist())) == 12
    assert torch.equal(a, select_indices(ds, 12, seed=0))  # same seed, same samples
    assert not torch.equal(a, select_indices(ds, 12, seed=1))
    # unequal classes: places in proportion, by largest remainder (50/30/20 of 10 -> 5/3/2)
    b = _class_sorted([50, 30, 20])
    counts = torch.bincount(b.tensors[1][select_indices(b, 10, seed=3)], minlength=3)
    assert counts.tolist() == [5, 3, 2]
    # all samples: the dataset's own order
    assert torch.equal(select_indices(ds, 0), torch.arange(90))
    assert torch.equal(select_indices(ds, 500), torch.arange(90))


def test_regression_targets_take_a_seeded_uniform_subset():
    ds = torch.utils.data.TensorDataset(torch.randn(40, 2), torch.randn(40, 1))
    a = select_indices(ds, 7, seed=5)
    assert len(set(a.tolist())) == 7 and torch.equal(a, select_indices(ds, 7, seed=5))


def test_class_sorted_imagefolder_samples_every_class(tmp_path: Path):
    """A class-sorted 3-class imagefolder: `--samples 12` holds 4 of each class (the first 12
    in dataset order were one class only), and the indices' hash is in the results file."""
    from landscape_cli.checkpoints import save_checkpoint
    from landscape_cli.data import load_dataset
    from landscape_cli.models import build_model

    root = tmp_path / "imgs"
    for c, colour in enumerate([(255, 0, 0), (0, 255, 0), (0, 0, 255)]):
        (root / f"c{c}").mkdir(parents=True)
        for i in range(20):
            Image.new("RGB", (4, 4), tuple(max(0, v - 3 * i) for v in colour)).save(
                root / f"c{c}" / f"{i:02d}.png"
            )
    spec = f"imagefolder:{root}"
    data = load_dataset(spec, "train")
    chosen = select_indices(data.dataset, 12, seed=0)
    labels = torch.tensor(data.dataset.targets)[chosen]
    assert torch.bincount(labels, minlength=3).tolist() == [4, 4, 4]

    torch.manual_seed(0)
    net = build_model("mlp", input_shape=(3, 4, 4), num_classes=3, hidden=[5])
    ckpt = tmp_path / "m.pt"
    save_checkpoint(
        ckpt,
        {
            "format": "landscape-checkpoint",
            "version": 1,
            "model": {
                "name": "mlp",
                "kwargs": {"input_shape": [3, 4, 4], "num_classes": 3, "hidden": [5]},
            },
            "dataset": {"name": spec, "root": None},
            "state_dict": net.state_dict(),
        },
    )
    out = tmp_path / "m.h5"
    args = ["hessian", str(ckpt), "--samples", "12", "--top-k", "1", "--trace-probes", "0"]
    args += ["--density-probes", "0", "--out", str(out), "--json"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["samples"] == 12
    with h5py.File(out) as f:
        assert f["hessian"].attrs["samples_sha256"] == indices_sha256(chosen)
