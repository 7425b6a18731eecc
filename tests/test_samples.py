"""Which samples `--samples N` measures on: a seeded, class-stratified subset (issue 11.5)."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import torch
from cases import runner
from PIL import Image

from landscape_cli.batches import Batch, samples_sha256, select_indices
from landscape_cli.commands import app


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
    x = torch.stack([data.dataset[i][0] for i in chosen.tolist()])
    y = torch.as_tensor([data.dataset[i][1] for i in chosen.tolist()])
    with h5py.File(out) as f:  # the hash of the samples themselves, in the chosen order
        assert f["hessian"].attrs["samples_sha256"] == samples_sha256([Batch(x, y)])


def test_the_samples_hash_is_of_the_data_not_the_batches_or_the_padding():
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(10, 3, generator=g), torch.randint(0, 2, (10,), generator=g)
    whole = samples_sha256([Batch(x, y)])
    assert samples_sha256([Batch(x[:4], y[:4]), Batch(x[4:], y[4:])]) == whole
    other = x.clone()
    other[7, 1] += 1e-6  # the same indices of another folder: other data, another hash
    assert samples_sha256([Batch(other, y)]) != whole
    assert samples_sha256([Batch(x, 1 - y)]) != whole
    assert samples_sha256([Batch(x[[1, 0, *range(2, 10)]], y)]) != whole  # order counts
    ids = torch.tensor([[5, 6, 7, 0], [8, 9, 0, 0]])
    mask = (ids > 0).long()
    padded = {"input_ids": ids, "attention_mask": mask}
    pad = torch.zeros(2, 3, dtype=torch.long)
    wider = {"input_ids": torch.cat([ids, pad], 1), "attention_mask": torch.cat([mask, pad], 1)}
    labels = torch.tensor([0, 1])
    assert samples_sha256([Batch(padded, labels)]) == samples_sha256([Batch(wider, labels)])
    ids2 = ids.clone()
    ids2[1, 1] = 4
    changed = {"input_ids": ids2, "attention_mask": mask}
    assert samples_sha256([Batch(changed, labels)]) != samples_sha256([Batch(padded, labels)])


def _folder(root: Path, shade: int) -> str:
    for c, colour in enumerate([(255, 0, 0), (0, 255, 0), (0, 0, 255)]):
        (root / f"c{c}").mkdir(parents=True)
        for i in range(6):
            pixel = tuple(max(0, v - shade * (i + 1)) for v in colour)
            Image.new("RGB", (4, 4), pixel).save(root / f"c{c}" / f"{i:02d}.png")
    return f"imagefolder:{root}"


def test_results_of_other_data_are_refused_never_resumed_or_reused(tmp_path: Path):
    """Two image folders of the same size and classes, other pixels (issue 21.4): a scan, a
    Hessian and an audit on the second refuse the first's groups (one line), and --overwrite
    computes the second's own numbers."""
    from cases import one_error_line

    from landscape_cli.results import read_scan

    good, good2 = _folder(tmp_path / "good", 3), _folder(tmp_path / "good2", 20)
    ckpt = tmp_path / "m.pt"
    spec = ["--model", "mlp", "--model-option", "hidden=[5]"]
    made = runner.invoke(
        app, ["train", *spec, "--dataset", good, "--epochs", "1", "--out", str(ckpt)]
    )
    assert made.exit_code == 0, made.output
    out = tmp_path / "r.h5"
    scan = ["scan", str(ckpt), "--points", "5", "--out", str(out)]
    assert runner.invoke(app, [*scan, "--dataset", good]).exit_code == 0
    first = read_scan(out, "1d-random")["loss"]
    line = one_error_line(runner.invoke(app, [*scan, "--dataset", good2]))
    assert "other options" in line and "dataset" in line
    assert runner.invoke(app, [*scan, "--dataset", good2, "--overwrite"]).exit_code == 0
    second = read_scan(out, "1d-random")
    assert second["loss"][2] != first[2] and good2 in str(second["attrs"]["dataset"])
    fast = ["--top-k", "1", "--trace-probes", "0", "--density-probes", "0", "--out", str(out)]
    assert runner.invoke(app, ["hessian", str(ckpt), "--dataset", good2, *fast]).exit_code == 0
    line = one_error_line(runner.invoke(app, ["hessian", str(ckpt), "--dataset", good, *fast]))
    assert "other options" in line and "samples_sha256" in line
