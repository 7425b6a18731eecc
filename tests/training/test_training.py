"""The training loop: every optimizer and model trains, runs are deterministic and resumable."""

from __future__ import annotations

import math

import pytest
import torch

from dualadam import DualAdam, switch_alpha
from landscape_cli.checkpoints import FORMAT, load_model
from landscape_cli.errors import LandscapeError
from landscape_cli.training import (
    DEFAULT_LR,
    OPTIMIZERS,
    TrainConfig,
    build_optimizer,
    default_output,
    lr_at,
    train,
)


def _weights(path) -> dict[str, torch.Tensor]:
    return torch.load(path, weights_only=True)["state_dict"]


def _assert_same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


@pytest.mark.parametrize("optimizer", OPTIMIZERS)
def test_every_optimizer_trains_and_writes_the_format(tmp_path, optimizer):
    cfg = TrainConfig(optimizer=optimizer, epochs=2, seed=0)
    result = train(cfg, out=tmp_path / "m.pt", device="cpu")
    ckpt = torch.load(result.path, weights_only=True)
    assert ckpt["format"] == FORMAT and ckpt["version"] == 1
    assert ckpt["model"] == {"name": "cnn", "kwargs": {"input_shape": [1, 8, 8], "num_classes": 10}}
    assert ckpt["dataset"]["name"] == "digits"
    assert ckpt["optimizer"]["name"] == optimizer
    assert ckpt["optimizer"]["hparams"]["lr"] == DEFAULT_LR[optimizer]
    assert ckpt["train"]["epoch"] == 2 and ckpt["train"]["step"] == 2 * math.ceil(1438 / 128)
    assert ckpt["train"]["seed"] == 0
    hist = ckpt["train"]["history"]
    for key in ("train_loss", "train_acc", "test_loss", "test_acc", "lr"):
        assert len(hist[key]) == 2
    # Every optimizer's state carries its step counter.
    steps = [s["step"] for s in ckpt["optimizer"]["state_dict"]["state"].values() if "step" in s]
    if optimizer != "sgd":
        assert steps and all(float(s) == ckpt["train"]["step"] for s in steps)
    # Training did something: the loss went down from chance level (ln 10 ≈ 2.30).
    assert hist["train_loss"][-1] < math.log(10)
    # And the checkpoint loads back into the same model.
    loaded = load_model(result.path)
    _assert_same(loaded.model.state_dict(), ckpt["state_dict"])


@pytest.mark.parametrize(
    ("model", "options"),
    [
        ("mlp", {}),
        ("resnet18", {"width": 4}),
        ("resnet50", {"width": 2}),
        ("vgg16", {"width": 4}),
        ("vit_small", {"patch_size": 4, "dim": 16, "depth": 1, "heads": 2}),
    ],
)
def test_every_model_trains_a_few_steps(tmp_path, model, options):
    cfg = TrainConfig(model=model, model_options=options, optimizer="dualadam", epochs=1)
    result = train(cfg, out=tmp_path / "m.pt", device="cpu")
    assert math.isfinite(result.final.train_loss)
    loaded = load_model(result.path)
    assert loaded.model_spec["kwargs"] == {"input_shape": [1, 8, 8], "num_classes": 10, **options}


def test_same_seed_same_weights_different_seed_different(tmp_path):
    cfg = TrainConfig(optimizer="dualadam", epochs=2, seed=3)
    a = train(cfg, out=tmp_path / "a.pt", device="cpu")
    b = train(cfg, out=tmp_path / "b.pt", device="cpu")
    _assert_same(_weights(a.path), _weights(b.path))
    c = train(TrainConfig(optimizer="dualadam", epochs=2, seed=4), out=tmp_path / "c.pt")
    wa, wc = _weights(a.path), _weights(c.path)
    assert any(not torch.equal(wa[k], wc[k]) for k in wa)


@pytest.mark.parametrize("optimizer", ["dualadam", "sgd", "adamw"])
def test_resume_equals_uninterrupted(tmp_path, optimizer):
    # ξ = 1/40 over 4 × 12 steps: the resume at step 24 lands in the middle of the switch (α = 0.4).
    cfg = TrainConfig(optimizer=optimizer, epochs=4, switch_rate=1 / 40, warmup_steps=5, seed=1)
    full = train(cfg, out=tmp_path / "full.pt", device="cpu", save_every=2)
    assert [p.name for p in full.snapshots] == ["full-epoch2.pt", "full-epoch4.pt"]
    snap = tmp_path / "full-epoch2.pt"
    ckpt = torch.load(snap, weights_only=True)
    assert ckpt["train"]["epoch"] == 2 and ckpt["train"]["step"] == 24
    if optimizer == "dualadam":
        assert 0 < switch_alpha(24, ckpt["optimizer"]["hparams"]["switch_rate"]) < 1

    resumed = train(TrainConfig(epochs=0), out=tmp_path / "resumed.pt", resume=snap)
    assert resumed.config.optimizer == optimizer and resumed.final.epoch == 4
    _assert_same(_weights(full.path), _weights(resumed.path))
    assert resumed.history == full.history | {"seconds": resumed.history["seconds"]}


def test_history_holds_one_value_per_epoch(tmp_path):
    """Every history list, α included, has one value per epoch: α at the end of each epoch
    (once listed α was appended twice from the second epoch on)."""
    cfg = TrainConfig(model="mlp", optimizer="dualadam", epochs=3, batch_size=512, seed=0)
    run = train(cfg, out=tmp_path / "h.pt", device="cpu")
    ckpt = torch.load(run.path, weights_only=True)
    assert {k: len(v) for k, v in run.history.items()} == {
        k: 3 for k in ("train_loss", "train_acc", "test_loss", "test_acc", "lr", "seconds", "alpha")
    }
    per_epoch = ckpt["train"]["step"] // 3
    rate = run.hparams["switch_rate"]
    assert run.history["alpha"] == [switch_alpha(per_epoch * e, rate) for e in (1, 2, 3)]
    assert ckpt["train"]["history"] == run.history


def test_resume_refuses_finished_runs_and_foreign_files(tmp_path):
    done = train(TrainConfig(epochs=1), out=tmp_path / "done.pt")
    with pytest.raises(LandscapeError, match="already holds 1 epochs"):
        train(TrainConfig(epochs=1), resume=done.path)
    torch.save({"w": torch.zeros(1)}, tmp_path / "plain.pt")
    with pytest.raises(LandscapeError, match="not a landscape training checkpoint"):
        train(TrainConfig(epochs=2), resume=tmp_path / "plain.pt")


def test_learning_rate_schedule_formula():
    cos = TrainConfig(epochs=10, scheduler="cosine")
    assert lr_at(cos, 0.1, step=1, epoch=0) == pytest.approx(0.1)
    mid = 1e-3 + (1 - 1e-3) * 0.5 * (1 + math.cos(math.pi * 5 / 10))
    assert lr_at(cos, 0.1, step=50, epoch=5) == pytest.approx(0.1 * mid)
    assert lr_at(cos, 0.1, step=99, epoch=10) == pytest.approx(1e-4)  # lr / 1000 at the end
    warm = TrainConfig(epochs=10, scheduler="none", warmup_steps=100)
    assert lr_at(warm, 0.1, step=25, epoch=0) == pytest.approx(0.025)
    assert lr_at(warm, 0.1, step=100, epoch=3) == pytest.approx(0.1)
    assert lr_at(warm, 0.1, step=5000, epoch=9) == pytest.approx(0.1)


def test_dualadam_default_switch_rate_is_six_over_total_steps():
    cfg = TrainConfig(optimizer="dualadam", epochs=20).validate()
    opt, hp = build_optimizer(cfg, [torch.nn.Parameter(torch.ones(1))], total_steps=240)
    assert isinstance(opt, DualAdam)
    assert hp["switch_rate"] == pytest.approx(6 / 240)
    assert opt.param_groups[0]["switch_rate"] == hp["switch_rate"]


def test_default_output_name():
    cfg = TrainConfig(model="cnn", dataset="digits", optimizer="dualadam", seed=7)
    assert str(default_output(cfg)) == "checkpoints/cnn-digits-dualadam-s7.pt"
    odd = TrainConfig(model="torchvision:resnet18", dataset="imagefolder:/data/x", seed=0)
    assert str(default_output(odd)) == "checkpoints/torchvision-resnet18-x-adam-s0.pt"


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"optimizer": "lion"}, "unknown optimizer"),
        ({"scheduler": "step"}, "unknown scheduler"),
        ({"epochs": -1}, "`epochs`"),
        ({"lr": 0.0}, "`lr`"),
        ({"switch_rate": -1.0}, "`switch_rate`"),
        ({"weight_decay": -1.0}, "`weight_decay`"),
        ({"batch_size": 0}, "`batch_size`"),
    ],
)
def test_bad_config_is_a_clear_error(kwargs, match):
    with pytest.raises(LandscapeError, match=match):
        TrainConfig(**kwargs).validate()


def test_missing_cifar_root_is_a_clear_error(tmp_path):
    with pytest.raises(LandscapeError, match="cifar-10-batches-py"):
        train(TrainConfig(dataset="cifar10", data_root=str(tmp_path / "none"), epochs=1))
