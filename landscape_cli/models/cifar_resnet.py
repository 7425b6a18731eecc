"""ResNet-18 and ResNet-50 in the CIFAR form (He et al. 2016).

ResNet-18 and ResNet-50 in the CIFAR form (He et al., "Deep Residual Learning for Image
Recognition", CVPR 2016).

The ImageNet stem (7×7 stride-2 convolution and 3×3 max-pool) is replaced by one 3×3 stride-1
convolution without max-pool, as is usual for 32×32 inputs; the four stages keep the ImageNet
widths (64, 128, 256, 512 by default) and strides (1, 2, 2, 2), with BasicBlocks [2, 2, 2, 2]
for ResNet-18 and Bottlenecks [3, 4, 6, 3] (expansion 4) for ResNet-50. Shortcuts that change
shape are 1×1 convolutions with BatchNorm (option B of the paper). Global average pooling
(adaptive, so any input size works) feeds one linear layer.

Parameter counts for 3-channel input and 10 classes: ResNet-18 11,173,962; ResNet-50 23,520,842.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F


def _shortcut(in_planes: int, out_planes: int, stride: int) -> nn.Module:
    if stride == 1 and in_planes == out_planes:
        return nn.Identity()
    return nn.Sequential(
        nn.Conv2d(in_planes, out_planes, kernel_size=1, stride=stride, bias=False),
        nn.BatchNorm2d(out_planes),
    )


class BasicBlock(nn.Module):
    """Two 3×3 convolutions with BatchNorm and an identity (or projection) shortcut.

    Args:
        in_planes: input channels.
        planes: output channels.
        stride: stride of the first convolution (and of the projection shortcut).
    """

    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = _shortcut(in_planes, planes, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the block: two 3×3 convolutions plus the shortcut."""
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class Bottleneck(nn.Module):
    """1×1 reduce → 3×3 (carrying the stride) → 1×1 expand (×4), with BatchNorm, plus shortcut.

    Args:
        in_planes: input channels.
        planes: channels of the 3×3 convolution; the output has ``4·planes``.
        stride: stride of the 3×3 convolution (and of the projection shortcut).
    """

    expansion = 4

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        out_planes = planes * self.expansion
        self.conv1 = nn.Conv2d(in_planes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, out_planes, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_planes)
        self.shortcut = _shortcut(in_planes, out_planes, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the bottleneck block: 1×1, 3×3, 1×1 convolutions plus the shortcut."""
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return F.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """ResNet with the CIFAR stem: 3×3 stride-1 convolution, BatchNorm, ReLU, no max-pool.

    Args:
        block: :class:`BasicBlock` or :class:`Bottleneck`.
        num_blocks: blocks in each of the four stages.
        input_shape: ``(channels, height, width)`` of one input.
        num_classes: the number of logits.
        width: channels of the stem and first stage (doubled per stage).
    """

    def __init__(
        self,
        block: type[BasicBlock] | type[Bottleneck],
        num_blocks: Sequence[int],
        input_shape: Sequence[int],
        num_classes: int,
        width: int = 64,
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(input_shape[0], width, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        in_planes = width
        stages: list[nn.Sequential] = []
        for index, blocks in enumerate(num_blocks):
            planes = width * 2**index
            stride = 1 if index == 0 else 2
            layers: list[nn.Module] = []
            for block_index in range(blocks):
                layers.append(block(in_planes, planes, stride if block_index == 0 else 1))
                in_planes = planes * block.expansion
            stages.append(nn.Sequential(*layers))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_planes, num_classes)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits of a batch of images."""
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        return self.fc(torch.flatten(self.avgpool(out), 1))


def resnet18(input_shape: Sequence[int], num_classes: int, width: int = 64) -> CifarResNet:
    """CIFAR ResNet-18: BasicBlocks [2, 2, 2, 2]; 11,173,962 parameters for 3×32×32, 10 classes."""
    return CifarResNet(BasicBlock, (2, 2, 2, 2), input_shape, num_classes, width)


def resnet50(input_shape: Sequence[int], num_classes: int, width: int = 64) -> CifarResNet:
    """CIFAR ResNet-50: Bottlenecks [3, 4, 6, 3]; 23,520,842 parameters for 3×32×32, 10 classes."""
    return CifarResNet(Bottleneck, (3, 4, 6, 3), input_shape, num_classes, width)
