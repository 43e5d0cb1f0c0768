"""SegFormer for top-down human pose (SegFormer++ paper, second task): a MiT encoder and a heatmap head.

The head of the reference (`SegformerHead` in its MMPose fork) is, layer for layer, MMSegmentation's SegFormer
decoder without dropout: per stage a 1x1 conv + BN + ReLU to 256 channels, bilinear to the stage-1 size, concat,
a 1x1 fusion conv + BN + ReLU, and a 1x1 conv with bias to K heatmaps at 1/4 of the input. So a pose model is a
`SegFormer` with `task="pose"`: the same encoder, token merging, save/load and export paths, with this head
(`MMSegMLPDecoder`, dropout 0), MMPose's init and the keypoint MSE loss below.
"""

from __future__ import annotations

import torch
from torch import nn

POSE_DECODER_DIM = 256  # the reference's `channels` for every MiT size
COCO_NUM_KEYPOINTS = 17


def init_pose_head(head: nn.Module) -> None:
    """MMPose's head init: every conv normal(0, 0.001) with zero bias, BatchNorm weight 1 and bias 0."""
    for m in head.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.normal_(m.weight, std=0.001)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def keypoint_mse_loss(heatmaps: torch.Tensor, target: torch.Tensor, weights: torch.Tensor | None = None
                      ) -> torch.Tensor:
    """MMPose's `KeypointMSELoss(use_target_weight=True)`: mean over B, K, H, W of the squared error, each
    keypoint's map scaled by its weight (B, K) (0 for unlabelled or out-of-crop keypoints)."""
    if heatmaps.shape != target.shape:
        raise ValueError(f"keypoint_mse_loss: heatmaps {tuple(heatmaps.shape)} and target {tuple(target.shape)} "
                         f"differ; the target is encoded at the model's output size (1/4 of the input)")
    error = (heatmaps.float() - target.float()).square()
    if weights is None:
        return error.mean()
    if weights.shape != target.shape[:2]:
        raise ValueError(f"keypoint_mse_loss: weights {tuple(weights.shape)} must be (B, K) = "
                         f"{tuple(target.shape[:2])}")
    return (error * weights.float()[:, :, None, None]).mean()
