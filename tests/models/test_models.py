"""Tests for landscape_cli.models: the registry, torchvision and user factories, HVP support."""

from __future__ import annotations

import sys
import textwrap
import uuid
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from landscape_cli.errors import LandscapeError
from landscape_cli.models import (
    MODEL_NAMES,
    build_model,
    count_parameters,
    model_options,
)

# Narrow versions of each architecture: same structure, few channels, fast on two CPU cores.
TINY: dict[str, dict] = {
    "mlp": {"hidden": (16,)},
    "cnn": {"width": 4},
    "resnet18": {"width": 4},
    "resnet50": {"width": 2},
    "vgg16": {"width": 8},
    "vit_small": {"depth": 1, "dim": 32, "heads": 2},
}


def _write_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, source: str) -> str:
    name = f"modelmod_{uuid.uuid4().hex[:10]}"
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(source))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, name, raising=False)
    return name


def test_registry_names() -> None:
    assert MODEL_NAMES == ("mlp", "cnn", "resnet18", "resnet50", "vgg16", "vit_small")
    assert set(TINY) == set(MODEL_NAMES)


@pytest.mark.parametrize("shape", [(1, 8, 8), (3, 32, 32)], ids=["digits", "cifar"])
@pytest.mark.parametrize("name", MODEL_NAMES)
def test_every_model_builds_runs_forward_and_backward(name: str, shape: tuple) -> None:
    torch.manual_seed(0)
    model = build_model(name, input_shape=shape, num_classes=10, **TINY[name])
    x = torch.randn(3, *shape)
    y = torch.tensor([0, 4, 9])
    logits = model(x)
    assert logits.shape == (3, 10)
    F.cross_entropy(logits, y).backward()
    for pname, param in model.named_parameters():
        assert param.grad is not None, pname
        assert torch.isfinite(param.grad).all(), pname
    model.eval()
    with torch.no_grad():
        assert model(x[:1]).shape == (1, 10)


@pytest.mark.parametrize("name", ["cnn", "vit_small", "resnet18"])
def test_initialization_is_deterministic_given_the_seed(name: str) -> None:
    states = []
    for _ in range(2):
        torch.manual_seed(123)
        model = build_model(name, input_shape=(3, 32, 32), num_classes=10, **TINY[name])
        states.append(model.state_dict())
    assert states[0].keys() == states[1].keys()
    for key in states[0]:
        assert torch.equal(states[0][key], states[1][key]), key
    torch.manual_seed(124)
    other = build_model(name, input_shape=(3, 32, 32), num_classes=10, **TINY[name])
    assert any(not torch.equal(v, other.state_dict()[k]) for k, v in states[0].items())


def test_small_model_parameter_counts() -> None:
    # mlp on digits: 64·64+64 + 64·64+64 + 64·10+10 = 4160 + 4160 + 650 = 8,970
    assert count_parameters(build_model("mlp", input_shape=(1, 8, 8), num_classes=10)) == 8_970
    # cnn on digits: convs 1·16·9 + 16·32·9 + 32·64·9 = 23,184 (no bias: BN follows),
    # BN 2·(16+32+64) = 224, linear 64·10+10 = 650: 24,058; RGB adds 2·16·9 = 288: 24,346
    assert count_parameters(build_model("cnn", input_shape=(1, 8, 8), num_classes=10)) == 24_058
    assert count_parameters(build_model("cnn", input_shape=(3, 32, 32), num_classes=10)) == 24_346


def test_resnet18_cifar_parameter_count_and_stem() -> None:
    model = build_model("resnet18", input_shape=(3, 32, 32), num_classes=10)
    # The standard CIFAR ResNet-18 (He et al. 2016 stages, 3×3 stem): 11,173,962 parameters.
    assert count_parameters(model) == 11_173_962
    assert model.conv1.kernel_size == (3, 3) and model.conv1.stride == (1, 1)
    assert not any(isinstance(m, (nn.MaxPool2d, nn.AvgPool2d)) for m in model.modules())
    assert [len(s) for s in (model.layer1, model.layer2, model.layer3, model.layer4)] == [2] * 4
    assert model.fc.in_features == 512 and model.fc.out_features == 10
    # One full-size forward pass at CIFAR resolution.
    model.eval()
    with torch.no_grad():
        assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_resnet50_cifar_parameter_count() -> None:
    model = build_model("resnet50", input_shape=(3, 32, 32), num_classes=10)
    # The standard CIFAR ResNet-50 (bottlenecks [3, 4, 6, 3], 2048→10 head): 23,520,842.
    assert count_parameters(model) == 23_520_842
    assert model.conv1.kernel_size == (3, 3) and model.conv1.stride == (1, 1)
    assert not any(isinstance(m, nn.MaxPool2d) for m in model.modules())
    assert [len(s) for s in (model.layer1, model.layer2, model.layer3, model.layer4)] == [
        3,
        4,
        6,
        3,
    ]
    assert model.fc.in_features == 2048


def test_vgg16_bn_cifar_parameter_count() -> None:
    model = build_model("vgg16", input_shape=(3, 32, 32), num_classes=10)
    # Conv weights (3×3): 3·64 + 64·64 + 64·128 + 128·128 + 128·256 + 2·256·256 + 256·512
    #   + 5·512·512 = 1,634,496 input·output pairs, ×9 = 14,710,464;
    # conv biases = channels = 2·64 + 2·128 + 3·256 + 6·512 = 4,224; BatchNorm γ, β = 8,448;
    # classifier 512·10 + 10 = 5,130. Total 14,710,464 + 4,224 + 8,448 + 5,130 = 14,728,266.
    assert count_parameters(model) == 14_728_266
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 13 and all(c.kernel_size == (3, 3) for c in convs)
    assert sum(isinstance(m, nn.BatchNorm2d) for m in model.modules()) == 13
    assert sum(isinstance(m, nn.MaxPool2d) for m in model.modules()) == 5


def test_vit_small_default_configuration() -> None:
    model = build_model("vit_small", input_shape=(3, 32, 32), num_classes=10)
    # patch embed 3·4·4·384 + 384 = 18,816; class token 384; positions (64+1)·384 = 24,960;
    # per block: 2 LayerNorms 1,536, qkv 384·1152 + 1152 = 443,520, proj 147,840,
    # MLP 384·1536 + 1536 + 1536·384 + 384 = 1,181,568 → 1,774,464, ×12 = 21,293,568;
    # final LayerNorm 768; head 384·10 + 10 = 3,850. Total 21,342,346.
    assert count_parameters(model) == 21_342_346
    assert len(model.blocks) == 12
    assert model.blocks[0].attn.heads == 6 and model.pos_embed.shape == (1, 65, 384)
    assert model_options("vit_small") == {
        "patch_size": 4,
        "dim": 384,
        "depth": 12,
        "heads": 6,
        "mlp_ratio": 4.0,
    }


def test_case_and_dash_insensitive_names() -> None:
    model = build_model("ViT-Small", input_shape=(1, 8, 8), num_classes=3, **TINY["vit_small"])
    assert model(torch.randn(2, 1, 8, 8)).shape == (2, 3)


def test_mlp_takes_vectors_and_image_models_refuse_them() -> None:
    model = build_model("mlp", input_shape=(20,), num_classes=4, hidden=[8, 8])
    assert model(torch.randn(5, 20)).shape == (5, 4)
    with pytest.raises(LandscapeError, match=r"model 'cnn' needs image inputs shaped \(C, H, W\)"):
        build_model("cnn", input_shape=(20,), num_classes=4)


def test_unknown_model_lists_the_known_names() -> None:
    with pytest.raises(LandscapeError) as info:
        build_model("resnet19", input_shape=(3, 32, 32), num_classes=10)
    message = str(info.value)
    assert message.startswith("unknown model 'resnet19': choose one of ")
    for name in MODEL_NAMES:
        assert name in message
    assert "torchvision:NAME" in message and "package.module:factory" in message


def test_unknown_and_invalid_options() -> None:
    with pytest.raises(
        LandscapeError, match=r"model 'cnn' has no option 'hidden' \(options: width=16\)"
    ):
        build_model("cnn", input_shape=(1, 8, 8), num_classes=10, hidden=(3,))
    with pytest.raises(LandscapeError, match="option width must be a positive integer"):
        build_model("resnet18", input_shape=(3, 32, 32), num_classes=10, width=0)
    with pytest.raises(LandscapeError, match="not divisible by patch_size=3"):
        build_model("vit_small", input_shape=(1, 8, 8), num_classes=10, patch_size=3)
    with pytest.raises(LandscapeError, match="dim=30 is not divisible by heads=4"):
        build_model("vit_small", input_shape=(1, 8, 8), num_classes=10, dim=30, heads=4, depth=1)
    with pytest.raises(LandscapeError, match=r"cannot build model 'mlp' with options \{'hidden'"):
        build_model("mlp", input_shape=(4,), num_classes=2, hidden="wide")
    with pytest.raises(LandscapeError, match="num_classes must be at least 1"):
        build_model("mlp", input_shape=(4,), num_classes=0)


def test_torchvision_models_without_weights() -> None:
    torch.manual_seed(0)
    model = build_model("torchvision:resnet18", input_shape=(3, 32, 32), num_classes=7)
    assert model.fc.out_features == 7
    # torchvision's ImageNet ResNet-18 with a 512→7 head: 11,689,512 − 513,000 + 3,591
    assert count_parameters(model) == 11_180_103
    model.eval()
    with torch.no_grad():
        assert model(torch.randn(2, 3, 32, 32)).shape == (2, 7)


def test_torchvision_errors() -> None:
    with pytest.raises(LandscapeError, match="never loads pretrained weights"):
        build_model(
            "torchvision:resnet18", input_shape=(3, 32, 32), num_classes=10, weights="DEFAULT"
        )
    with pytest.raises(LandscapeError, match="unknown torchvision classification model 'resnet19'"):
        build_model("torchvision:resnet19", input_shape=(3, 32, 32), num_classes=10)
    with pytest.raises(LandscapeError, match="needs 3-channel images"):
        build_model("torchvision:resnet18", input_shape=(1, 8, 8), num_classes=10)


def test_user_factory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    name = _write_module(
        tmp_path,
        monkeypatch,
        """
        import math
        from torch import nn

        def build(input_shape, num_classes, hidden=5):
            features = math.prod(input_shape)
            return nn.Sequential(
                nn.Flatten(), nn.Linear(features, hidden), nn.Linear(hidden, num_classes)
            )

        def takes_all(**kwargs):
            return nn.Linear(kwargs["input_shape"][0], kwargs["num_classes"] * kwargs["scale"])

        def not_a_model(input_shape, num_classes):
            return "nope"
        """,
    )
    model = build_model(f"{name}:build", input_shape=(1, 8, 8), num_classes=3, hidden=7, extra=1)
    assert model[1].out_features == 7
    assert model(torch.randn(2, 1, 8, 8)).shape == (2, 3)
    wide = build_model(f"{name}:takes_all", input_shape=(4,), num_classes=2, scale=3)
    assert wide.out_features == 6
    with pytest.raises(LandscapeError, match=rf"`model='{name}:not_a_model'` returned str"):
        build_model(f"{name}:not_a_model", input_shape=(4,), num_classes=2)
    with pytest.raises(LandscapeError, match=f"module {name!r} has no attribute 'missing'"):
        build_model(f"{name}:missing", input_shape=(4,), num_classes=2)


def _hvp(model: nn.Module, x: torch.Tensor, y: torch.Tensor, v: list[torch.Tensor]) -> list:
    params = [p for p in model.parameters() if p.requires_grad]
    loss = F.cross_entropy(model(x), y)
    grads = torch.autograd.grad(loss, params, create_graph=True)
    dot = sum((g * vi).sum() for g, vi in zip(grads, v, strict=True))
    return list(torch.autograd.grad(dot, params))


def _flat_dot(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    return float(sum((ai * bi).sum() for ai, bi in zip(a, b, strict=True)))


@pytest.mark.parametrize("name", ["cnn", "vit_small"])
def test_double_backward_hessian_vector_products(name: str) -> None:
    """Hv by double backward is symmetric (u·Hv = v·Hu) and matches a finite difference of
    gradients, in float64 and eval mode (the mode the Hessian commands use)."""
    torch.manual_seed(0)
    model = build_model(name, input_shape=(1, 8, 8), num_classes=10, **TINY[name]).double()
    model.train()
    with torch.no_grad():
        model(torch.randn(16, 1, 8, 8, dtype=torch.float64))  # non-trivial BN running stats
    model.eval()
    x = torch.randn(6, 1, 8, 8, dtype=torch.float64)
    y = torch.arange(6) % 10
    params = [p for p in model.parameters() if p.requires_grad]
    u = [torch.randn_like(p) for p in params]
    v = [torch.randn_like(p) for p in params]
    hv = _hvp(model, x, y, v)
    hu = _hvp(model, x, y, u)
    assert _flat_dot(u, hv) == pytest.approx(_flat_dot(v, hu), rel=1e-8, abs=1e-10)
    assert _flat_dot(v, hv) != 0.0

    def grad_at(step: float) -> list[torch.Tensor]:
        with torch.no_grad():
            for p, vi in zip(params, v, strict=True):
                p.add_(vi, alpha=step)
        loss = F.cross_entropy(model(x), y)
        grads = torch.autograd.grad(loss, params)
        with torch.no_grad():
            for p, vi in zip(params, v, strict=True):
                p.sub_(vi, alpha=step)
        return list(grads)

    eps = 1e-5
    plus, minus = grad_at(eps), grad_at(-eps)
    fd = [(a - b) / (2 * eps) for a, b in zip(plus, minus, strict=True)]
    err = sum(float((a - b).pow(2).sum()) for a, b in zip(hv, fd, strict=True)) ** 0.5
    norm = sum(float(a.pow(2).sum()) for a in hv) ** 0.5
    assert err <= 1e-5 * norm
