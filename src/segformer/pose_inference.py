"""Top-down pose inference: person boxes -> crops -> heatmaps (optionally with the flip test) -> keypoints in
image pixels, as MMPose's `TopdownPoseEstimator` with `MSRAHeatmap` (see `data.pose_codec`)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from .data.keypoints import KeypointMeta
from .data.pose_codec import HeatmapCodec, flip_heatmaps, input_to_image
from .data.pose_transforms import PoseTestTransform
from .models import SegmentationModel


@torch.no_grad()
def heatmaps_of(model: torch.nn.Module, crops: torch.Tensor, flip_indices: Sequence[int] | None = None
                ) -> torch.Tensor:
    """The model's heatmaps of normalised crops (B, 3, h, w); with `flip_indices`, averaged with those of the
    mirrored crops, mirrored back (shift_heatmap=True)."""
    heatmaps = model(crops)
    if flip_indices is not None:
        heatmaps = (heatmaps + flip_heatmaps(model(crops.flip(-1)), list(flip_indices), shift=True)) * 0.5
    return heatmaps.float()


def predict_batch(model: torch.nn.Module, images: Sequence[np.ndarray], boxes: np.ndarray,
                  input_size: tuple[int, int], flip_indices: Sequence[int] | None = None
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Keypoints (N, K, 2) in image pixels and scores (N, K) for person `boxes` (N, 4) x1, y1, x2, y2, one per
    entry of `images` (RGB uint8, H x W x 3); `input_size` (w, h) is the model's crop size."""
    transform = PoseTestTransform(input_size)
    device = next(model.parameters()).device
    crops, centers, scales = zip(*(transform(img, box) for img, box in zip(images, boxes)))
    heatmaps = heatmaps_of(model, torch.stack(crops).to(device), flip_indices).cpu().numpy()
    codec = HeatmapCodec(input_size, heatmap_size=(heatmaps.shape[-1], heatmaps.shape[-2]))
    keypoints, scores = codec.decode(heatmaps)
    return input_to_image(keypoints, np.stack(centers), np.stack(scales), input_size), scores


def predict_keypoints(model: torch.nn.Module, image: np.ndarray, boxes: np.ndarray | None = None, *,
                      input_size: tuple[int, int] = (288, 384), meta: KeypointMeta | None = None,
                      flip_test: bool = True, batch_size: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """Keypoints (N, K, 2) and scores (N, K) of the people in `boxes` (N, 4, x1 y1 x2 y2; the whole image when
    None) of one RGB image. The flip test needs left/right pairs: `meta` (COCO's by default)."""
    if boxes is None or len(boxes) == 0:
        boxes = np.array([[0, 0, image.shape[1] - 1, image.shape[0] - 1]], dtype=np.float32)
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    meta = meta or KeypointMeta()
    num = model.num_classes if isinstance(model, SegmentationModel) else len(meta.names)
    if flip_test and len(meta.names) != num:
        raise ValueError(f"the model predicts {num} keypoints but the keypoint meta names {len(meta.names)}; "
                         f"pass meta=KeypointMeta(names=...) or flip_test=False")
    flip = meta.flip_indices if flip_test else None
    parts = [predict_batch(model, [image] * len(chunk), chunk, input_size, flip)
             for chunk in np.array_split(boxes, max(1, -(-len(boxes) // batch_size)))]
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
