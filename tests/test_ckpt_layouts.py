"""Checkpoints people actually have: Lightning-style and other prefixed state dicts, classifier
heads of another width than the dataset's, and ``timm:NAME`` model sources."""

from __future__ import annotations

import socket
from pathlib import Path

import h5py
import pytest
import torch
from cases import DIGITS, digits_cnn, one_error_line, runner, same_weights

from landscape_cli.checkpoints import (
    FORMAT,
    head_width,
    load_model,
    match_keys,
    save_checkpoint,
)
from landscape_cli.commands import app
from landscape_cli.errors import LandscapeError
from landscape_cli.models import build_model
from landscape_cli.specs import check_file_spec

TINY = ["--samples", "24", "--batch-size", "12", "--top-k", "1", "--max-steps", "6"]
TINY += ["--trace-probes", "2", "--density-probes", "0"]


def _lightning(state_dict: dict, prefix: str = "model.") -> dict:
    """What ``pytorch_lightning.Trainer.save_checkpoint`` writes for a LightningModule that
    holds the network as ``self.model`` (with plain hyper-parameters)."""
    return {
        "epoch": 4,
        "global_step": 120,
        "pytorch-lightning_version": "2.4.0",
        "state_dict": {f"{prefix}{k}": v for k, v in state_dict.items()},
        "loops": {"fit_loop": {"state_dict": {}, "epoch_progress": {"current": {"ready": 5}}}},
        "callbacks": {"ModelCheckpoint{'monitor': None}": {"best_model_path": ""}},
        "optimizer_states": [{"state": {}, "param_groups": [{"lr": 0.1, "params": [0, 1]}]}],
        "lr_schedulers": [],
        "hyper_parameters": {"lr": 0.1, "width": 16},
    }


def _image_folder(root: Path, classes: int, size: int = 16, per_class: int = 4) -> Path:
    from PIL import Image

    gen = torch.Generator().manual_seed(0)
    for c in range(classes):
        folder = root / f"class{c}"
        folder.mkdir(parents=True)
        for i in range(per_class):
            pixels = torch.randint(0, 256, (size, size, 3), generator=gen, dtype=torch.uint8)
            Image.fromarray(pixels.numpy()).save(folder / f"{i}.png")
    return root


# -- the key matcher ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "prefix", ["", "model.", "net.", "module.", "_orig_mod.", "model.module.", "_orig_mod.module."]
)
def test_match_keys_finds_the_one_common_prefix(prefix):
    keys = ["conv.weight", "conv.bias", "fc.weight"]
    assert match_keys([prefix + k for k in keys], keys) == prefix


def test_match_keys_refuses_partial_and_wrong_prefixes():
    keys = ["a.weight", "b.weight"]
    assert match_keys(["model.a.weight", "b.weight"], keys) is None  # not every key has it
    assert match_keys(["model.a.weight", "model.c.weight"], keys) is None  # wrong keys after
    assert match_keys(["a.weight"], keys) is None  # a key missing
    # the prefix is never a whole key: "a." of "a.weight" would leave "weight"
    assert match_keys(["a.weight"], ["weight"]) == "a."
    assert match_keys(["x.a.weight", "x.b.weight"], ["b.weight", "a.weight"]) == "x."


# -- loading prefixed files -----------------------------------------------------------------------


def test_lightning_style_file_loads_and_says_which_prefix(tmp_path):
    model = digits_cnn(1)
    torch.save(_lightning(model.state_dict()), tmp_path / "epoch=4.ckpt")
    loaded = load_model(tmp_path / "epoch=4.ckpt", model="cnn", **DIGITS)
    assert same_weights(model, loaded.model)
    assert loaded.prefix == "model." and loaded.kind == "state_dict"
    assert loaded.notes == ("removed the prefix 'model.' from every key of the state dict",)
    x = torch.randn(3, 1, 8, 8)
    torch.testing.assert_close(model(x), loaded.model.eval()(x), rtol=0, atol=0)


@pytest.mark.parametrize("prefix", ["model.module.", "_orig_mod.module.", "net.backbone."])
def test_nested_prefix_is_removed_whole(tmp_path, prefix):
    model = digits_cnn(2)
    torch.save(_lightning(model.state_dict(), prefix), tmp_path / "nested.pt")
    loaded = load_model(tmp_path / "nested.pt", model="cnn", **DIGITS)
    assert same_weights(model, loaded.model) and loaded.prefix == prefix


def test_safetensors_with_a_prefix(tmp_path):
    from safetensors.torch import save_file

    model = digits_cnn(3)
    save_file({f"net.{k}": v.contiguous() for k, v in model.state_dict().items()}, tmp_path / "m")
    (tmp_path / "m").rename(tmp_path / "m.safetensors")
    loaded = load_model(tmp_path / "m.safetensors", model="cnn", **DIGITS)
    assert same_weights(model, loaded.model) and loaded.prefix == "net."


def test_unprefixed_files_carry_no_note(tmp_path):
    torch.save(digits_cnn().state_dict(), tmp_path / "bare.pt")
    loaded = load_model(tmp_path / "bare.pt", model="cnn", **DIGITS)
    assert loaded.prefix == "" and loaded.notes == ()


def test_keys_that_fit_only_in_part_are_one_line(tmp_path):
    sd = {f"model.{k}": v for k, v in digits_cnn().state_dict().items()}
    sd["criterion.weight"] = torch.ones(10)  # not every key has the prefix: nothing is guessed
    torch.save({"state_dict": sd}, tmp_path / "mixed.ckpt")
    with pytest.raises(LandscapeError) as info:
        load_model(tmp_path / "mixed.ckpt", model="cnn", **DIGITS)
    msg = str(info.value)
    n = len(sd)
    assert "\n" not in msg and f"{n - 1} missing keys" in msg and f"{n} unexpected keys" in msg
    assert "prefix" not in msg


def test_a_prefix_that_leaves_other_keys_is_named_in_the_error(tmp_path):
    sd = {f"model.{k}": v for k, v in digits_cnn().state_dict().items()}
    dropped = next(iter(sd))
    del sd[dropped]
    torch.save({"state_dict": sd}, tmp_path / "other.ckpt")
    with pytest.raises(LandscapeError) as info:
        load_model(tmp_path / "other.ckpt", model="cnn", **DIGITS)
    msg = str(info.value)
    assert "after removing the prefix 'model.': 1 missing keys" in msg and "\n" not in msg
    assert dropped.removeprefix("model.") in msg and "unexpected" not in msg


def test_many_mismatches_name_a_few_keys_not_all(tmp_path):
    sd = {f"model.{k}": v for k, v in digits_cnn().state_dict().items()}
    torch.save({"state_dict": sd}, tmp_path / "other.ckpt")
    with pytest.raises(LandscapeError) as info:
        load_model(tmp_path / "other.ckpt", model="cnn", model_options={"width": 8}, **DIGITS)
    msg = str(info.value)
    assert "after removing the prefix 'model.'" in msg and "\n" not in msg
    assert "shape mismatches, file vs model" in msg and " more)" in msg
    assert msg.count(" vs (") == 2  # the first two of them, then a count


def test_training_resumes_from_a_prefixed_checkpoint(tmp_path, trained_checkpoint):
    from landscape_cli.training import TrainConfig, train

    config = TrainConfig(model="mlp", model_options={"hidden": [8]}, epochs=1)
    out = trained_checkpoint(config, into=tmp_path, name="run.pt")
    ckpt = torch.load(out, weights_only=True)
    ckpt["state_dict"] = {f"_orig_mod.{k}": v for k, v in ckpt["state_dict"].items()}
    save_checkpoint(out, ckpt)
    train(TrainConfig(model="mlp", model_options={"hidden": [8]}, epochs=2), resume=out)
    resumed = torch.load(out, weights_only=True)
    assert resumed["train"]["epoch"] == 2
    assert not any(k.startswith("_orig_mod.") for k in resumed["state_dict"])


def test_cli_prints_one_note_line_and_records_the_prefix(tmp_path):
    torch.manual_seed(0)
    net = build_model("mlp", hidden=[8], **DIGITS)
    torch.save(_lightning(net.state_dict()), tmp_path / "lit.ckpt")
    out = tmp_path / "lit.h5"
    args = ["hessian", str(tmp_path / "lit.ckpt"), "--model", "mlp", "--model-option"]
    args += ["hidden=[8]", "--dataset", "digits", "--out", str(out), *TINY]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    notes = [ln for ln in result.stderr.splitlines() if ln.startswith("note:")]
    assert notes == ["note: lit.ckpt: removed the prefix 'model.' from every key of the state dict"]
    with h5py.File(out) as f:
        assert f.attrs["state_dict_prefix"] == "model."


# -- classifier heads -----------------------------------------------------------------------------


def _torchvision_resnet18(tmp_path: Path, classes: int) -> Path:
    import torchvision

    torch.manual_seed(0)
    net = torchvision.models.resnet18(num_classes=classes)
    path = tmp_path / f"resnet18-{classes}.pth"
    torch.save(net.state_dict(), path)
    return path


def test_head_width_is_read_from_the_state_dict():
    torch.manual_seed(0)
    ten = build_model("cnn", **DIGITS)
    three = build_model("cnn", input_shape=(1, 8, 8), num_classes=3)
    found = head_width(three, {f"module.{k}": v for k, v in ten.state_dict().items()}, 3)
    assert found is not None and found[0] == 10 and found[1].endswith("weight")
    wider = build_model("cnn", input_shape=(1, 8, 8), num_classes=3, width=8)
    assert head_width(wider, ten.state_dict(), 3) is None  # other layers differ too


def test_head_wider_than_the_dataset_names_the_option(tmp_path):
    path = _torchvision_resnet18(tmp_path, 10)
    kw = {"model": "torchvision:resnet18", "input_shape": (3, 16, 16), "num_classes": 3}
    with pytest.raises(LandscapeError) as info:
        load_model(path, **kw)
    msg = str(info.value)
    assert msg == (
        f"{path}: its classifier head fc.weight has 10 outputs but the dataset has 3 classes; "
        "pass `model_options={'num_classes': 10}` to measure its 10-way output on these 3 "
        "classes, or the `dataset` it was trained on"
    )
    loaded = load_model(path, **kw, model_options={"num_classes": 10})  # the option fits
    assert loaded.model.fc.out_features == 10


def test_head_narrower_than_the_dataset_names_the_dataset(tmp_path):
    path = _torchvision_resnet18(tmp_path, 2)
    with pytest.raises(LandscapeError) as info:
        load_model(path, model="torchvision:resnet18", input_shape=(3, 16, 16), num_classes=3)
    msg = str(info.value)
    assert "has 2 outputs but the dataset has 3 classes" in msg
    assert "`dataset`" in msg and "num_classes" not in msg and "\n" not in msg


def test_audit_on_an_image_folder_with_fewer_classes_is_one_line(tmp_path):
    path = _torchvision_resnet18(tmp_path, 10)
    folder = _image_folder(tmp_path / "imgs", 3)
    args = ["audit", str(path), "--model", "torchvision:resnet18"]
    args += ["--dataset", f"imagefolder:{folder}", "--samples", "6"]
    line = one_error_line(runner.invoke(app, args))
    assert "fc.weight has 10 outputs but the dataset has 3 classes" in line
    assert "--model-option num_classes=10" in line


def test_other_shape_mismatches_are_one_line(tmp_path):
    path = _torchvision_resnet18(tmp_path, 3)
    with pytest.raises(LandscapeError) as info:
        load_model(path, model="torchvision:resnet34", input_shape=(3, 16, 16), num_classes=3)
    msg = str(info.value)
    assert "\n" not in msg and "missing keys" in msg and "check `model`" in msg
    assert len(msg) < 400


# -- timm -----------------------------------------------------------------------------------------


def test_timm_models_are_built_without_weights():
    torch.manual_seed(0)
    net = build_model("timm:resnet18", input_shape=(1, 16, 16), num_classes=4)
    assert net(torch.randn(2, 1, 16, 16)).shape == (2, 4)  # in_chans from the data
    net = build_model("timm:resnet18", input_shape=(3, 16, 16), num_classes=4, in_chans=3)
    assert net.fc.out_features == 4


@pytest.mark.parametrize(
    ("name", "options", "expected"),
    [
        ("timm:resnet18", {"pretrained": True}, "never loads pretrained weights"),
        ("timm:resnet18", {"checkpoint_path": "x.pth"}, "never loads pretrained weights"),
        ("timm:no_such_net", {}, "unknown timm model 'no_such_net'"),
        ("timm:hf-hub:timm/resnet18.a1_in1k", {}, "unknown timm model"),
        ("timm:resnet18", {"no_such_option": 1}, "cannot build timm:resnet18"),
    ],
)
def test_timm_refusals_are_one_line(name, options, expected):
    with pytest.raises(LandscapeError, match=expected) as info:
        build_model(name, input_shape=(3, 16, 16), num_classes=3, **options)
    assert "\n" not in str(info.value)


def test_timm_spec_stored_in_a_file_needs_no_trust():
    assert check_file_spec("timm:resnet18", "model", "x.pt") == "timm:resnet18"


@pytest.mark.slow
def test_timm_resnet18_through_hessian_opens_no_socket(tmp_path, monkeypatch):
    import timm

    torch.manual_seed(0)
    net = timm.create_model("resnet18", pretrained=False, num_classes=3)
    torch.save({"model": net.state_dict(), "epoch": 1}, tmp_path / "timm18.pth")
    folder = _image_folder(tmp_path / "imgs", 3)

    def refuse(*args, **kwargs):
        raise AssertionError("landscape opened a network connection")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    out = tmp_path / "timm18.h5"
    args = ["hessian", str(tmp_path / "timm18.pth"), "--model", "timm:resnet18"]
    args += ["--dataset", f"imagefolder:{folder}", "--out", str(out), "--json"]
    args += ["--samples", "6", "--batch-size", "6", "--top-k", "1", "--max-steps", "3"]
    args += ["--trace-probes", "2", "--trace-method", "hutchinson", "--density-probes", "0"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    from landscape_cli.results import read_hessian, read_root

    assert read_root(out)["model"] == "timm:resnet18"
    h = read_hessian(out)
    assert len(h["eigenvalues"]) == 1 and h["trace"] is not None
    assert h["attrs"]["num_params"] == sum(p.numel() for p in net.parameters())


def test_landscape_checkpoint_of_a_timm_model_round_trips(tmp_path):
    torch.manual_seed(0)
    net = build_model("timm:resnet18", input_shape=(3, 16, 16), num_classes=3)
    ckpt = {
        "format": FORMAT,
        "version": 1,
        "model": {
            "name": "timm:resnet18",
            "kwargs": {"input_shape": [3, 16, 16], "num_classes": 3},
        },
        "state_dict": net.state_dict(),
    }
    save_checkpoint(tmp_path / "t.pt", ckpt)
    loaded = load_model(tmp_path / "t.pt")  # no --trust-checkpoint needed
    assert same_weights(net, loaded.model) and loaded.kind == "landscape"
