"""Checkpoint round trips, foreign formats, and safety against malicious pickles."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import pytest
import torch
from cases import DIGITS, digits_cnn, same_weights

from landscape_cli.checkpoints import (
    FORMAT,
    load_model,
    match_keys,
    read_file,
    save_checkpoint,
)
from landscape_cli.errors import LandscapeError


def _landscape_ckpt(model: torch.nn.Module) -> dict:
    return {
        "format": FORMAT,
        "version": 1,
        "model": {"name": "cnn", "kwargs": {"input_shape": [1, 8, 8], "num_classes": 10}},
        "dataset": {"name": "digits", "root": None},
        "state_dict": model.state_dict(),
        "optimizer": {"name": "adam", "hparams": {"lr": 1e-3}, "state_dict": {}},
        "train": {"epoch": 1, "step": 12, "seed": 0, "history": {"train_loss": [1.0]}},
    }


def test_landscape_checkpoint_round_trip(tmp_path):
    model = digits_cnn()
    path = save_checkpoint(tmp_path / "sub" / "m.pt", _landscape_ckpt(model))
    assert [p.name for p in path.parent.iterdir()] == ["m.pt"]  # no temporary files left behind
    raw = torch.load(path, weights_only=True)
    assert raw["format"] == FORMAT and raw["train"]["history"]["train_loss"] == [1.0]
    loaded = load_model(path)
    assert loaded.kind == "landscape" and loaded.model_spec["name"] == "cnn"
    assert loaded.dataset_spec == {"name": "digits", "root": None}
    assert same_weights(model, loaded.model)
    x = torch.randn(4, 1, 8, 8)
    torch.testing.assert_close(model(x), loaded.model.eval()(x), rtol=0, atol=0)


def test_torchvision_resnet18_plain_state_dict(tmp_path):
    torch.manual_seed(1)
    import torchvision

    net = torchvision.models.resnet18(num_classes=10)
    torch.save(net.state_dict(), tmp_path / "resnet18.pth")
    loaded = load_model(
        tmp_path / "resnet18.pth",
        model="torchvision:resnet18",
        input_shape=(3, 32, 32),
        num_classes=10,
    )
    assert loaded.kind == "state_dict" and loaded.dataset_spec is None
    assert same_weights(net, loaded.model)


def test_ddp_prefixed_dict_under_state_dict_key(tmp_path):
    model = digits_cnn(2)
    wrapped = {f"module.{k}": v for k, v in model.state_dict().items()}
    torch.save({"state_dict": wrapped, "epoch": 7}, tmp_path / "ddp.pt")
    loaded = load_model(tmp_path / "ddp.pt", model="cnn", **DIGITS)
    assert same_weights(model, loaded.model)


def test_compiled_prefix_under_model_key(tmp_path):
    model = digits_cnn(3)
    sd = {f"_orig_mod.{k}": v for k, v in model.state_dict().items()}
    torch.save({"model": sd}, tmp_path / "c.pt")
    assert same_weights(model, load_model(tmp_path / "c.pt", model="cnn", **DIGITS).model)


def test_prefix_removed_only_when_every_key_has_it():
    assert match_keys(["module.a", "module.b"], ["a", "b"]) == "module."
    assert match_keys(["module.a", "b"], ["a", "b"]) is None


def test_safetensors_file(tmp_path):
    from safetensors.torch import save_file

    model = digits_cnn(4)
    save_file(
        {k: v.contiguous() for k, v in model.state_dict().items()}, tmp_path / "m.safetensors"
    )
    loaded = load_model(tmp_path / "m.safetensors", model="cnn", **DIGITS)
    assert loaded.kind == "safetensors" and same_weights(model, loaded.model)


class _Payload:
    """Unpickling this object creates a marker directory: a stand-in for arbitrary code."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.makedirs, (self.marker,))


def test_malicious_pickle_never_runs_by_default(tmp_path):
    marker = tmp_path / "payload-ran"
    path = tmp_path / "evil.pt"
    torch.save({"state_dict": digits_cnn().state_dict(), "extra": _Payload(str(marker))}, path)
    with pytest.raises(LandscapeError, match="`trust=True`"):
        load_model(path, model="cnn", **DIGITS)
    with pytest.raises(LandscapeError, match="`trust=True`"):
        load_model(path)
    assert not marker.exists()
    # The test can fail: trusting the file does run the payload.
    load_model(path, model="cnn", trust=True, **DIGITS)
    assert marker.exists()


def test_pickled_full_module_needs_trust(tmp_path):
    model = digits_cnn(5)
    torch.save(model, tmp_path / "full.pt")
    with pytest.raises(LandscapeError, match=r"whole nn\.Module"):
        load_model(tmp_path / "full.pt")
    loaded = load_model(tmp_path / "full.pt", trust=True)
    assert loaded.kind == "module" and same_weights(model, loaded.model)


def test_missing_file(tmp_path):
    with pytest.raises(LandscapeError, match="checkpoint not found"):
        load_model(tmp_path / "nope.pt")


@pytest.mark.parametrize(
    ("content", "name"),
    [(b"hello, not a checkpoint\n", "notes.pt"), (b"\x80\x04K\x01.", "int.pt"), (b"", "empty.pt")],
)
def test_non_checkpoint_files(tmp_path, content, name):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(LandscapeError) as info:
        load_model(path, model="cnn", **DIGITS)
    assert "\n" not in str(info.value)
    assert name in str(info.value)


def test_bad_safetensors(tmp_path):
    (tmp_path / "x.safetensors").write_bytes(b"garbage")
    with pytest.raises(LandscapeError, match="safetensors"):
        read_file(tmp_path / "x.safetensors")


def test_mismatched_architecture_names_keys(tmp_path):
    torch.save(digits_cnn().state_dict(), tmp_path / "cnn.pt")
    with pytest.raises(LandscapeError) as info:
        load_model(tmp_path / "cnn.pt", model="mlp", **DIGITS)
    msg = str(info.value)
    assert "missing keys" in msg and "unexpected keys" in msg and "\n" not in msg


def test_mismatched_shapes_are_named(tmp_path):
    torch.save(digits_cnn().state_dict(), tmp_path / "cnn.pt")
    with pytest.raises(
        LandscapeError,
        match=r"shape mismatches, file vs model \(.*\(16, 1, 3, 3\) vs \(8, 1, 3, 3\)",
    ):
        load_model(tmp_path / "cnn.pt", model="cnn", model_options={"width": 8}, **DIGITS)


def test_state_dict_without_model_spec_needs_model(tmp_path):
    torch.save(digits_cnn().state_dict(), tmp_path / "cnn.pt")
    with pytest.raises(LandscapeError, match="pass `model`"):
        load_model(tmp_path / "cnn.pt")


def test_not_weights_at_all(tmp_path):
    torch.save({"epoch": 3, "notes": "no tensors here"}, tmp_path / "x.pt")
    with pytest.raises(LandscapeError, match="holds no model weights"):
        load_model(tmp_path / "x.pt", model="cnn", **DIGITS)


def test_newer_format_version_is_refused(tmp_path):
    ckpt = _landscape_ckpt(digits_cnn())
    ckpt["version"] = 99
    save_checkpoint(tmp_path / "new.pt", ckpt)
    with pytest.raises(LandscapeError, match="version 99"):
        load_model(tmp_path / "new.pt")


def test_unpickling_error_type_is_what_torch_raises(tmp_path):
    # Guards the message matching in read_file against a torch that changes its wording.
    torch.save({"x": _Payload(str(tmp_path / "m"))}, tmp_path / "p.pt")
    with pytest.raises(pickle.UnpicklingError, match=r"(?i)unsupported global"):
        torch.load(tmp_path / "p.pt", weights_only=True)
    assert not Path(tmp_path / "m").exists()


def test_sha256_of_a_file_and_of_a_model_folder(tmp_path):
    """A file's hash is its SHA-256 (read in chunks); a folder's hashes its weight files' names
    and hashes only, in the format results files have recorded from the start."""
    import hashlib

    import numpy as np

    from landscape_cli.checkpoints import sha256

    path = tmp_path / "blob.bin"
    data = np.random.default_rng(1).bytes((1 << 20) + 123)  # spans two chunks
    path.write_bytes(data)
    assert sha256(path) == sha256(str(path)) == hashlib.sha256(data).hexdigest()
    folder = tmp_path / "model"
    folder.mkdir()
    weights = {"model.safetensors": b"weights", "pytorch_model.bin": b"more weights"}
    for name, content in weights.items():
        (folder / name).write_bytes(content)
    (folder / "config.json").write_text("{}")  # not a weight file
    lines = "".join(
        f"{name} {hashlib.sha256(content).hexdigest()}\n"
        for name, content in sorted(weights.items())
    )
    assert sha256(folder) == hashlib.sha256(lines.encode()).hexdigest()
