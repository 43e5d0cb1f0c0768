"""Plain Vision Transformer (Dosovitskiy et al., 2021) as the SETR encoder (Zheng et al., 2021).

Module names follow timm (`patch_embed.proj`, `cls_token`, `pos_embed`, `blocks.N.{norm1,attn.qkv,attn.proj,
norm2,mlp.fc1,mlp.fc2}`, `norm`), so ImageNet ViT weights map onto it by name. The behaviour follows
MMSegmentation's `VisionTransformer` as SETR configures it: patch conv without bias, corner zero-padding
for sizes not divisible by the patch, learned positional embedding resized bilinearly (the class-token
entry kept) when the token grid differs from the training grid, no final norm.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .layers import DropPath, init_linear_or_norm

INTERPOLATE_MODES = ("bilinear", "bicubic", "nearest")


@dataclass
class ViTConfig:
    """Hyper-parameters of a ViT encoder. Defaults are ViT-L/16 as SETR uses it (ADE20K, 512x512)."""

    in_channels: int = 3
    img_size: tuple[int, int] = (512, 512)  # training size: fixes the grid of the stored pos_embed
    patch_size: int = 16
    embed_dim: int = 1024
    depth: int = 24
    num_heads: int = 16
    mlp_ratio: float = 4.0
    qkv_bias: bool = True
    patch_bias: bool = False  # timm's ViTs have one; mmseg's SETR drops it
    eps: float = 1e-6  # every LayerNorm
    drop_rate: float = 0.0
    attn_drop_rate: float = 0.0
    drop_path_rate: float = 0.0
    out_indices: tuple[int, ...] | None = None  # blocks whose outputs are returned; None = the last one
    with_cls_token: bool = True  # False: the class token is dropped before the blocks (SETR-MLA)
    final_norm: bool = False  # LayerNorm after the last block (timm classifiers have one)
    interpolate_mode: str = "bilinear"  # pos_embed resizing

    def __post_init__(self) -> None:
        size = (self.img_size, self.img_size) if isinstance(self.img_size, int) else tuple(self.img_size)
        if len(size) != 2:
            raise ValueError(f"ViTConfig.img_size needs (height, width), got {self.img_size}")
        self.img_size = (int(size[0]), int(size[1]))
        if self.patch_size < 1 or min(self.img_size) < self.patch_size:
            raise ValueError(f"ViTConfig: img_size {self.img_size} must hold at least one {self.patch_size}-pixel "
                             f"patch per side")
        if self.embed_dim % self.num_heads:
            raise ValueError(f"ViTConfig: embed_dim {self.embed_dim} is not divisible by {self.num_heads} heads")
        indices = (self.depth - 1,) if self.out_indices is None else tuple(int(i) for i in self.out_indices)
        if not indices or any(not 0 <= i < self.depth for i in indices) or list(indices) != sorted(set(indices)):
            raise ValueError(f"ViTConfig.out_indices {indices} must be increasing block indices in [0, {self.depth})")
        self.out_indices = indices
        if self.interpolate_mode not in INTERPOLATE_MODES:
            raise ValueError(f"ViTConfig.interpolate_mode must be one of {INTERPOLATE_MODES}, "
                             f"got {self.interpolate_mode!r}")

    @property
    def grid(self) -> tuple[int, int]:
        """The token grid of the stored positional embedding."""
        return self.img_size[0] // self.patch_size, self.img_size[1] // self.patch_size


def resize_pos_embed(pos_embed: torch.Tensor, new_grid: tuple[int, int], old_grid: tuple[int, int],
                     mode: str = "bilinear") -> torch.Tensor:
    """(1, 1 + h*w, C) -> (1, 1 + H*W, C): the grid part resized by interpolation, the class entry kept."""
    if tuple(new_grid) == tuple(old_grid):
        return pos_embed
    if pos_embed.shape[1] != 1 + old_grid[0] * old_grid[1]:
        raise ValueError(f"pos_embed has {pos_embed.shape[1]} entries, expected 1 + {old_grid[0]}x{old_grid[1]}")
    cls_pos, grid = pos_embed[:, :1], pos_embed[:, 1:]
    grid = grid.reshape(1, old_grid[0], old_grid[1], -1).permute(0, 3, 1, 2)
    align = False if mode in ("bilinear", "bicubic") else None
    grid = F.interpolate(grid, size=tuple(new_grid), mode=mode, align_corners=align)
    return torch.cat([cls_pos, grid.flatten(2).transpose(1, 2)], dim=1)


def square_grid(num_positions: int) -> tuple[int, int]:
    """The (g, g) grid of a pos_embed with 1 + g*g entries (the layout of every published ViT)."""
    side = math.isqrt(num_positions - 1)
    if side * side != num_positions - 1:
        raise ValueError(f"pos_embed with {num_positions} entries is not 1 + a square grid; give img_size explicitly")
    return side, side


class PatchEmbed(nn.Module):
    """Non-overlapping patches by a strided conv; the image is zero-padded at the bottom/right to whole patches."""

    def __init__(self, in_channels: int, dim: int, patch_size: int, bias: bool):
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(in_channels, dim, patch_size, patch_size, bias=bias)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, int, int]:
        p = self.patch_size
        pad_h, pad_w = -x.shape[-2] % p, -x.shape[-1] % p
        if pad_h or pad_w:
            x = F.pad(x, (0, pad_w, 0, pad_h))
        x = self.proj(x)
        height, width = x.shape[-2:]
        return x.flatten(2).transpose(1, 2), height, width


class Attention(nn.Module):
    """Multi-head self-attention with one fused qkv projection (rows q, k, v)."""

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool, attn_drop: float = 0.0, proj_drop: float = 0.0):
        super().__init__()
        self.num_heads = num_heads
        self.attn_drop = attn_drop
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v, dropout_p=self.attn_drop if self.training else 0.0)
        return self.proj_drop(self.proj(out.transpose(1, 2).reshape(b, n, c)))


class Mlp(nn.Module):
    """Linear C->rC, exact GELU, Linear rC->C."""

    def __init__(self, dim: int, hidden_dim: int, drop: float = 0.0):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_dim, dim)
        self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(LN(x)), then x + mlp(LN(x))."""

    def __init__(self, config: ViTConfig, drop_path: float):
        super().__init__()
        dim = config.embed_dim
        self.norm1 = nn.LayerNorm(dim, eps=config.eps)
        self.attn = Attention(dim, config.num_heads, config.qkv_bias, config.attn_drop_rate, config.drop_rate)
        self.drop_path = DropPath(drop_path)
        self.norm2 = nn.LayerNorm(dim, eps=config.eps)
        self.mlp = Mlp(dim, int(dim * config.mlp_ratio), config.drop_rate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class VisionTransformer(nn.Module):
    """ViT encoder: returns one (B, C, H/p, W/p) map per entry of `config.out_indices` (class token removed)."""

    def __init__(self, config: ViTConfig | None = None):
        super().__init__()
        self.config = config = config or ViTConfig()
        dim = config.embed_dim
        self.patch_embed = PatchEmbed(config.in_channels, dim, config.patch_size, config.patch_bias)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        grid = config.grid
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + grid[0] * grid[1], dim))
        self.pos_drop = nn.Dropout(config.drop_rate)
        rates = [config.drop_path_rate * i / max(config.depth - 1, 1) for i in range(config.depth)]
        self.blocks = nn.ModuleList(Block(config, rate) for rate in rates)
        self.norm = nn.LayerNorm(dim, eps=config.eps) if config.final_norm else None
        if not config.with_cls_token:
            # Kept for checkpoint compatibility but unused: no gradient, so DDP needs no unused-parameter search.
            self.cls_token.requires_grad_(False)
        self.reset_parameters()

    @property
    def out_channels(self) -> tuple[int, ...]:
        return (self.config.embed_dim,) * len(self.config.out_indices)

    def reset_parameters(self) -> None:
        """Init as timm's / mmseg's ViT: trunc-normal 0.02 for pos_embed, cls_token and Linear weights. Skipped on
        the meta device (a ViT built there is filled from a checkpoint; meta random inits cost seconds)."""
        if self.pos_embed.is_meta:
            return
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        for m in self.modules():
            if not init_linear_or_norm(m) and isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def _check_input(self, x: torch.Tensor) -> None:
        c, p = self.config.in_channels, self.config.patch_size
        if x.ndim != 4 or x.shape[1] != c:
            raise ValueError(f"VisionTransformer expects pixel values of shape (B, {c}, H, W), got {tuple(x.shape)}")
        if x.shape[-2] < p or x.shape[-1] < p:
            raise ValueError(f"VisionTransformer: image {tuple(x.shape[-2:])} is smaller than one {p}x{p} patch; "
                             f"inputs need H, W >= {p}")

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        self._check_input(x)
        x, height, width = self.patch_embed(x)
        pos = resize_pos_embed(self.pos_embed, (height, width), self.config.grid, self.config.interpolate_mode)
        if self.config.with_cls_token:
            x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + pos
        else:  # the class token and its position would be dropped right away: skip them
            x = x + pos[:, 1:]
        x = self.pos_drop(x)
        skip = 1 if self.config.with_cls_token else 0
        features = []
        last = len(self.blocks) - 1
        for i, block in enumerate(self.blocks):
            x = block(x)
            if i == last and self.norm is not None:
                x = self.norm(x)
            if i in self.config.out_indices:  # (B, C, h, w) as a channels-last view of the tokens, no copy
                features.append(x[:, skip:].unflatten(1, (height, width)).permute(0, 3, 1, 2))
        return features

    def no_weight_decay(self) -> set[str]:
        """Parameter names timm keeps out of weight decay: position/class embeddings."""
        return {"pos_embed", "cls_token"}


__all__ = ["ViTConfig", "VisionTransformer", "PatchEmbed", "Attention", "Mlp", "Block", "resize_pos_embed",
           "square_grid"]
