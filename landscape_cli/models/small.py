"""Small models that train in seconds on CPU: a multilayer perceptron and a compact BN CNN."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn


class MLP(nn.Module):
    """Flatten → (Linear → ReLU) per hidden width → Linear to the class logits.

    Works for any input shape: the input is flattened to ``prod(input_shape)`` features.

    Args:
        input_shape: the shape of one input.
        num_classes: the number of logits.
        hidden: the hidden layers' widths.
    """

    def __init__(
        self, input_shape: Sequence[int], num_classes: int, hidden: Sequence[int] = (64, 64)
    ) -> None:
        super().__init__()
        in_features = math.prod(input_shape)
        layers: list[nn.Module] = [nn.Flatten()]
        for width in hidden:
            layers += [nn.Linear(in_features, width), nn.ReLU(inplace=True)]
            in_features = width
        layers.append(nn.Linear(in_features, num_classes))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Outputs of a batch."""
        return self.net(x)


def _conv_bn_relu(in_channels: int, out_channels: int) -> list[nn.Module]:
    return [
        nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    ]


class SmallCNN(nn.Module):
    """A compact BatchNorm CNN for small images (8×8 digits, 32×32 CIFAR).

    ``conv(w)-BN-ReLU → conv(2w)-BN-ReLU → max-pool 2 → conv(4w)-BN-ReLU → adaptive avg pool →
    linear``, with 3×3 convolutions (padding 1, no bias: BatchNorm follows). With the default
    ``width=16`` and 10 classes it has 24,058 parameters for 1-channel input and 24,346 for
    3-channel input. Adaptive pooling makes it accept any input of at least 2×2 pixels.

    Args:
        input_shape: ``(channels, height, width)`` of one input.
        num_classes: the number of logits.
        width: ``w``, the first convolution's channels.
    """

    def __init__(self, input_shape: Sequence[int], num_classes: int, width: int = 16) -> None:
        super().__init__()
        channels = input_shape[0]
        self.features = nn.Sequential(
            *_conv_bn_relu(channels, width),
            *_conv_bn_relu(width, 2 * width),
            nn.MaxPool2d(2),
            *_conv_bn_relu(2 * width, 4 * width),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.classifier = nn.Linear(4 * width, num_classes)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits of a batch of images."""
        return self.classifier(self.features(x))
