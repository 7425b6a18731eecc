"""VGG-16 with BatchNorm in the CIFAR form (Simonyan & Zisserman 2015).

VGG-16 with BatchNorm in the CIFAR form (Simonyan & Zisserman, "Very Deep Convolutional
Networks for Large-Scale Image Recognition", ICLR 2015; configuration D, with BatchNorm after
every convolution as in Ioffe & Szegedy 2015).

Thirteen 3×3 convolutions (64, 64, M, 128, 128, M, 256×3, M, 512×3, M, 512×3, M) each followed by
BatchNorm and ReLU; the convolutions keep their bias, as in the original and in torchvision's
``vgg16_bn``. The three fully connected ImageNet layers are replaced by the CIFAR classifier: a
single linear layer from the 512 channels to the classes, after an adaptive average pool (a no-op
at 32×32, where the five max-pools leave 1×1). Max-pools use ``ceil_mode=True`` so that inputs
smaller than 32×32 (8×8 digits) still work; for even sizes this changes nothing.

Parameter count for 3-channel input and 10 classes: 14,728,266 (see
``tests/models/test_models.py``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

#: Configuration D; "M" is a 2×2 max-pool.
VGG16_CONFIG: tuple[int | str, ...] = (
    64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M",
)  # fmt: skip


class VGG(nn.Module):
    """VGG with BatchNorm; ``width`` scales all channel counts by ``width / 64``.

    Args:
        config: output channels per convolution (at width 64), ``"M"`` for a max-pool.
        input_shape: ``(channels, height, width)`` of one input.
        num_classes: the number of logits.
        width: the channel scale (64: the standard VGG).
    """

    def __init__(
        self,
        config: Sequence[int | str],
        input_shape: Sequence[int],
        num_classes: int,
        width: int = 64,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels = input_shape[0]
        for item in config:
            if item == "M":
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2, ceil_mode=True))
            else:
                out = int(item) * width // 64
                layers += [
                    nn.Conv2d(channels, out, kernel_size=3, padding=1),
                    nn.BatchNorm2d(out),
                    nn.ReLU(inplace=True),
                ]
                channels = out
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(channels, num_classes)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, 0.0, 0.01)
                nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits of a batch of images."""
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


def vgg16(input_shape: Sequence[int], num_classes: int, width: int = 64) -> VGG:
    """CIFAR VGG-16-BN: 14,728,266 parameters for 3×32×32 input and 10 classes."""
    return VGG(VGG16_CONFIG, input_shape, num_classes, width)
