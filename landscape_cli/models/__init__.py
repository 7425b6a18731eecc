r"""Model architectures by name, for ``landscape train`` and the commands that load checkpoints.

:func:`build_model` takes a spec and the data's shape:

- a registry name from :data:`MODEL_NAMES`:

  ========== =========================================================== ==========================
  name       architecture                                                options (defaults)
  ========== =========================================================== ==========================
  mlp        flatten → Linear-ReLU per hidden width → Linear              ``hidden=(64, 64)``
  cnn        3 conv-BN-ReLU layers, adaptive avg pool, linear (~24k)      ``width=16``
  resnet18   CIFAR ResNet-18 (He et al. 2016), 3×3 stride-1 stem           ``width=64``
  resnet50   CIFAR ResNet-50 (bottlenecks), 3×3 stride-1 stem              ``width=64``
  vgg16      VGG-16-BN (Simonyan & Zisserman 2015), 512→classes linear     ``width=64``
  vit_small  ViT-Small (Dosovitskiy et al. 2021), explicit softmax attn    ``patch_size=4, dim=384,
                                                                           depth=12, heads=6,
                                                                           mlp_ratio=4.0``
  ========== =========================================================== ==========================

  ``width`` is the channel count of the first stage (the others scale with it), so tests and
  quick experiments can build narrow versions of the same architecture.
- ``torchvision:NAME``: any torchvision classification model, built with
  ``torchvision.models.get_model(NAME, weights=None, num_classes=...)``: never pretrained weights.
  The options are passed on to the builder (e.g. ``image_size`` for torchvision's ViTs).
- ``timm:NAME``: any timm model, built with ``timm.create_model(NAME, pretrained=False,
  num_classes=..., in_chans=C, **options)``: never pretrained weights, nothing downloaded
  (options that would fetch or read weights, such as ``pretrained`` or ``checkpoint_path``,
  are refused). The options are passed on (e.g. ``img_size`` for timm's ViTs,
  ``drop_rate``).
- ``package.module:factory``: the user's own factory, called with the keyword arguments
  ``input_shape``, ``num_classes`` and the options, of which it may ignore any it does not take.

``input_shape`` is ``(C, H, W)`` for images or ``(D,)`` for vectors (only ``mlp`` and user
factories take vectors). Every registry model accepts any reasonable ``H, W`` (8×8 digits, 32×32
CIFAR) through adaptive pooling; ``vit_small`` needs ``H`` and ``W`` divisible by ``patch_size``.
Initialization is deterministic given :func:`torch.manual_seed`. Errors are one-line
:class:`~landscape_cli.errors.LandscapeError`\ s.

The registry and the builders live in :mod:`landscape_cli.models.registry`; the architectures in
:mod:`~landscape_cli.models.small` (``mlp``, ``cnn``), :mod:`~landscape_cli.models.cifar_resnet`,
:mod:`~landscape_cli.models.vgg` and :mod:`~landscape_cli.models.vit`; Hugging Face model folders
in :mod:`~landscape_cli.models.hf`.
"""

from landscape_cli.models.registry import (
    MODEL_NAMES,
    build_meta,
    build_model,
    count_parameters,
    model_options,
)

__all__ = [
    "MODEL_NAMES",
    "build_meta",
    "build_model",
    "count_parameters",
    "model_options",
]
