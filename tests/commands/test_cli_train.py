"""``landscape train`` through the real CLI (typer's CliRunner)."""

from __future__ import annotations

import json

import pytest
import torch
from cases import one_error_line, runner, write_cifar10

from landscape_cli.commands import app


def test_train_json_and_checkpoint(tmp_path):
    out = tmp_path / "m.pt"
    args = ["train", "--optimizer", "dualadam", "--epochs", "2", "--out", str(out), "--json"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)  # stdout holds the JSON object and nothing else
    assert summary["checkpoint"] == str(out) and summary["epochs"] == 2
    assert summary["optimizer"] == "dualadam" and summary["hparams"]["lr"] == 1e-2
    assert summary["hparams"]["switch_rate"] == pytest.approx(6 / 24)
    ckpt = torch.load(out, weights_only=True)
    assert ckpt["train"]["history"]["test_acc"][-1] == pytest.approx(summary["test_acc"])


def test_train_table_and_default_output(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["train", "--epochs", "1", "--seed", "5"])
    assert result.exit_code == 0, result.output
    assert "test_acc" in result.stdout
    assert (tmp_path / "checkpoints" / "cnn-digits-adam-s5.pt").exists()


def test_train_resume_and_model_option(tmp_path):
    out = tmp_path / "v.pt"
    base = ["train", "--model", "mlp", "--model-option", "hidden=(16,)", "--out", str(out)]
    assert runner.invoke(app, [*base, "--epochs", "1"]).exit_code == 0
    result = runner.invoke(app, ["train", "--resume", str(out), "--epochs", "2", "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["epochs"] == 2 and summary["checkpoint"] == str(out)
    assert torch.load(out, weights_only=True)["model"]["kwargs"]["hidden"] == [16]


def test_train_num_classes_option_widens_the_head_or_is_refused(tmp_path):
    out = tmp_path / "w.pt"
    base = ["train", "--model", "mlp", "--epochs", "1", "--out", str(out)]
    result = runner.invoke(app, [*base, "--model-option", "num_classes=12"])
    assert result.exit_code == 0, result.output
    ckpt = torch.load(out, weights_only=True)
    assert ckpt["model"]["kwargs"]["num_classes"] == 12
    head = [v for k, v in ckpt["state_dict"].items() if k.endswith("weight")][-1]
    assert head.shape[0] == 12  # the last layer has the 12 outputs asked for
    narrow = [*base, "--model-option", "num_classes=5", "--overwrite"]  # another run's settings
    err = one_error_line(runner.invoke(app, narrow))
    assert "num_classes=5" in err and "10 classes" in err


def test_train_on_a_cifar10_folder(tmp_path):
    write_cifar10(tmp_path / "data")
    out = tmp_path / "c.pt"
    args = ["train", "--dataset", "cifar10", "--data-root", str(tmp_path / "data")]
    args += ["--model", "cnn", "--model-option", "width=4", "--epochs", "2", "--batch-size", "4"]
    result = runner.invoke(app, [*args, "--optimizer", "dualadam", "--out", str(out), "--json"])
    assert result.exit_code == 0, result.output
    ckpt = torch.load(out, weights_only=True)
    assert ckpt["dataset"]["name"] == "cifar10"
    assert ckpt["dataset"]["root"] == str(tmp_path / "data")
    assert ckpt["model"]["kwargs"]["input_shape"] == [3, 32, 32]
    assert ckpt["train"]["step"] == 2 * 4  # 15 images (5 batches of 3) in batches of 4
