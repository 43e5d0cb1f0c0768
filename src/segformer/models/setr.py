"""SETR = ViT encoder + a Naive, PUP or MLA decoder (+ auxiliary heads for training), from one dataclass config.

The presets reproduce MMSegmentation 1.2.2's SETR configs (`configs/setr/*`): ViT-L/16, LayerNorm eps 1e-6,
SyncBN as BatchNorm, no dropout, auxiliary losses weighted 0.4.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import ClassVar

import torch
from torch import nn

from .base import ModelConfig, SegmentationModel, split_overrides
from .setr_decoders import FCNHead, MLANeck, SETRMLAHead, SETRUPHead
from .vit import VisionTransformer, ViTConfig

DECODERS = ("naive", "pup", "mla")
DATASETS = {"ade20k": (512, 150), "cityscapes": (768, 19)}  # training crop, classes

@dataclass
class SETRConfig(ModelConfig):
    """Everything needed to rebuild a SETR; serialises to JSON via `to_dict` ("architecture": "setr").

    Naive/PUP: the decode head reads the last encoder output, aux head j the encoder output `aux_indices[j]`.
    MLA: all encoder outputs go through the MLA neck; aux head j (1x1 FCN) reads neck level `aux_indices[j]`.
    """

    architecture: ClassVar[str] = "setr"
    encoder: ViTConfig = field(default_factory=lambda: ViTConfig(out_indices=(9, 14, 19, 23)))
    decoder: str = "pup"  # "naive" | "pup" | "mla"
    num_classes: int = 150
    channels: int = 256  # UP heads: conv channels; MLA: neck channels
    num_convs: int = 4  # UP decode head: conv + upsample stages (naive 1, PUP 4)
    kernel_size: int = 3  # UP decode head conv kernel (naive 1, PUP 3)
    up_scale: int = 2  # upsampling per UP stage (naive 4, PUP 2); MLA head's upsampling (4)
    mla_channels: int = 128  # MLA head branch channels
    aux_indices: tuple[int, ...] = (0, 1, 2)  # () = no auxiliary heads
    aux_num_convs: int = 2  # UP auxiliary heads (naive/PUP only)
    aux_kernel_size: int = 3
    aux_up_scale: int = 4
    aux_weight: float = 0.4
    dropout: float = 0.0  # Dropout2d before every classifier (0 in all SETR configs)
    ln_eps: float = 1e-6  # the heads' and neck's LayerNorms
    bn_eps: float = 1e-5
    ignore_index: int = 255
    class_names: list[str] | None = None
    name: str | None = None  # zoo name, informational
    # How training scored it (scale, mode, window): the default of evaluate / predict / serve (protocol.py).
    test_pipeline: dict | None = None

    def __post_init__(self) -> None:
        self._check_common(ViTConfig, {"decoder": DECODERS})
        self._check_classes()
        self.aux_indices = tuple(int(i) for i in self.aux_indices)
        levels = len(self.encoder.out_indices)
        if any(not 0 <= i < levels for i in self.aux_indices):
            raise ValueError(f"SETRConfig.aux_indices {self.aux_indices} must index the {levels} encoder outputs "
                             f"(out_indices {self.encoder.out_indices})")


def default_out_indices(decoder: str, depth: int) -> tuple[int, ...]:
    """SETR's encoder taps: (9, 14, 19, 23) for Naive/PUP and (5, 11, 17, 23) for MLA on ViT-L's 24 blocks;
    the quarter points of other depths."""
    if depth == 24:
        return (5, 11, 17, 23) if decoder == "mla" else (9, 14, 19, 23)
    return tuple(sorted({max(depth * (i + 1) // 4 - 1, 0) for i in range(4)}))


def setr_config(decoder: str, dataset: str = "ade20k", **overrides) -> SETRConfig:
    """The SETRConfig of mmseg's `setr_vit-l_<decoder>_..._<dataset>` config; `overrides` may name SETRConfig
    or ViTConfig fields (e.g. depth=4, num_classes=19)."""
    if decoder not in DECODERS:
        raise ValueError(f"unknown SETR decoder {decoder!r}; accepted: {', '.join(DECODERS)}")
    if dataset not in DATASETS:
        raise ValueError(f"unknown SETR preset dataset {dataset!r}; accepted: {', '.join(DATASETS)}")
    enc, head_overrides = split_overrides(overrides, SETRConfig, ViTConfig, "unknown SETR argument(s)")
    size, classes = DATASETS[dataset]
    enc.setdefault("img_size", (size, size))
    enc.setdefault("with_cls_token", decoder != "mla")
    enc.setdefault("out_indices", default_out_indices(decoder, enc.get("depth", 24)))
    head: dict = dict(decoder=decoder, num_classes=classes)
    if decoder == "mla":
        head.update(up_scale=4, aux_indices=tuple(range(len(enc["out_indices"]))))
    else:
        head.update(num_convs=1 if decoder == "naive" else 4, kernel_size=1 if decoder == "naive" else 3,
                    up_scale=4 if decoder == "naive" else 2, aux_indices=tuple(range(len(enc["out_indices"]) - 1)),
                    aux_kernel_size=1 if decoder == "naive" else 3,
                    aux_num_convs=1 if (decoder, dataset) == ("naive", "cityscapes") else 2)
    head.update(head_overrides)
    return SETRConfig(encoder=ViTConfig(**enc), **head)


class SETR(SegmentationModel):
    """ViT encoder (+ MLA neck) + SETR decode head; `forward` returns the main head's logits:
    (B, K, ceil(H/4), ceil(W/4)) for Naive and MLA, (B, K, H, W) for PUP; `forward_aux` also the auxiliary
    heads'. `encoder`: an existing VisionTransformer with `config.encoder` to build the heads around."""

    config_class = SETRConfig
    config: SETRConfig

    def __init__(self, config: SETRConfig | None = None, encoder: VisionTransformer | None = None):
        super().__init__()
        self.config = config = config or SETRConfig()
        if encoder is not None and encoder.config != config.encoder:
            raise ValueError(f"SETR: the given encoder's config {encoder.config} differs from {config.encoder}")
        self.encoder = encoder if encoder is not None else VisionTransformer(config.encoder)
        self.neck = MLANeck(self.encoder.out_channels, config.channels, config.ln_eps, config.bn_eps) \
            if config.decoder == "mla" else None
        self.decode_head, self.aux_heads = _build_heads(config)

    def forward_features(self, pixel_values: torch.Tensor) -> list[torch.Tensor]:
        """The encoder's maps at `out_indices` (the MLA neck is part of the head).

        Inputs whose sides are not multiples of the patch are zero-padded at the bottom/right (as mmseg); the
        logits are cropped back to the unpadded extent (mmseg keeps the padded size and lets the final resize
        stretch it), so they stay aligned with the image."""
        return self.encoder(pixel_values)

    def forward_head(self, features: list[torch.Tensor], size: Sequence[int], aux: bool = False
                     ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """The main head's logits (and the auxiliary heads' if `aux`; SETR trains with both), cropped to `size`."""
        padded = [g * self.config.encoder.patch_size for g in features[0].shape[-2:]]
        features = self.neck(features) if self.neck is not None else features
        logits = _crop(self.decode_head(features if self.neck is not None else features[-1]), size, padded)
        if not aux:
            return logits, []
        extra = [head(features[i]) for i, head in zip(self.config.aux_indices, self.aux_heads, strict=True)]
        return logits, [_crop(a, size, padded) for a in extra]

    @property
    def aux_weight(self) -> float:
        return self.config.aux_weight

    def _new_heads(self) -> dict[str, nn.Module]:
        decode_head, aux_heads = _build_heads(self.config)
        return {"decode_head": decode_head, "aux_heads": aux_heads}


def _crop(logits: torch.Tensor, size: Sequence[int], padded: Sequence[int]) -> torch.Tensor:
    """The part of `logits` (computed on an input padded to `padded`) that covers the `size` input."""
    if tuple(size) == tuple(padded):
        return logits
    h, w = (math.ceil(n * out / p) for n, out, p in zip(size, logits.shape[-2:], padded, strict=True))
    return logits[..., :h, :w]


def _build_heads(config: SETRConfig) -> tuple[nn.Module, nn.ModuleList]:
    k, c = config.num_classes, config.channels
    if config.decoder == "mla":
        levels = len(config.encoder.out_indices)
        head = SETRMLAHead((c,) * levels, config.mla_channels, k, config.up_scale, config.dropout, config.bn_eps)
        aux = [FCNHead(c, k, config.dropout) for _ in config.aux_indices]
        return head, nn.ModuleList(aux)
    dim, eps = config.encoder.embed_dim, dict(ln_eps=config.ln_eps, bn_eps=config.bn_eps)
    head = SETRUPHead(dim, c, k, config.num_convs, config.kernel_size, config.up_scale, config.dropout, **eps)
    aux = [SETRUPHead(dim, c, k, config.aux_num_convs, config.aux_kernel_size, config.aux_up_scale, config.dropout,
                      **eps) for _ in config.aux_indices]
    return head, nn.ModuleList(aux)


__all__ = ["SETRConfig", "SETR", "setr_config", "default_out_indices", "DECODERS", "DATASETS"]
