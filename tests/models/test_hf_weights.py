"""Hugging Face folders whose weights do not fit their config are refused (issue 21.3).

transformers initialises every weight the files lack at random, drops the ones the model lacks,
and (with ``ignore_mismatched_sizes``) re-initialises tensors of another shape. Measured, such a
folder gives a different Hessian on every run. Each fault below must be one error line naming
the first keys, from every command that loads a folder (hessian, scan and its ``--to`` target,
audit), before anything is computed, as ``.pt`` files are.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from cases import runner
from lm_cases import SENTENCES, make_bert, make_tokenizer, write_csv
from safetensors.torch import load_file, save_file

from landscape_cli.commands import app
from landscape_cli.errors import LandscapeError


def _rewrite(folder: Path, edit) -> None:
    weights = load_file(folder / "model.safetensors")
    save_file(edit(dict(weights)), folder / "model.safetensors", metadata={"format": "pt"})


def renamed(folder: Path) -> None:
    """Every key renamed (a prefix no model has)."""
    _rewrite(folder, lambda sd: {f"encoder_{k}": v for k, v in sd.items()})


def no_head(folder: Path) -> None:
    """The classifier head deleted (a base-model checkpoint under a classifier config)."""
    _rewrite(folder, lambda sd: {k: v for k, v in sd.items() if not k.startswith("classifier")})


def roberta_config(folder: Path) -> None:
    """``model_type: roberta`` (and its architecture) on BERT weights."""
    cfg = json.loads((folder / "config.json").read_text())
    cfg["model_type"] = "roberta"
    cfg["architectures"] = ["RobertaForSequenceClassification"]
    (folder / "config.json").write_text(json.dumps(cfg))


def wrong_shape(folder: Path) -> None:
    """A head with three outputs under a two-label config."""

    def edit(sd):
        sd["classifier.weight"] = torch.zeros(3, sd["classifier.weight"].shape[1])
        sd["classifier.bias"] = torch.zeros(3)
        return sd

    _rewrite(folder, edit)


def one_missing(folder: Path) -> None:
    """One weight in the middle of the network deleted."""
    _rewrite(folder, lambda sd: {k: v for k, v in sd.items() if "layer.1.output.dense" not in k})


def extra_key(folder: Path) -> None:
    """A tensor the model has no place for."""
    _rewrite(folder, lambda sd: {**sd, "bert.encoder.layer.9.output.dense.weight": torch.ones(2)})


FAULTS = {
    "renamed": (renamed, ["missing keys (bert.embeddings", "unexpected keys (encoder_bert."]),
    "no_head": (no_head, ["2 missing keys (classifier.weight, classifier.bias)"]),
    "roberta": (roberta_config, ["missing keys (roberta.", "unexpected keys (bert."]),
    "wrong_shape": (wrong_shape, ["2 shape mismatches, file vs model (classifier.weight (3, 8)"]),
    "one_missing": (one_missing, ["2 missing keys (bert.encoder.layer.1.output.dense.weight"]),
    "extra_key": (extra_key, ["1 unexpected keys (bert.encoder.layer.9.output.dense.weight)"]),
}


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> Path:
    """A good fine-tune ``a`` and ``b`` of one tokenizer, the data, and one folder per fault."""
    d = tmp_path_factory.mktemp("hfw")
    tok = make_tokenizer([s for s, _ in SENTENCES])
    make_bert(d / "a", seed=0, tok=tok)
    make_bert(d / "b", seed=1, tok=tok)
    write_csv(d / "data.csv")
    for name, (fault, _) in FAULTS.items():
        shutil.copytree(d / "a", d / name)
        fault(d / name)
    return d


@pytest.mark.parametrize("fault", list(FAULTS))
def test_library_refuses_weights_that_do_not_fit(folders: Path, fault: str) -> None:
    from landscape_cli.models.hf import load_hf_folder

    with pytest.raises(LandscapeError) as err:
        load_hf_folder(folders / fault)
    text = str(err.value)
    assert "\n" not in text and "does not fit" in text
    for words in FAULTS[fault][1]:
        assert words in text, text


def test_good_folders_load_without_complaint(folders: Path) -> None:
    """The folders the faults start from load, to the same weights as the files hold."""
    from landscape_cli.models.hf import load_hf_folder

    net = load_hf_folder(folders / "a").model.net
    stored = load_file(folders / "a" / "model.safetensors")
    state = net.state_dict()
    assert all(torch.equal(state[k], v) for k, v in stored.items())


def _invoke(command: str, folders: Path, fault: str, tmp_path: Path):
    data = ["--dataset", f"text:{folders / 'data.csv'}", "--samples", "4"]
    bad, good = str(folders / fault), str(folders / "a")
    out = ["--out", str(tmp_path / "r.h5")]
    args = {
        "hessian": ["hessian", bad, "--top-k", "1", "--trace-probes", "0", "--density-probes",
                    "0", *out],
        "scan": ["scan", bad, "--points", "3", *out],
        "scan-to": ["scan", good, "--to", bad, "--points", "3", *out],
        "audit": ["audit", good, bad, "--top-k", "1", "--trace-probes", "0", "--density-probes",
                  "0"],
    }[command]  # fmt: skip
    return runner.invoke(app, [*args, *data])


@pytest.mark.parametrize("command", ["hessian", "scan", "scan-to", "audit"])
@pytest.mark.parametrize("fault", ["renamed", "no_head", "roberta", "wrong_shape"])
def test_every_command_refuses_on_one_line(
    folders: Path, tmp_path: Path, command: str, fault: str
) -> None:
    r = _invoke(command, folders, fault, tmp_path)
    assert r.exit_code == 2, r.output
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), r.stderr
    assert "does not fit" in lines[0] and str(folders / fault) in lines[0]
    assert "Traceback" not in r.output
    assert not (tmp_path / "r.h5").exists()  # refused before anything was computed or written
    assert not (folders / "a.h5").exists()
