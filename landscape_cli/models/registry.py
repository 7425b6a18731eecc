"""The model registry and its builders, behind :func:`build_model` (:mod:`landscape_cli.models`).

The registry's architectures (:data:`MODEL_NAMES`), ``torchvision:NAME``, ``timm:NAME`` and a
user's ``package.module:factory``; :func:`build_meta` builds the same model on the ``meta``
device to count it before its memory is taken.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
from torch import nn

from landscape_cli.errors import LandscapeError, one_line
from landscape_cli.extras import require
from landscape_cli.models.cifar_resnet import resnet18, resnet50
from landscape_cli.models.small import MLP, SmallCNN
from landscape_cli.models.vgg import vgg16
from landscape_cli.models.vit import vit_small
from landscape_cli.specs import call_factory, resolve_spec


def _mlp(input_shape: tuple[int, ...], num_classes: int, hidden: Sequence[int] = (64, 64)) -> MLP:
    if isinstance(hidden, int):
        hidden = (hidden,)
    widths = tuple(int(w) for w in hidden)
    if any(w <= 0 for w in widths):
        raise LandscapeError(f"model 'mlp': hidden widths must be positive, got {list(widths)}")
    return MLP(input_shape, num_classes, widths)


def _cnn(input_shape: tuple[int, ...], num_classes: int, width: int = 16) -> SmallCNN:
    return SmallCNN(input_shape, num_classes, width)


def _resnet18(input_shape: tuple[int, ...], num_classes: int, width: int = 64) -> nn.Module:
    return resnet18(input_shape, num_classes, width)


def _resnet50(input_shape: tuple[int, ...], num_classes: int, width: int = 64) -> nn.Module:
    return resnet50(input_shape, num_classes, width)


def _vgg16(input_shape: tuple[int, ...], num_classes: int, width: int = 64) -> nn.Module:
    return vgg16(input_shape, num_classes, width)


def _vit_small(
    input_shape: tuple[int, ...],
    num_classes: int,
    patch_size: int = 4,
    dim: int = 384,
    depth: int = 12,
    heads: int = 6,
    mlp_ratio: float = 4.0,
) -> nn.Module:
    _, height, width = input_shape
    if height % patch_size or width % patch_size:
        raise LandscapeError(
            f"model 'vit_small': image size {height}×{width} is not divisible by "
            f"patch_size={patch_size}; pass a patch_size that divides both"
        )
    if dim % heads:
        raise LandscapeError(f"model 'vit_small': dim={dim} is not divisible by heads={heads}")
    return vit_small(input_shape, num_classes, patch_size, dim, depth, heads, mlp_ratio)


# name -> (builder, needs an image input (C, H, W))
_REGISTRY: dict[str, tuple[Callable[..., nn.Module], bool]] = {
    "mlp": (_mlp, False),
    "cnn": (_cnn, True),
    "resnet18": (_resnet18, True),
    "resnet50": (_resnet50, True),
    "vgg16": (_vgg16, True),
    "vit_small": (_vit_small, True),
}

#: The registry names accepted by :func:`build_model` (besides ``torchvision:NAME``,
#: ``timm:NAME`` and ``module:factory``).
MODEL_NAMES: tuple[str, ...] = tuple(_REGISTRY)


def _option_defaults(builder: Callable[..., nn.Module]) -> dict[str, Any]:
    params = list(inspect.signature(builder).parameters.values())[2:]
    return {p.name: p.default for p in params}


def model_options(name: str) -> dict[str, Any]:
    """The options of registry model ``name`` with their default values."""
    if name not in _REGISTRY:
        raise LandscapeError(_unknown_model_message(name))
    return _option_defaults(_REGISTRY[name][0])


def _unknown_model_message(name: str) -> str:
    return (
        f"unknown model {name!r}: choose one of {', '.join(MODEL_NAMES)}, "
        "or torchvision:NAME, timm:NAME, or package.module:factory"
    )


def _check_shape(input_shape: Sequence[int], num_classes: int) -> tuple[int, ...]:
    try:
        shape = tuple(int(d) for d in input_shape)
    except (TypeError, ValueError):
        raise LandscapeError(
            f"input_shape must be a tuple of integers, got {input_shape!r}"
        ) from None
    if not shape or any(d <= 0 for d in shape):
        raise LandscapeError(f"input_shape must be non-empty and positive, got {shape}")
    if int(num_classes) < 1:
        raise LandscapeError(f"num_classes must be at least 1, got {num_classes}")
    return shape


def _build_registry(
    name: str, shape: tuple[int, ...], num_classes: int, options: dict[str, Any]
) -> nn.Module:
    builder, needs_image = _REGISTRY[name]
    if needs_image and len(shape) != 3:
        raise LandscapeError(
            f"model {name!r} needs image inputs shaped (C, H, W), but the data has shape {shape}; "
            "use `model='mlp'` for vector data"
        )
    defaults = _option_defaults(builder)
    unknown = sorted(set(options) - set(defaults))
    if unknown:
        takes = ", ".join(f"{k}={v!r}" for k, v in defaults.items()) or "none"
        raise LandscapeError(
            f"model {name!r} has no option {', '.join(repr(u) for u in unknown)} (options: {takes})"
        )
    for key, value in options.items():
        default = defaults[key]
        if isinstance(default, int) and not isinstance(default, bool):
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise LandscapeError(
                    f"model {name!r}: option {key} must be a positive integer, got {value!r}"
                )
        elif isinstance(default, float) and (
            not isinstance(value, (int, float)) or isinstance(value, bool) or value <= 0
        ):
            raise LandscapeError(f"model {name!r}: option {key} must be positive, got {value!r}")
    try:
        return builder(shape, num_classes, **options)
    except (TypeError, ValueError, RuntimeError) as exc:
        detail = one_line(str(exc))
        raise LandscapeError(
            f"cannot build model {name!r} with options {options}: {type(exc).__name__}: {detail}"
        ) from exc


def _build_torchvision(
    name: str, shape: tuple[int, ...], num_classes: int, options: dict[str, Any]
) -> nn.Module:
    # lazy: torchvision takes seconds to import; only torchvision: models need it
    import torchvision

    for key in ("weights", "weights_backbone"):
        if options.get(key) is not None:
            raise LandscapeError(
                f"torchvision:{name}: landscape never loads pretrained weights "
                f"({key}={options[key]!r}); load your own checkpoint instead"
            )
    options = {k: v for k, v in options.items() if k not in ("weights", "weights_backbone")}
    known = torchvision.models.list_models(module=torchvision.models)
    if name not in known:
        raise LandscapeError(
            f"unknown torchvision classification model {name!r} (torchvision "
            f"{torchvision.__version__} has {len(known)}, e.g. resnet18, vgg16_bn, vit_b_16; "
            "list them with torchvision.models.list_models(module=torchvision.models))"
        )
    if len(shape) != 3 or shape[0] != 3:
        raise LandscapeError(
            f"torchvision:{name} needs 3-channel images shaped (3, H, W), but the data has shape "
            f"{shape}"
        )
    return _built(
        f"torchvision:{name}",
        num_classes,
        options,
        lambda: torchvision.models.get_model(
            name, weights=None, num_classes=num_classes, **options
        ),
    )


def _built(spec: str, num_classes: int, options: dict[str, Any], make) -> nn.Module:
    """``make()``, any failure of the library's constructor one error line naming ``spec``."""
    try:
        return make()
    except Exception as exc:
        detail = one_line(str(exc))
        raise LandscapeError(
            f"cannot build {spec} with num_classes={num_classes} and options "
            f"{options}: {type(exc).__name__}: {detail}"
        ) from exc


#: timm.create_model arguments that fetch or read weights: never passed on.
_TIMM_REFUSED = ("pretrained", "pretrained_cfg", "pretrained_cfg_overlay", "checkpoint_path")


def _build_timm(
    name: str, shape: tuple[int, ...], num_classes: int, options: dict[str, Any]
) -> nn.Module:
    timm = require("timm", f"`model='timm:{name}'`")

    refused = [k for k in _TIMM_REFUSED if k in options and options[k] not in (None, False)]
    if refused:
        raise LandscapeError(
            f"timm:{name}: landscape never loads pretrained weights "
            f"({refused[0]}={options[refused[0]]!r}); load your own checkpoint instead"
        )
    options = {k: v for k, v in options.items() if k not in (*_TIMM_REFUSED, "cache_dir")}
    if not name or name.startswith(("hf-hub:", "hf_hub:")) or not timm.is_model(name):
        raise LandscapeError(
            f"unknown timm model {name!r} (timm {timm.__version__} has {len(timm.list_models())},"
            " e.g. resnet18, vit_tiny_patch16_224, convnext_atto; list them with "
            "timm.list_models())"
        )
    if len(shape) != 3:
        raise LandscapeError(
            f"timm:{name} needs images shaped (C, H, W), but the data has shape {shape}"
        )
    options.setdefault("in_chans", shape[0])
    return _built(
        f"timm:{name}",
        num_classes,
        options,
        lambda: timm.create_model(name, pretrained=False, num_classes=num_classes, **options),
    )


def build_model(
    name: str, *, input_shape: Sequence[int], num_classes: int, **options: Any
) -> nn.Module:
    """Build the model named by ``name`` for inputs of ``input_shape`` and ``num_classes`` classes.

    ``name`` is a registry name (:data:`MODEL_NAMES`, case-insensitive), ``torchvision:NAME``,
    ``timm:NAME``, or ``package.module:factory``; see :mod:`landscape_cli.models` for the options
    of each. Raises :class:`LandscapeError` for an unknown name, an unknown or invalid option, or an
    input shape the architecture cannot take.
    """
    shape = _check_shape(input_shape, num_classes)
    num_classes = int(num_classes)
    spec = name.strip()
    if ":" in spec:
        prefix, _, rest = spec.partition(":")
        if prefix.strip().lower() == "torchvision":
            return _build_torchvision(rest.strip(), shape, num_classes, dict(options))
        if prefix.strip().lower() == "timm":
            return _build_timm(rest.strip(), shape, num_classes, dict(options))
        factory = resolve_spec(spec, "model")
        model = call_factory(factory, input_shape=shape, num_classes=num_classes, **options)
        if not isinstance(model, nn.Module):
            raise LandscapeError(
                f"`model={spec!r}` returned {type(model).__name__}, not a torch.nn.Module"
            )
        return model
    key = spec.lower().replace("-", "_")
    if key not in _REGISTRY:
        raise LandscapeError(_unknown_model_message(name))
    return _build_registry(key, shape, num_classes, dict(options))


@contextlib.contextmanager
def _no_init() -> Iterator[None]:
    """``torch.nn.init``'s initialisers as no-ops, for a model whose values are never read.

    On the ``meta`` device their random fills go through torch's reference kernels, whose first
    use imports ``torch._dynamo`` (about a second before the first product of a run).
    """
    names = [n for n in dir(nn.init) if n.endswith("_") and not n.startswith("_")]
    saved = {n: getattr(nn.init, n) for n in names}
    try:
        for name in names:
            setattr(nn.init, name, lambda tensor, *args, **kwargs: tensor)
        yield
    finally:
        for name, initialiser in saved.items():
            setattr(nn.init, name, initialiser)


def build_meta(
    name: str, *, input_shape: Sequence[int], num_classes: int, **options: Any
) -> nn.Module | None:
    """:func:`build_model` on the ``meta`` device: the model's shapes without its memory.

    So that a checkpoint declaring ``width=3000`` or ``num_classes=4e7`` is counted (and its
    weights compared with the model's shapes) before gigabytes are allocated. Only the built-in
    sources (the registry, ``torchvision:NAME``, ``timm:NAME``) are built twice; a user's
    ``package.module:factory`` is not (it may do anything), nor is a model whose construction
    does not work on ``meta`` (a constructor that reads values): both give None, and the caller
    builds the real model as before. An invalid spec or option raises as :func:`build_model`.
    """
    spec = name.strip()
    if ":" in spec and spec.partition(":")[0].strip().lower() not in ("torchvision", "timm"):
        return None
    _check_shape(input_shape, num_classes)
    try:
        with torch.device("meta"), _no_init():
            return build_model(name, input_shape=input_shape, num_classes=num_classes, **options)
    except LandscapeError as exc:
        if isinstance(exc.__cause__, (RuntimeError, NotImplementedError)):
            return None  # a constructor that reads values, which meta tensors do not hold
        raise
    except (RuntimeError, NotImplementedError):
        return None


def count_parameters(model: nn.Module, *, trainable_only: bool = False) -> int:
    """The number of scalar parameters of ``model`` (each shared tensor counted once)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
