"""Top-down pose pipelines with MMPose's defaults: the person box's window (center, scale x 1.25) is randomly
flipped, narrowed to a half body, shifted / scaled / rotated, then warped to the input size and encoded.

- RandomHalfBody (p 0.3, needs >= 9 labelled keypoints): upper body (p 0.7) or lower body, window 1.5 x their
  extent. RandomBBoxTransform: shift +-0.16 x scale (p 0.3), scale x 0.5..1.5 (always), rotation +-80 degrees
  (p 0.6), each a truncated normal on [-1, 1]. RandomFlip (p 0.5): mirror image and keypoints, swap left/right.
- Images are warped bilinearly (zero outside), normalised with ImageNet's mean / std, returned CHW float32.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from .keypoints import KeypointMeta, PersonInstance
from .pose_codec import HeatmapCodec, apply_affine, box_to_center_scale, fix_aspect_ratio, invert_affine, warp_matrix

MEAN = np.array([123.675, 116.28, 103.53], dtype=np.float32)
STD = np.array([58.395, 57.12, 57.375], dtype=np.float32)


def warp_image(image: np.ndarray, matrix: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """`image` (H, W, 3) uint8 through the 2x3 `matrix` to (size[1], size[0], 3), bilinear, as cv2.warpAffine
    (pixel centres at integer coordinates; PIL's sit at +0.5, hence the half-pixel terms)."""
    inv = invert_affine(matrix)
    lin = inv[:, :2]
    shift = inv[:, 2] + 0.5 - lin.sum(axis=1) * 0.5
    data = (lin[0, 0], lin[0, 1], shift[0], lin[1, 0], lin[1, 1], shift[1])
    return np.asarray(Image.fromarray(image).transform(tuple(size), Image.Transform.AFFINE, data,
                                                       resample=Image.Resampling.BILINEAR))


def normalise(crop: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(((crop.astype(np.float32) - MEAN) / STD).transpose(2, 0, 1).copy())


def crop_window(box: np.ndarray, input_size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """(center, scale) of the test-time window of a box: padding 1.25, widened to the input's aspect."""
    center, scale = box_to_center_scale(box)
    return center, fix_aspect_ratio(scale, input_size[0] / input_size[1])


def _truncnorm(rng: np.random.Generator, size: int) -> np.ndarray:
    """Standard normal truncated to [-1, 1] (rejection sampling)."""
    out = rng.standard_normal(size)
    while (bad := np.abs(out) > 1).any():
        out[bad] = rng.standard_normal(bad.sum())
    return out


class PoseTestTransform:
    """(image, instance) -> (normalised crop, center, scale): the window of the ground-truth box."""

    def __init__(self, input_size: tuple[int, int]):
        self.input_size = tuple(input_size)

    def __call__(self, image: np.ndarray, box: np.ndarray) -> tuple[torch.Tensor, np.ndarray, np.ndarray]:
        center, scale = crop_window(box, self.input_size)
        crop = warp_image(image, warp_matrix(center, scale, 0.0, self.input_size), self.input_size)
        return normalise(crop), center, scale


class PoseTrainTransform:
    """(image, instance, rng) -> (crop (3, h, w), (heatmaps (K, h/4, w/4), weights (K,))), MMPose's pipeline."""

    def __init__(self, input_size: tuple[int, int], meta: KeypointMeta, sigma: float = 2.0, flip_prob: float = 0.5,
                 half_body_prob: float = 0.3, shift: tuple[float, float] = (0.16, 0.3),
                 scale_range: tuple[float, float] = (0.5, 1.5), rotate: tuple[float, float] = (80.0, 0.6)):
        self.input_size, self.meta = tuple(input_size), meta
        self.codec = HeatmapCodec(self.input_size, sigma=sigma)
        self.flip_prob, self.half_body_prob = flip_prob, half_body_prob
        self.shift, self.scale_range, self.rotate = shift, scale_range, rotate

    def _half_body(self, inst: PersonInstance, rng: np.random.Generator):
        labelled = inst.visible > 0
        if labelled.sum() < 9 or rng.random() > self.half_body_prob:
            return None
        upper = [i for i in self.meta.upper_body if labelled[i]]
        lower = [i for i in range(len(labelled)) if i not in self.meta.upper_body and labelled[i]]
        prefer_upper = rng.random() < 0.7
        if len(upper) < 2 and len(lower) < 3:
            return None
        ids = upper if len(lower) < 3 or (len(upper) >= 2 and prefer_upper) else lower
        pts = inst.keypoints[ids]
        return pts.mean(axis=0), (pts.max(axis=0) - pts.min(axis=0)) * 1.5

    def __call__(self, image: np.ndarray, inst: PersonInstance, rng: np.random.Generator):
        center, scale = box_to_center_scale(inst.box)
        half = self._half_body(inst, rng)
        if half is not None:
            center, scale = half
        draw = _truncnorm(rng, 4)
        if rng.random() < self.shift[1]:
            center = center + draw[:2] * self.shift[0] * scale
        low, high = self.scale_range
        scale = scale * (draw[2] * (high - low) / 2 + (high + low) / 2)
        rotation = draw[3] * self.rotate[0] if rng.random() < self.rotate[1] else 0.0
        scale = fix_aspect_ratio(scale, self.input_size[0] / self.input_size[1])
        matrix = warp_matrix(center, scale, rotation, self.input_size)
        crop = warp_image(image, matrix, self.input_size)
        keypoints = apply_affine(inst.keypoints, matrix).astype(np.float32)
        visible = inst.visible.copy()
        if rng.random() < self.flip_prob:
            crop = crop[:, ::-1]
            keypoints[:, 0] = self.input_size[0] - 1 - keypoints[:, 0]
            keypoints, visible = keypoints[self.meta.flip_indices], visible[self.meta.flip_indices]
        heatmaps, weights = self.codec.encode(keypoints, visible)
        return normalise(crop), (torch.from_numpy(heatmaps), torch.from_numpy(weights))
