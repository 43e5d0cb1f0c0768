"""Decode heads: SegFormer's All-MLP decoder (HF/NVlabs and mmseg styles) and the classifier head.

Both All-MLP styles end in `fuse(concat_i(upsample(p_i(x_i))))` with a 1x1 `fuse`. A 1x1 conv is
linear and bilinear upsampling mixes pixels with weights that sum to one, so the two commute:
`fuse(concat_i(up(p_i))) == sum_i up(W_i p_i)` with `W_i` the slice of `fuse` seen by stage i.
We apply `W_i` at the stage's own (low) resolution and upsample D channels instead of the 4D-wide
concat at 1/4 scale: the same function, several times fewer operations and far less memory.
In eval mode the fuse BatchNorm is an affine map, folded into the per-stage weights; the biases are
per-channel constants, which bilinear upsampling keeps, so their sum is added once, on the smallest map.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _linear_nchw(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """1x1 conv as one GEMM over an NHWC view; returns a channels-last NCHW view."""
    y = F.linear(x.permute(0, 2, 3, 1), weight, bias)
    return y.permute(0, 3, 1, 2)


def _bn_affine(bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """Eval-mode BatchNorm as y = x * scale + shift."""
    scale = bn.weight * torch.rsqrt(bn.running_var + bn.eps)
    return scale, bn.bias - bn.running_mean * scale


def _upsample_sum(parts: list[torch.Tensor], size: tuple[int, int]) -> torch.Tensor:
    """parts[0] + sum of the others upsampled to `size`. Without autograd the sum accumulates in place into
    parts[0] (a fresh map the caller owns): at 1/4 of a large input every new D-channel map costs a fresh
    allocation's page faults. With autograd, in place on that (channels-last view) map would make backward
    clone it per part, so the sum is out of place there."""
    out = parts[0]
    in_place = not (torch.is_grad_enabled() and out.requires_grad)
    for part in parts[1:]:
        up = F.interpolate(part, size=size, mode="bilinear", align_corners=False)
        out = out.add_(up) if in_place else out + up
    return out


def _add_fusion(head: nn.Module, stages: int, dim: int, num_classes: int, dropout: nn.Module, bn_eps: float) -> None:
    """The layers both All-MLP styles end in: `linear_fuse` (1x1, stages x dim -> dim, no bias), `bn`, `dropout`
    and the 1x1 `classifier`, registered in that order (the state-dict order of both references)."""
    head.linear_fuse = nn.Conv2d(dim * stages, dim, 1, bias=False)
    head.bn = nn.BatchNorm2d(dim, eps=bn_eps)
    head.dropout = dropout
    head.classifier = nn.Conv2d(dim, num_classes, 1)


class MLPDecoder(nn.Module):
    """All-MLP decoder as in HF transformers and the NVlabs release.

    Per stage Linear(C_i -> D), upsample to 1/4, concat, 1x1 conv 4D -> D (no bias) + BN + ReLU,
    dropout, 1x1 conv D -> K. `linear_fuse` input channels are stored in stage order
    [c1, c2, c3, c4] (the references concatenate [c4, c3, c2, c1]; converters reorder).
    """

    def __init__(self, in_channels: tuple[int, ...], dim: int, num_classes: int, dropout: float = 0.1,
                 bn_eps: float = 1e-5):
        super().__init__()
        self.linear_c = nn.ModuleList(nn.Linear(c, dim) for c in in_channels)
        _add_fusion(self, len(in_channels), dim, num_classes, nn.Dropout(dropout), bn_eps)

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        dim = self.bn.num_features
        fuse = self.linear_fuse.weight.view(dim, len(features), dim)
        fold_bn = not self.training and self.bn.track_running_stats
        if fold_bn:
            scale, shift = _bn_affine(self.bn)
            fuse = fuse * scale[:, None, None]
            total_bias = shift + sum(fuse[:, i] @ linear.bias for i, linear in enumerate(self.linear_c))
        parts = []
        for i, (x, linear) in enumerate(zip(features, self.linear_c)):
            w = fuse[:, i]
            b = (total_bias if i == len(features) - 1 else None) if fold_bn else w @ linear.bias
            tokens = x.shape[-2] * x.shape[-1]
            if x.shape[1] < tokens:  # fold W_i into the projection: one GEMM C_i -> D
                parts.append(_linear_nchw(x, w @ linear.weight, b))
            else:  # tiny maps with wide channels: two small GEMMs are cheaper than folding
                parts.append(_linear_nchw(_linear_nchw(x, linear.weight, None), w, b))
        x = _upsample_sum(parts, features[0].shape[-2:])
        x = F.relu(x if fold_bn else self.bn(x))
        return self.classifier(self.dropout(x))


class ConvBNReLU(nn.Module):
    """1x1 conv (no bias) + BatchNorm + ReLU, as mmcv's ConvModule with norm."""

    def __init__(self, in_channels: int, out_channels: int, bn_eps: float = 1e-5):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 1, bias=False)
        self.bn = nn.BatchNorm2d(out_channels, eps=bn_eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(_linear_nchw(x, self.conv.weight.flatten(1), None)))


class MMSegMLPDecoder(nn.Module):
    """All-MLP decoder as MMSegmentation's `SegformerHead`.

    Per stage 1x1 conv + BN + ReLU (`convs.i`), upsample, concat [c1..c4], `fusion_conv` 1x1 + BN +
    ReLU (here `linear_fuse` + `bn`), Dropout2d, `conv_seg` (here `classifier`). The per-stage ReLU
    happens before the fuse, so the commuting trick applies after it.
    """

    def __init__(self, in_channels: tuple[int, ...], dim: int, num_classes: int, dropout: float = 0.1,
                 bn_eps: float = 1e-5):
        super().__init__()
        self.convs = nn.ModuleList(ConvBNReLU(c, dim, bn_eps) for c in in_channels)
        _add_fusion(self, len(in_channels), dim, num_classes, nn.Dropout2d(dropout), bn_eps)

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        dim = self.bn.num_features
        fuse = self.linear_fuse.weight.view(dim, len(features), dim)
        parts = [_linear_nchw(conv(x), fuse[:, i], None) for i, (x, conv) in enumerate(zip(features, self.convs))]
        x = F.relu(self.bn(_upsample_sum(parts, features[0].shape[-2:])))
        return self.classifier(self.dropout(x))


class ClassificationHead(nn.Module):
    """Image classification: mean over the last stage's positions, then Linear."""

    def __init__(self, in_channels: int, num_classes: int):
        super().__init__()
        self.fc = nn.Linear(in_channels, num_classes)

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        return self.fc(features[-1].mean(dim=(2, 3)))


def init_decoder(module: nn.Module) -> None:
    """Fresh decoder weights (timm-style): trunc-normal Linear, Kaiming convs, BN to identity."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    classifier = getattr(module, "classifier", None)
    if isinstance(classifier, nn.Conv2d):  # small logits at the start, as mmseg's conv_seg: normal(0, 0.01)
        nn.init.normal_(classifier.weight, std=0.01)
        nn.init.zeros_(classifier.bias)
