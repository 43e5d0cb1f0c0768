"""SegFormer = MiT encoder + a head, built from one serialisable dataclass config."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from .base import ModelConfig, SegmentationModel
from .decoders import ClassificationHead, MLPDecoder, MMSegMLPDecoder, init_decoder
from .mit import MiTConfig, MixTransformer
from .pose import init_pose_head
from .token_merging import (
    HalfResolution,
    TokenMergingConfig,
    TokenMergingSpec,
    apply_token_merging,
    resolve_token_merging,
)

DECODER_STYLES = ("hf", "mmseg")
TASKS = ("segmentation", "classification", "pose")


@dataclass
class SegFormerConfig(ModelConfig):
    """Everything needed to rebuild a SegFormer; serialises to JSON via `to_dict`."""

    architecture: ClassVar[str] = "segformer"

    encoder: MiTConfig = field(default_factory=MiTConfig)
    num_classes: int = 150  # pose: the number of keypoints (heatmaps)
    task: str = "segmentation"  # "segmentation" | "classification" | "pose" (top-down keypoint heatmaps)
    decoder_style: str = "hf"  # "hf" (HF/NVlabs All-MLP) | "mmseg" (SegformerHead)
    decoder_dim: int = 256
    decoder_dropout: float = 0.1
    bn_eps: float = 1e-5
    ignore_index: int = 255
    class_names: list[str] | None = None  # pose: the keypoint names
    name: str | None = None  # zoo name, informational
    # SegFormer++ token merging applied at build time: a preset name or {"stages": [...], "downsample": bool}.
    token_merging: str | dict | None = None
    # How training scored it (scale, mode, window): the default of evaluate / predict / serve (protocol.py).
    test_pipeline: dict | None = None

    def __post_init__(self) -> None:
        self._check_common(MiTConfig, {"task": TASKS, "decoder_style": DECODER_STYLES})
        if self.task == "pose" and self.decoder_style != "mmseg":
            raise ValueError("SegFormerConfig: the pose head is the mmseg-style decoder; set decoder_style='mmseg'")
        self._check_classes()


class SegFormer(SegmentationModel):
    """MiT encoder + All-MLP decoder (or classifier). `forward` returns logits.

    Segmentation logits are (B, K, H/4, W/4), as in HF and mmseg; classification logits (B, K); pose: K keypoint
    heatmaps (B, K, H/4, W/4), as the SegFormer++ MMPose head (see `models.pose`).
    """

    config_class = SegFormerConfig
    config: SegFormerConfig

    def __init__(self, config: SegFormerConfig | None = None):
        super().__init__()
        self.config = config = config or SegFormerConfig()
        self.encoder = MixTransformer(config.encoder)
        self.decode_head = build_head(config)
        self.input_resize: nn.Module = nn.Identity()  # HalfResolution under the "downsample" strategy
        self.token_merging: TokenMergingConfig | None = None
        if config.token_merging is not None:
            self.set_token_merging(config.token_merging)

    def forward_features(self, pixel_values: torch.Tensor) -> list[torch.Tensor]:
        return self.encoder(self.input_resize(pixel_values))

    def forward_head(self, features: list[torch.Tensor], size: Sequence[int], aux: bool = False
                     ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        logits = self.decode_head(features)
        size = self._stage1_size(*size)
        if logits.ndim == 4 and tuple(logits.shape[-2:]) != size:  # a resized input: back to (H/4, W/4)
            logits = F.interpolate(logits, size=size, mode="bilinear", align_corners=False)
        return logits, []

    def set_token_merging(self, strategy: TokenMergingSpec) -> None:
        """Switch SegFormer++ token merging at run time, no retraining needed; None restores the exact model.

        strategy: a preset ("hq", "fast", "2x2", "downsample"), a YAML file, a list of 4 per-stage dicts
        or `StageMerging`s, a `TokenMergingConfig`, or None. Recorded in `config.token_merging`.
        """
        merging = resolve_token_merging(strategy)
        apply_token_merging(self.encoder, merging)
        self.input_resize = HalfResolution() if merging is not None and merging.downsample else nn.Identity()
        self.token_merging = merging
        value = merging.to_config_value() if merging is not None else None
        self.config = dataclasses.replace(self.config, token_merging=value)

    def _stage1_size(self, height: int, width: int) -> tuple[int, ...]:
        """The stage-1 feature size (= logit size) for an input of height x width."""
        conv = self.encoder.stages[0].patch_embed.proj
        geometry = zip((height, width), conv.kernel_size, conv.stride, conv.padding, strict=True)
        return tuple((size + 2 * p - k) // s + 1 for size, k, s, p in geometry)

    @property
    def task(self) -> str:
        return self.config.task

    def _new_heads(self) -> dict[str, nn.Module]:
        return {"decode_head": build_head(self.config)}


def build_head(config: SegFormerConfig) -> nn.Module:
    dims = config.encoder.embed_dims
    if config.task == "classification":
        head = ClassificationHead(dims[-1], config.num_classes)
    elif config.task == "pose":
        head = MMSegMLPDecoder(dims, config.decoder_dim, config.num_classes, config.decoder_dropout, config.bn_eps)
        init_pose_head(head)
        return head
    elif config.decoder_style == "hf":
        head = MLPDecoder(dims, config.decoder_dim, config.num_classes, config.decoder_dropout, config.bn_eps)
    else:
        head = MMSegMLPDecoder(dims, config.decoder_dim, config.num_classes, config.decoder_dropout, config.bn_eps)
    init_decoder(head)
    return head

