"""Mix Transformer (MiT) encoder of SegFormer (Xie et al., 2021).

Tokens are kept as (B, N, C) with N = H * W in row-major order, which is the memory layout of an
NHWC image. Every spatial op (patch embedding, sequence-reduction conv, Mix-FFN depthwise conv)
therefore sees a channels-last NCHW *view* of the tokens instead of a transposed copy.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .layers import DropPath, init_linear_or_norm


@dataclass
class MiTConfig:
    """Hyper-parameters of a Mix Transformer. Defaults are MiT-B0."""

    in_channels: int = 3
    embed_dims: tuple[int, ...] = (32, 64, 160, 256)
    depths: tuple[int, ...] = (2, 2, 2, 2)
    num_heads: tuple[int, ...] = (1, 2, 5, 8)
    sr_ratios: tuple[int, ...] = (8, 4, 2, 1)
    patch_sizes: tuple[int, ...] = (7, 3, 3, 3)
    strides: tuple[int, ...] = (4, 2, 2, 2)
    mlp_ratios: tuple[int, ...] = (4, 4, 4, 4)
    qkv_bias: bool = True
    drop_rate: float = 0.0
    attn_drop_rate: float = 0.0
    drop_path_rate: float = 0.1
    # LayerNorm eps differs between the references (HF 1e-5 everywhere; NVlabs 1e-6 in blocks and stage norms;
    # mmseg 1e-6 everywhere: `zoo.MIT_EPS`); each checkpoint format sets its own.
    # Defaults are HF's (1e-5 everywhere), so a model trained here exports to transformers exactly.
    block_eps: float = 1e-5  # norm1/norm2 in every block
    stage_eps: float = 1e-5  # the norm that ends each stage
    patch_embed_eps: float = 1e-5  # norm after each overlapping patch embedding
    sr_eps: float = 1e-5  # norm after the sequence-reduction conv
    # Positional information: "mixffn" (the paper's 3x3 depthwise conv inside the FFN) or "learned" (the paper's
    # ablation: a learned absolute embedding per stage for `pos_embed_size` inputs, bilinearly resized to other
    # sizes, and no depthwise conv).
    pos_embed: str = "mixffn"
    pos_embed_size: tuple[int, int] = (512, 512)

    def __post_init__(self) -> None:
        if self.pos_embed not in ("mixffn", "learned"):
            raise ValueError(f"MiTConfig.pos_embed must be 'mixffn' or 'learned', got {self.pos_embed!r}")
        self.pos_embed_size = tuple(int(v) for v in self.pos_embed_size)
        if len(self.pos_embed_size) != 2 or min(self.pos_embed_size) < 1:
            raise ValueError(f"MiTConfig.pos_embed_size must be (H, W) > 0, got {self.pos_embed_size}")
        for name in ("embed_dims", "depths", "num_heads", "sr_ratios", "patch_sizes", "strides", "mlp_ratios"):
            value = tuple(int(v) for v in getattr(self, name))
            if len(value) != 4:
                raise ValueError(f"MiTConfig.{name} needs 4 values (one per stage), got {value}")
            setattr(self, name, value)
        for dim, heads in zip(self.embed_dims, self.num_heads):
            if dim % heads:
                raise ValueError(f"MiTConfig: embed dim {dim} is not divisible by {heads} heads")


def tokens_to_nchw(x: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """(B, H*W, C) tokens -> (B, C, H, W) channels-last view (no copy)."""
    return x.view(x.shape[0], height, width, x.shape[-1]).permute(0, 3, 1, 2)


def nchw_to_tokens(x: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B, H*W, C); free when `x` is channels-last."""
    return x.permute(0, 2, 3, 1).reshape(x.shape[0], -1, x.shape[1])


class OverlapPatchEmbed(nn.Module):
    """Strided conv with kernel > stride (so patches overlap), then LayerNorm over channels."""

    def __init__(self, in_channels: int, dim: int, patch_size: int, stride: int, eps: float):
        super().__init__()
        self.proj = nn.Conv2d(in_channels, dim, patch_size, stride, padding=patch_size // 2)
        self.norm = nn.LayerNorm(dim, eps=eps)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, int, int]:
        x = self.proj(x)
        height, width = x.shape[-2:]
        return self.norm(nchw_to_tokens(x)), height, width


class EfficientSelfAttention(nn.Module):
    """Multi-head attention whose keys/values come from a sequence reduced by a strided conv."""

    def __init__(self, dim: int, num_heads: int, sr_ratio: int, qkv_bias: bool, sr_eps: float,
                 attn_drop: float = 0.0, proj_drop: float = 0.0):
        super().__init__()
        self.num_heads = num_heads
        self.sr_ratio = sr_ratio
        self.attn_drop = attn_drop
        self.q = nn.Linear(dim, dim, bias=qkv_bias)
        self.kv = nn.Linear(dim, 2 * dim, bias=qkv_bias)  # rows [0, dim) are k, as in NVlabs
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)
        if sr_ratio > 1:
            self.sr = nn.Conv2d(dim, dim, sr_ratio, sr_ratio)
            self.norm = nn.LayerNorm(dim, eps=sr_eps)
        # SegFormer++ token merging (token_merging.StageTokenMerging, a child module) plugs in here; None = off.
        self.token_merging: nn.Module | None = None

    def reduce(self, x: torch.Tensor, height: int, width: int) -> torch.Tensor:
        """The key/value sequence: x itself, or LN(Conv_sr(x)) when sr_ratio > 1."""
        if self.sr_ratio == 1:
            return x
        return self.norm(nchw_to_tokens(self.sr(tokens_to_nchw(x, height, width))))

    def attend(self, xq: torch.Tensor, xkv: torch.Tensor) -> torch.Tensor:
        """Attention of query tokens `xq` over key/value tokens `xkv` (both (B, N, C))."""
        b, n, c = xq.shape
        hd = c // self.num_heads
        q = self.q(xq).view(b, n, self.num_heads, hd).transpose(1, 2)
        k, v = self.kv(xkv).view(b, -1, 2, self.num_heads, hd).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v, dropout_p=self.attn_drop if self.training else 0.0)
        return self.proj_drop(self.proj(out.transpose(1, 2).reshape(b, n, c)))

    def forward(self, x: torch.Tensor, height: int, width: int) -> torch.Tensor:
        xkv = self.reduce(x, height, width)
        if self.token_merging is not None:
            return self.token_merging(self, x, xkv, height, width)
        return self.attend(x, xkv)


class MixFFN(nn.Module):
    """Linear C->rC, depthwise 3x3 conv (the only positional cue), GELU, Linear rC->C.

    `conv=False` drops the depthwise conv (a plain MLP, for the learned positional embedding variant)."""

    def __init__(self, dim: int, hidden_dim: int, drop: float = 0.0, conv: bool = True):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.dwconv = nn.Conv2d(hidden_dim, hidden_dim, 3, 1, 1, groups=hidden_dim) if conv else None
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_dim, dim)
        self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor, height: int, width: int) -> torch.Tensor:
        x = self.fc1(x)
        if self.dwconv is not None:
            x = nchw_to_tokens(self.dwconv(tokens_to_nchw(x, height, width)))
        return self.drop(self.fc2(self.drop(self.act(x))))


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(LN(x)), then x + MixFFN(LN(x))."""

    def __init__(self, dim: int, num_heads: int, sr_ratio: int, mlp_ratio: int, config: MiTConfig,
                 drop_path: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=config.block_eps)
        self.attn = EfficientSelfAttention(dim, num_heads, sr_ratio, config.qkv_bias, config.sr_eps,
                                           config.attn_drop_rate, config.drop_rate)
        self.drop_path = DropPath(drop_path)
        self.norm2 = nn.LayerNorm(dim, eps=config.block_eps)
        self.mlp = MixFFN(dim, dim * mlp_ratio, config.drop_rate, conv=config.pos_embed == "mixffn")

    def forward(self, x: torch.Tensor, height: int, width: int) -> torch.Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x), height, width))
        return x + self.drop_path(self.mlp(self.norm2(x), height, width))


class MiTStage(nn.Module):
    """Patch embedding, a stack of blocks, and the stage's closing LayerNorm."""

    def __init__(self, index: int, config: MiTConfig, drop_paths: list[float]):
        super().__init__()
        dim = config.embed_dims[index]
        in_channels = config.in_channels if index == 0 else config.embed_dims[index - 1]
        self.patch_embed = OverlapPatchEmbed(in_channels, dim, config.patch_sizes[index], config.strides[index],
                                             config.patch_embed_eps)
        self.blocks = nn.ModuleList(
            Block(dim, config.num_heads[index], config.sr_ratios[index], config.mlp_ratios[index], config, dp)
            for dp in drop_paths
        )
        self.norm = nn.LayerNorm(dim, eps=config.stage_eps)
        self.pos_embed = None
        if config.pos_embed == "learned":  # the stage's grid for a pos_embed_size input
            stride = math.prod(config.strides[:index + 1])
            grid = [math.ceil(s / stride) for s in config.pos_embed_size]
            self.pos_embed = nn.Parameter(nn.init.trunc_normal_(torch.zeros(1, dim, *grid), std=0.02))

    def add_pos_embed(self, x: torch.Tensor, height: int, width: int) -> torch.Tensor:
        """Tokens + the learned embedding, bilinearly resized when the grid differs from the trained one."""
        pos = self.pos_embed
        if pos.shape[-2:] != (height, width):
            pos = F.interpolate(pos, size=(height, width), mode="bilinear", align_corners=False)
        return x + nchw_to_tokens(pos).to(x.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, height, width = self.patch_embed(x)
        if self.pos_embed is not None:
            x = self.add_pos_embed(x, height, width)
        for block in self.blocks:
            x = block(x, height, width)
        return tokens_to_nchw(self.norm(x), height, width)


class MixTransformer(nn.Module):
    """The MiT encoder: four stages at strides 4, 8, 16, 32; returns one NCHW map per stage."""

    def __init__(self, config: MiTConfig | None = None):
        super().__init__()
        self.config = config = config or MiTConfig()
        total = sum(config.depths)
        rates = [config.drop_path_rate * i / max(total - 1, 1) for i in range(total)]
        starts = [sum(config.depths[:i]) for i in range(4)]
        self.stages = nn.ModuleList(
            MiTStage(i, config, rates[starts[i]:starts[i] + config.depths[i]]) for i in range(4)
        )
        self.apply(_init_weights)

    @property
    def out_channels(self) -> tuple[int, ...]:
        return self.config.embed_dims

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        if x.ndim != 4 or x.shape[1] != self.config.in_channels:
            raise ValueError(
                f"MixTransformer expects pixel values of shape (B, {self.config.in_channels}, H, W), "
                f"got {tuple(x.shape)}"
            )
        features = []
        for stage in self.stages:
            x = stage(x)
            features.append(x)
        return features

    def no_weight_decay(self) -> set[str]:
        """Parameter names the SegFormer recipe keeps out of weight decay (all norms, learned position embeddings)."""
        return {name for name, p in self.named_parameters()
                if (p.ndim == 1 and ".norm" in f".{name}") or name.endswith("pos_embed")}


def _init_weights(module: nn.Module) -> None:
    """Init as NVlabs/HF: trunc-normal 0.02 for Linear, fan-out normal for convs, LN to identity."""
    if not init_linear_or_norm(module) and isinstance(module, nn.Conv2d):
        fan_out = module.kernel_size[0] * module.kernel_size[1] * module.out_channels // module.groups
        nn.init.normal_(module.weight, 0.0, (2.0 / fan_out) ** 0.5)
        if module.bias is not None:
            nn.init.zeros_(module.bias)


MIT_VARIANTS: dict[str, dict] = {
    "b0": dict(embed_dims=(32, 64, 160, 256), depths=(2, 2, 2, 2)),
    "b1": dict(embed_dims=(64, 128, 320, 512), depths=(2, 2, 2, 2)),
    "b2": dict(embed_dims=(64, 128, 320, 512), depths=(3, 4, 6, 3)),
    "b3": dict(embed_dims=(64, 128, 320, 512), depths=(3, 4, 18, 3)),
    "b4": dict(embed_dims=(64, 128, 320, 512), depths=(3, 8, 27, 3)),
    "b5": dict(embed_dims=(64, 128, 320, 512), depths=(3, 6, 40, 3)),
}


def mit_config(variant: str, **overrides) -> MiTConfig:
    """The MiTConfig of a named variant ("b0" ... "b5") with field overrides."""
    if variant not in MIT_VARIANTS:
        raise ValueError(f"unknown MiT variant {variant!r}; accepted: {', '.join(MIT_VARIANTS)}")
    return MiTConfig(**{**MIT_VARIANTS[variant], **overrides})


__all__ = ["MiTConfig", "MixTransformer", "OverlapPatchEmbed", "EfficientSelfAttention", "MixFFN", "Block",
           "MiTStage", "mit_config", "MIT_VARIANTS"]
