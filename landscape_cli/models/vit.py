"""Vision Transformer (Dosovitskiy et al. 2021), Small configuration by default.

Vision Transformer (Dosovitskiy et al., "An Image is Worth 16x16 Words: Transformers for Image
Recognition at Scale", ICLR 2021), Small configuration by default: width 384, depth 12, 6 heads,
MLP ratio 4 (as in Touvron et al. 2021, DeiT-S).

Pre-norm blocks (LayerNorm ε=1e-6 → multi-head self-attention → residual; LayerNorm → MLP with
GELU → residual), a learned class token and learned positional embeddings, a final LayerNorm and
a linear head on the class token. Patches come from a ``patch_size``×``patch_size`` stride-
``patch_size`` convolution (default 4: 64 patches for 32×32 CIFAR images, 4 for 8×8 digits).

Attention is written out as ``softmax(Q Kᵀ / √d) V`` with ordinary tensor operations, so that
double backward (Hessian-vector products) works on every backend; no dropout, so eval and train
modes compute the same function. Parameter count for 3×32×32 input, patch 4 and 10 classes:
21,342,346.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn


class Attention(nn.Module):
    """Multi-head self-attention with an explicit softmax (double-backward friendly).

    Args:
        dim: the token width.
        heads: the number of heads (``dim`` must be divisible by it).
    """

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.head_dim = dim // heads
        self.scale = 1.0 / math.sqrt(self.head_dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Multi-head self-attention over the tokens of ``x``."""
        batch, tokens, dim = x.shape
        qkv = self.qkv(x).reshape(batch, tokens, 3, self.heads, self.head_dim)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each (batch, heads, tokens, head_dim)
        weights = torch.softmax((q @ k.transpose(-2, -1)) * self.scale, dim=-1)
        out = (weights @ v).transpose(1, 2).reshape(batch, tokens, dim)
        return self.proj(out)


class Block(nn.Module):
    """Pre-norm transformer encoder block.

    Args:
        dim: the token width.
        heads: the attention heads.
        mlp_ratio: the MLP's hidden width over ``dim``.
    """

    def __init__(self, dim: int, heads: int, mlp_ratio: float) -> None:
        super().__init__()
        hidden = int(dim * mlp_ratio)
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the pre-norm block: attention and MLP, each with a residual."""
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class VisionTransformer(nn.Module):
    """ViT classifier over non-overlapping square patches; see the module docstring.

    Args:
        input_shape: ``(channels, height, width)`` of one input.
        num_classes: the number of logits.
        patch_size: the side of a square patch.
        dim: the token width.
        depth: the number of blocks.
        heads: the attention heads per block.
        mlp_ratio: the MLP's hidden width over ``dim``.
    """

    def __init__(
        self,
        input_shape: Sequence[int],
        num_classes: int,
        patch_size: int = 4,
        dim: int = 384,
        depth: int = 12,
        heads: int = 6,
        mlp_ratio: float = 4.0,
    ) -> None:
        super().__init__()
        channels, height, width = input_shape
        num_patches = (height // patch_size) * (width // patch_size)
        self.patch_size = patch_size
        self.patch_embed = nn.Conv2d(channels, dim, kernel_size=patch_size, stride=patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, num_patches + 1, dim))
        self.blocks = nn.Sequential(*(Block(dim, heads, mlp_ratio) for _ in range(depth)))
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.head = nn.Linear(dim, num_classes)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.LayerNorm):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits of a batch of images."""
        tokens = self.patch_embed(x).flatten(2).transpose(1, 2)  # (batch, patches, dim)
        cls = self.cls_token.expand(tokens.shape[0], -1, -1)
        tokens = torch.cat([cls, tokens], dim=1) + self.pos_embed
        tokens = self.norm(self.blocks(tokens))
        return self.head(tokens[:, 0])


def vit_small(
    input_shape: Sequence[int],
    num_classes: int,
    patch_size: int = 4,
    dim: int = 384,
    depth: int = 12,
    heads: int = 6,
    mlp_ratio: float = 4.0,
) -> VisionTransformer:
    """ViT-Small (dim 384, depth 12, 6 heads, MLP ratio 4) with ``patch_size`` patches."""
    return VisionTransformer(input_shape, num_classes, patch_size, dim, depth, heads, mlp_ratio)
