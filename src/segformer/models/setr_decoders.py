"""SETR decode heads (Zheng et al., 2021) as MMSegmentation 1.2.2 builds them: the naive / progressive
upsampling head (`SETRUPHead`), the multi-level aggregation neck + head (`MLANeck`, `SETRMLAHead`) and the
1x1 FCN auxiliary head of SETR-MLA.

A 1x1 conv is linear and bilinear upsampling (align_corners=False) mixes pixels with weights that sum to
one, so the two commute: every head here applies its classifier *before* its last upsampling. That is the
same function at a fraction of the cost (the classifier runs on 4-16x fewer pixels, and K class maps are
upsampled instead of the wider feature maps); for MLA the four branches then share one upsampling.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .decoders import init_decoder


def upsample(x: torch.Tensor, scale: int) -> torch.Tensor:
    """Bilinear (align_corners=False) upsampling by an integer factor, to exactly scale x the size."""
    return F.interpolate(x, size=(x.shape[-2] * scale, x.shape[-1] * scale), mode="bilinear", align_corners=False)


def layer_norm_nchw(norm: nn.LayerNorm, x: torch.Tensor) -> torch.Tensor:
    """LayerNorm over the channels of an NCHW map (per token), returned as a channels-last NCHW view."""
    return norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class ConvBlock(nn.Module):
    """k x k conv (no bias, 'same' padding) + BatchNorm + ReLU, as mmcv's ConvModule with a norm."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, bn_eps: float = 1e-5):
        super().__init__()
        if kernel_size % 2 != 1:
            raise ValueError(f"ConvBlock: kernel_size must be odd (1 or 3 in SETR), got {kernel_size}")
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=False)
        self.bn = nn.BatchNorm2d(out_channels, eps=bn_eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)))


class SETRUPHead(nn.Module):
    """SETR-Naive / SETR-PUP head: LayerNorm over tokens, then `num_convs` x [conv-BN-ReLU, bilinear
    x`up_scale`], then a 1x1 classifier. Naive: 1 x (1x1 conv, x4) -> logits at 1/4 of the input;
    PUP: 4 x (3x3 conv, x2) -> full resolution."""

    def __init__(self, in_channels: int, channels: int, num_classes: int, num_convs: int, kernel_size: int,
                 up_scale: int, dropout: float = 0.0, ln_eps: float = 1e-6, bn_eps: float = 1e-5):
        super().__init__()
        if num_convs < 1 or up_scale < 1:
            raise ValueError(f"SETRUPHead needs num_convs >= 1 and up_scale >= 1, got {num_convs}, {up_scale}")
        self.up_scale = up_scale
        self.norm = nn.LayerNorm(in_channels, eps=ln_eps)
        self.stages = nn.ModuleList(
            ConvBlock(in_channels if i == 0 else channels, channels, kernel_size, bn_eps) for i in range(num_convs))
        self.dropout = nn.Dropout2d(dropout)
        self.classifier = nn.Conv2d(channels, num_classes, 1)
        init_head(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = layer_norm_nchw(self.norm, x)
        for i, stage in enumerate(self.stages):
            x = stage(x)
            if i < len(self.stages) - 1:
                x = upsample(x, self.up_scale)
        return upsample(self.classifier(self.dropout(x)), self.up_scale)  # classifier before the last upsample


class MLANeck(nn.Module):
    """Multi-level feature aggregation neck: per level LayerNorm and 1x1 conv-BN-ReLU to `channels`; top-down
    running sums from the deepest level; a 3x3 conv-BN-ReLU on each sum. As in mmseg, output i is the sum
    of the i + 1 deepest levels (output 0 = the deepest level alone)."""

    def __init__(self, in_channels: tuple[int, ...], channels: int, ln_eps: float = 1e-6, bn_eps: float = 1e-5):
        super().__init__()
        self.norms = nn.ModuleList(nn.LayerNorm(c, eps=ln_eps) for c in in_channels)
        self.proj = nn.ModuleList(ConvBlock(c, channels, 1, bn_eps) for c in in_channels)
        self.fuse = nn.ModuleList(ConvBlock(channels, channels, 3, bn_eps) for _ in in_channels)
        init_decoder(self)

    def forward(self, features: list[torch.Tensor]) -> list[torch.Tensor]:
        levels = zip(features, self.norms, self.proj, strict=True)
        projected = [proj(layer_norm_nchw(norm, x)) for x, norm, proj in levels]
        outs, running = [], None
        for fuse, p in zip(self.fuse, reversed(projected), strict=True):
            running = p if running is None else running + p
            outs.append(fuse(running))
        return outs


class SETRMLAHead(nn.Module):
    """SETR-MLA head: per level two 3x3 conv-BN-ReLU (`channels` -> `mla_channels`), x`up_scale` upsampling,
    concat, 1x1 classifier. The classifier is split per level and applied before the (shared) upsampling."""

    def __init__(self, in_channels: tuple[int, ...], mla_channels: int, num_classes: int, up_scale: int = 4,
                 dropout: float = 0.0, bn_eps: float = 1e-5):
        super().__init__()
        self.up_scale = up_scale
        self.branches = nn.ModuleList(
            nn.Sequential(ConvBlock(c, mla_channels, 3, bn_eps), ConvBlock(mla_channels, mla_channels, 3, bn_eps))
            for c in in_channels)
        self.dropout = nn.Dropout2d(dropout)
        self.classifier = nn.Conv2d(mla_channels * len(in_channels), num_classes, 1)
        init_head(self)

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        weights = self.classifier.weight.flatten(1).chunk(len(self.branches), dim=1)
        logits = self.classifier.bias.view(1, -1, 1, 1)
        for x, branch, w in zip(features, self.branches, weights, strict=True):
            logits = logits + F.conv2d(self.dropout(branch(x)), w[:, :, None, None])
        return upsample(logits, self.up_scale)


class FCNHead(nn.Module):
    """The auxiliary head of SETR-MLA (mmseg `FCNHead` with num_convs=0): a 1x1 classifier at the input's scale."""

    def __init__(self, in_channels: int, num_classes: int, dropout: float = 0.0):
        super().__init__()
        self.dropout = nn.Dropout2d(dropout)
        self.classifier = nn.Conv2d(in_channels, num_classes, 1)
        init_head(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.dropout(x))


def init_head(module: nn.Module) -> None:
    """Fresh head weights as mmseg: Kaiming convs, BN and LN to identity, classifier normal(0, 0.01)."""
    init_decoder(module)
    for m in module.modules():
        if isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    nn.init.normal_(module.classifier.weight, 0.0, 0.01)
    nn.init.zeros_(module.classifier.bias)


__all__ = ["ConvBlock", "SETRUPHead", "MLANeck", "SETRMLAHead", "FCNHead", "upsample", "init_head"]
