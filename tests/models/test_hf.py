"""Hugging Face folders (issue 15): tiny BERT-style and ViT-style classifiers built offline."""

from __future__ import annotations

import itertools
import json
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from cases import runner
from lm_cases import SENTENCES, make_bert, make_tokenizer, write_csv

from landscape_cli.commands import app
from landscape_cli.errors import LandscapeError


@pytest.fixture(scope="module")
def bert(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("hf")
    make_bert(d / "ft")
    write_csv(d / "data.csv")
    return d


def _work(d: Path, **kw):
    from landscape_cli.workload import Source, load_workload

    opts = dict(dataset=f"text:{d / 'data.csv'}", samples=0, batch_size=5)
    opts.update(kw)
    return load_workload(d / "ft", Source(**opts))


def test_text_batches_are_padded_with_masks(bert: Path) -> None:
    from transformers import AutoTokenizer

    work = _work(bert)
    assert work.loaded.kind == "hf" and work.samples == len(SENTENCES)
    assert [len(b) for b in work.batches] == [5, 5, 2]
    tok = AutoTokenizer.from_pretrained(bert / "ft", local_files_only=True)
    labels = {"neg": 0, "pos": 1}
    for b in work.batches:
        ids, mask = b.inputs["input_ids"], b.inputs["attention_mask"]
        assert ids.shape == mask.shape and ids.shape[1] == int(mask.sum(1).max())  # per batch
        assert bool(((ids == tok.pad_token_id) == (mask == 0)).all())
    # Every sample once (samples=0 keeps the file's order), labels mapped by label2id.
    first = work.batches[0]
    for i in range(len(first)):
        text, label = SENTENCES[i]
        want = tok(text)["input_ids"]
        assert first.inputs["input_ids"][i][: len(want)].tolist() == want
        assert int(first.targets[i]) == labels[label]


def test_padding_does_not_change_the_logits(bert: Path) -> None:
    """The attention mask is respected: a sample's logits are the same alone and padded."""
    work = _work(bert)
    net = work.model.eval()
    b = work.batches[0]
    with torch.no_grad():
        together = net(b.inputs)
        for i in range(len(b)):
            n = int(b.inputs["attention_mask"][i].sum())
            alone = net({k: v[i : i + 1, :n] for k, v in b.inputs.items()})
            torch.testing.assert_close(alone[0], together[i], rtol=1e-5, atol=1e-6)


def dense_reference(model, batches) -> torch.Tensor:
    """The dense Hessian of the mean cross-entropy by forward-over-reverse autodiff
    (torch.func.jacfwd of torch.func.grad) on a functional call of the model."""
    from torch.func import functional_call, grad, jacfwd

    names = [k for k, p in model.named_parameters() if p.requires_grad]
    params = {k: p.detach() for k, p in model.named_parameters()}
    shapes = [params[k].shape for k in names]
    sizes = [params[k].numel() for k in names]
    total = sum(len(b) for b in batches)

    def loss(flat: torch.Tensor) -> torch.Tensor:
        ps = dict(params)
        for k, part, shape in zip(names, torch.split(flat, sizes), shapes, strict=True):
            ps[k] = part.reshape(shape)
        out = 0.0
        for b in batches:
            logits = functional_call(model, ps, (b.inputs,))
            out = out + torch.nn.functional.cross_entropy(logits, b.targets) * len(b) / total
        return out

    flat = torch.cat([params[k].reshape(-1) for k in names])
    return jacfwd(grad(loss))(flat)


@pytest.mark.slow
def test_operator_equals_dense_hessian(tmp_path: Path) -> None:
    """The operator against the dense Hessian of the same loss (float64, ~600 parameters):
    on 48 Gaussian vectors and on every column of the first and last blocks (embeddings,
    pooler and classifier), to 1e-6. (n products for the whole dense matrix take too long
    for the suite; a wrong entry anywhere shows in the random products.)"""
    from landscape_cli.batches import evaluation_mode, to_device
    from landscape_cli.hessian import HessianOperator

    make_bert(tmp_path / "ft", hidden=4)
    write_csv(tmp_path / "data.csv")
    work = _work(tmp_path, samples=6, batch_size=4)
    model = work.model.double().eval()
    n = sum(p.numel() for p in model.parameters())
    assert 200 < n < 5000
    op = HessianOperator(model, work.batches, loss="ce", dtype=torch.float64)
    assert op.n == n - sum(p.numel() for k, p in model.named_parameters() if k in op.skipped)
    batches = [to_device(b, "cpu", torch.float64) for b in work.batches]
    with evaluation_mode(model):
        ref = dense_reference(model, batches)
    used = [i for i, (k, p) in enumerate(model.named_parameters()) if k not in op.skipped]
    sizes = [p.numel() for _, p in model.named_parameters()]
    starts = np.cumsum([0, *sizes])
    keep = torch.cat([torch.arange(starts[i], starts[i + 1]) for i in used])
    ref = ref[keep][:, keep]
    assert torch.allclose(ref, ref.T, atol=1e-10)
    gen = torch.Generator().manual_seed(0)
    blocks = op.blocks()
    cols = [*range(blocks[0][1], blocks[0][1] + 40), *range(blocks[-2][1], op.n)]
    V = torch.cat([torch.randn(op.n, 48, generator=gen, dtype=torch.float64),
                   torch.eye(op.n, dtype=torch.float64)[:, cols]], dim=1)  # fmt: skip
    got, want = op.matmat(V), ref @ V
    err = (got - want).abs().max().item()
    assert err <= 1e-6 * max(1.0, want.abs().max().item()), err
    assert want.abs().max().item() > 1e-3  # not a vacuous comparison


def test_per_layer_groups_by_transformer_block(bert: Path) -> None:
    from landscape_cli.hessian import HessianOperator

    work = _work(bert, samples=4)
    op = HessianOperator(work.model, work.batches, loss="ce")
    names = [name for name, _, _ in op.blocks()]
    assert names == [
        "net.bert.embeddings",
        "net.bert.encoder.layer.0",
        "net.bert.encoder.layer.1",
        "net.bert.pooler",
        "net.classifier",
    ]
    blocks = op.blocks()
    assert blocks[0][1] == 0 and blocks[-1][2] == op.n
    assert all(a[2] == b[1] for a, b in itertools.pairwise(blocks))


@pytest.mark.slow
def test_cli_hessian_and_scan_point_at_zero(bert: Path, tmp_path: Path) -> None:
    """hessian --per-layer and a random scan on the folder; the scan's point at 0 is the
    model's own loss on the same samples."""
    from landscape_cli.losses import LOSSES, loss_and_accuracy

    folder, data = bert / "ft", bert / "data.csv"
    out = tmp_path / "r.h5"
    common = ["--dataset", f"text:{data}", "--samples", "8", "--batch-size", "4", "--out", out]
    common = [str(a) for a in common]
    r = runner.invoke(
        app,
        ["hessian", str(folder), "--model", f"hf:{folder}", "--top-k", "2",
         "--trace-probes", "4", "--density-probes", "0", "--per-layer", "--json", *common],
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    got = json.loads(r.stdout.strip().splitlines()[-1])
    assert set(got["per_layer"]) >= {"net.bert.encoder.layer.0", "net.classifier"}
    assert got["eigenvalues"][0] >= got["eigenvalues"][1]
    r = runner.invoke(app, ["scan", str(folder), "--points", "5", *common])
    assert r.exit_code == 0, r.output
    with h5py.File(out) as f:
        scan = f["scan/1d-random"]
        loss = scan["loss"][()]
        x = scan["x"][()] if "x" in scan else scan["coords_x"][()]
        assert f.attrs["model"] == f"hf:{folder}"
    work = _work(bert, samples=8, batch_size=4)
    want, _ = loss_and_accuracy(work.model, work.batches, LOSSES["ce"])
    assert x[2] == 0.0
    assert loss[2] == pytest.approx(want, rel=1e-6)
    assert np.isfinite(loss).all()
    r = runner.invoke(app, ["scan", str(folder), "--direction", "eigenvector", "--points", "3",
                            *common])  # fmt: skip
    assert r.exit_code == 0, r.output
    with h5py.File(out) as f:
        eig = f["scan/1d-eigenvector"]["loss"][()]
    assert eig[1] == pytest.approx(want, rel=1e-6)
    assert eig[0] > want and eig[2] > want  # along the top eigenvector the loss curves up


@pytest.mark.slow
def test_scan_to_another_finetune_and_audit(tmp_path: Path) -> None:
    from landscape_cli.losses import LOSSES, loss_and_accuracy

    tok = make_tokenizer([s for s, _ in SENTENCES])
    make_bert(tmp_path / "a", seed=0, tok=tok)
    make_bert(tmp_path / "b", seed=1, tok=tok)
    write_csv(tmp_path / "data.csv")
    data = ["--dataset", f"text:{tmp_path / 'data.csv'}", "--samples", "6"]
    r = runner.invoke(
        app, ["scan", str(tmp_path / "a"), "--to", str(tmp_path / "b"), "--points", "3",
              "--range", "0", "1", *data],
    )  # fmt: skip
    if r.exit_code != 0 and "--range" in r.output:  # the option may be spelled --xrange
        r = runner.invoke(
            app, ["scan", str(tmp_path / "a"), "--to", str(tmp_path / "b"), "--points", "3",
                  "--xrange", "0", "1", *data],
        )  # fmt: skip
    assert r.exit_code == 0, r.output
    results = tmp_path / "a.h5"  # a folder's results file: FOLDER.h5 beside it
    with h5py.File(results) as f:
        loss = f["scan/1d-interpolation"]["loss"][()]
    from landscape_cli.workload import Source, load_workload

    ends, source = [], Source(dataset=f"text:{tmp_path / 'data.csv'}", samples=6)
    for name in ("a", "b"):
        work = load_workload(tmp_path / name, source)
        ends.append(loss_and_accuracy(work.model, work.batches, LOSSES["ce"])[0])
    assert loss[0] == pytest.approx(ends[0], rel=1e-6)
    assert loss[-1] == pytest.approx(ends[1], rel=1e-5)

    r = runner.invoke(
        app,
        ["audit", str(tmp_path / "a"), str(tmp_path / "b"), "--top-k", "1", "--trace-probes",
         "2", "--density-probes", "0", "--json", *data],
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    assert (tmp_path / "b.h5").exists()


def test_sentence_pairs_jsonl_and_string_labels(tmp_path: Path) -> None:
    tok = make_tokenizer([s for s, _ in SENTENCES])
    make_bert(tmp_path / "ft", tok=tok)
    rows = [{"a": s, "b": s[::-1], "y": lab} for s, lab in SENTENCES]
    (tmp_path / "d.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    from landscape_cli.workload import Source, load_workload

    work = load_workload(
        tmp_path / "ft",
        Source(
            dataset=f"text:{tmp_path / 'd.jsonl'}",
            samples=0,
            text_columns=("a", "b"),
            label_column="y",
        ),
    )
    b = work.batches[0]
    want = tok(rows[0]["a"], rows[0]["b"])
    assert b.inputs["input_ids"][0][: len(want["input_ids"])].tolist() == want["input_ids"]
    assert (
        b.inputs["token_type_ids"][0][: len(want["input_ids"])].tolist() == (want["token_type_ids"])
    )
    assert b.targets.tolist()[:2] == [1, 1]


def test_parquet_and_saved_dataset(bert: Path, tmp_path: Path) -> None:
    import datasets
    import pandas as pd

    from landscape_cli.workload import Source, load_workload

    frame = pd.DataFrame({"text": [s for s, _ in SENTENCES], "label": [
        int(lab == "pos") for _, lab in SENTENCES]})  # fmt: skip
    frame.to_parquet(tmp_path / "d.parquet")
    datasets.DatasetDict({"train": datasets.Dataset.from_pandas(frame)}).save_to_disk(
        str(tmp_path / "saved")
    )
    a = load_workload(bert / "ft", Source(dataset=f"text:{tmp_path / 'd.parquet'}", samples=0))
    b = load_workload(bert / "ft", Source(dataset=f"text:{tmp_path / 'saved'}", samples=0))
    c = _work(bert, batch_size=128)
    for w in (a, b):
        assert torch.equal(w.batches[0].targets, c.batches[0].targets)
        assert torch.equal(w.batches[0].inputs["input_ids"], c.batches[0].inputs["input_ids"])


def test_single_file_has_one_split(bert: Path) -> None:
    with pytest.raises(LandscapeError, match="single file"):
        _work(bert, split="test")


def test_samples_are_stratified_and_seeded(bert: Path) -> None:
    a, b = _work(bert, samples=6, seed=3), _work(bert, samples=6, seed=3)
    assert a.samples_sha256 == b.samples_sha256 and a.samples == 6
    labels = torch.cat([x.targets for x in a.batches])
    assert labels.sum().item() == 3  # half of each class


def test_folder_hash_covers_the_weights(bert: Path, tmp_path: Path) -> None:
    from landscape_cli.checkpoints import sha256

    copy = tmp_path / "copy"
    shutil.copytree(bert / "ft", copy)
    assert sha256(copy) == sha256(bert / "ft")
    (copy / "README.md").write_text("notes")
    assert sha256(copy) == sha256(bert / "ft")  # not a weight file
    make_bert(copy, seed=5)
    assert sha256(copy) != sha256(bert / "ft")


def _bad_setups():
    def no_config(d: Path) -> None:
        (d / "ft" / "config.json").unlink()

    def unknown_arch(d: Path) -> None:
        cfg = json.loads((d / "ft" / "config.json").read_text())
        cfg["architectures"] = ["BertForMaskedLM"]
        (d / "ft" / "config.json").write_text(json.dumps(cfg))

    def no_tokenizer(d: Path) -> None:
        for f in (d / "ft").iterdir():
            if "token" in f.name or f.name.startswith("special") or f.name == "vocab.txt":
                f.unlink()

    def unseen_label(d: Path) -> None:
        write_csv(d / "data.csv", [*SENTENCES, ("so so", "neutral")])

    def pickled_weights(d: Path) -> None:
        from safetensors.torch import load_file

        sd = load_file(d / "ft" / "model.safetensors")
        torch.save(sd, d / "ft" / "pytorch_model.bin")
        (d / "ft" / "model.safetensors").unlink()

    def remote_code(d: Path) -> None:
        # A folder that ships its own model code: the code must never run.
        cfg = json.loads((d / "ft" / "config.json").read_text())
        cfg["architectures"] = ["EvilForSequenceClassification"]
        cfg["auto_map"] = {
            "AutoModelForSequenceClassification": "evil.EvilForSequenceClassification"
        }
        (d / "ft" / "config.json").write_text(json.dumps(cfg))
        (d / "ft" / "evil.py").write_text(
            f"open({str(d / 'RAN')!r}, 'w').write('x')\nEvilForSequenceClassification = None\n"
        )

    def missing_column(d: Path) -> None:
        write_csv(d / "data.csv", header=("sentence", "label"))

    def not_text(d: Path) -> None:
        (d / "data.csv").rename(d / "x.csv")

    return {
        "no_config": (no_config, "config.json"),
        "unknown_arch": (unknown_arch, "masked language model"),
        "no_tokenizer": (no_tokenizer, "tokenizer"),
        "unseen_label": (unseen_label, "'neutral'"),
        "pickled_weights": (pickled_weights, "--trust-checkpoint"),
        "remote_code": (remote_code, "EvilForSequenceClassification"),
        "missing_column": (missing_column, "--text-column"),
        "missing_data": (not_text, "not found"),
    }


@pytest.mark.parametrize("case", list(_bad_setups()))
def test_bad_folders_give_one_error_line(bert: Path, tmp_path: Path, case: str) -> None:
    shutil.copytree(bert, tmp_path, dirs_exist_ok=True)
    setup, words = _bad_setups()[case]
    setup(tmp_path)
    r = runner.invoke(
        app,
        ["hessian", str(tmp_path / "ft"), "--model", "hf:", "--dataset",
         f"text:{tmp_path / 'data.csv'}", "--top-k", "1"],
    )  # fmt: skip
    assert r.exit_code == 2, r.output
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), r.stderr
    assert words in lines[0], lines[0]
    assert "Traceback" not in r.output
    assert not (tmp_path / "RAN").exists()  # no code from the folder ran


def test_pickled_weights_load_with_trust(bert: Path, tmp_path: Path) -> None:
    from safetensors.torch import load_file

    from landscape_cli.models.hf import load_hf_folder

    shutil.copytree(bert / "ft", tmp_path / "ft")
    sd = load_file(tmp_path / "ft" / "model.safetensors")
    torch.save(sd, tmp_path / "ft" / "pytorch_model.bin")
    (tmp_path / "ft" / "model.safetensors").unlink()
    with pytest.raises(LandscapeError):
        load_hf_folder(tmp_path / "ft")
    a = load_hf_folder(tmp_path / "ft", trust=True).model.state_dict()
    b = load_hf_folder(bert / "ft").model.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_eager_attention(bert: Path) -> None:
    from landscape_cli.models.hf import load_hf_folder

    hf = load_hf_folder(bert / "ft")
    assert hf.config._attn_implementation == "eager"
    assert hf.task == "text" and hf.architecture == "BertForSequenceClassification"


def make_vit(folder: Path, images: Path) -> None:
    """A tiny ViTForImageClassification on 8x8 RGB images of two class folders."""
    from PIL import Image
    from transformers import ViTConfig, ViTForImageClassification

    gen = np.random.default_rng(0)
    for c, name in enumerate(("cat", "dog")):
        (images / name).mkdir(parents=True)
        for i in range(4):
            pixels = gen.integers(0, 128, (8, 8, 3)) + 100 * c
            Image.fromarray(pixels.astype(np.uint8)).save(images / name / f"{i}.png")
    config = ViTConfig(
        image_size=8,
        patch_size=4,
        num_channels=3,
        hidden_size=8,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=16,
        num_labels=2,
        id2label={0: "dog", 1: "cat"},
        label2id={"dog": 0, "cat": 1},
    )
    torch.manual_seed(0)
    ViTForImageClassification(config).save_pretrained(folder)
    (folder / "preprocessor_config.json").write_text(
        json.dumps({"image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5]})
    )


def test_vit_image_folder(tmp_path: Path) -> None:
    from PIL import Image

    from landscape_cli.hessian import HessianOperator
    from landscape_cli.workload import Source, load_workload

    make_vit(tmp_path / "vit", tmp_path / "img")
    work = load_workload(
        tmp_path / "vit", Source(dataset=f"imagefolder:{tmp_path / 'img'}", samples=0)
    )
    b = work.batches[0]
    assert b.inputs.shape == (8, 3, 8, 8)
    # label names map through label2id (folder order is cat, dog; the model's is dog, cat)
    raw = np.asarray(Image.open(tmp_path / "img" / "cat" / "0.png"), dtype=np.float32) / 255
    want = (torch.from_numpy(raw).permute(2, 0, 1) - 0.5) / 0.5
    hits = [i for i in range(8) if torch.allclose(b.inputs[i], want, atol=1e-5)]
    assert len(hits) == 1 and int(b.targets[hits[0]]) == 1
    op = HessianOperator(work.model, work.batches, loss="ce")
    names = [name for name, _, _ in op.blocks()]
    assert "net.vit.layers.1" in names and names[-1] == "net.classifier"
    assert "net.vit.embeddings" in names
