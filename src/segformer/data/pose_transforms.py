"""Top-down pose pipelines with MMPose's defaults: the person box's window (center, scale x 1.25) is randomly
flipped, narrowed to a half body, shifted / scaled / rotated, then warped to the input size and encoded.

- RandomFlip (p 0.5): mirror image, box and keypoints (x -> W - 1 - x), swap left/right. RandomHalfBody (p 0.3,
  needs >= 9 labelled keypoints): upper body (p 0.7) or lower body, window 1.5 x their extent.
  RandomBBoxTransform: shift +-0.16 x scale (p 0.3), scale x 0.5..1.5 (always), rotation +-80 degrees (p 0.6),
  each a truncated normal on [-1, 1]. The mirror is folded into the crop's affine matrix (no full-image copy).
- Images are warped bilinearly (zero outside), normalised with ImageNet's mean / std, returned CHW float32.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from .keypoints import KeypointMeta, PersonInstance
from .pose_codec import HeatmapCodec, apply_affine, box_to_center_scale, fix_aspect_ratio, invert_affine, warp_matrix

MEAN = np.array([123.675, 116.28, 103.53], dtype=np.float32)
STD = np.array([58.395, 57.12, 57.375], dtype=np.float32)


def warp_image(image: np.ndarray, matrix: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """`image` (H, W, 3) uint8 through the 2x3 `matrix` to (size[1], size[0], 3), as cv2.warpAffine (bilinear,
    zero border, rounded): interpolated in float32 per channel, pixel centres at integer coordinates (PIL's sit at
    +0.5, hence the half-pixel terms), on the source region the output sees inside a one-pixel zero frame (so that
    samples within a pixel of the edge blend with black as cv2's do)."""
    inv = invert_affine(matrix)
    corners = apply_affine(np.array([[0, 0], [size[0] - 1, 0], [0, size[1] - 1], [size[0] - 1, size[1] - 1]]), inv)
    x0, y0 = np.clip(np.floor(corners.min(axis=0)).astype(int) - 1, 0, image.shape[1::-1])
    x1, y1 = np.clip(np.ceil(corners.max(axis=0)).astype(int) + 2, 0, image.shape[1::-1])
    region = np.pad(image[y0:y1, x0:x1], ((1, 1), (1, 1), (0, 0))).astype(np.float32)
    lin = inv[:, :2]
    shift = inv[:, 2] + 1.5 - lin.sum(axis=1) * 0.5 - (x0, y0)
    data = (lin[0, 0], lin[0, 1], shift[0], lin[1, 0], lin[1, 1], shift[1])
    channels = [np.asarray(Image.fromarray(region[..., c], mode="F").transform(
        tuple(size), Image.Transform.AFFINE, data, resample=Image.Resampling.BILINEAR)) for c in range(3)]
    return np.clip(np.rint(np.stack(channels, axis=-1)), 0, 255).astype(np.uint8)


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


@dataclass(frozen=True)
class AugmentDraws:
    """The random choices of one training sample, as MMPose's transforms make them: mirror the image
    (RandomFlip), narrow the window to a half body (RandomHalfBody passed its gates) and which half is
    preferred, then RandomBBoxTransform's draws: `shift` (x, y) as a fraction of the window's size (0 when its
    gate failed), the `scale` factor and the `rotation` in degrees (0 when its gate failed)."""

    flip: bool = False
    half_body: bool = False
    prefer_upper: bool = True
    shift: tuple[float, float] = (0.0, 0.0)
    scale: float = 1.0
    rotation: float = 0.0


class PoseTrainTransform:
    """(image, instance, rng) -> (crop (3, h, w), (heatmaps (K, h/4, w/4), weights (K,))), MMPose's pipeline:
    GetBBoxCenterScale, RandomFlip, RandomHalfBody, RandomBBoxTransform, TopdownAffine, GenerateTarget. `draw`
    makes the random choices, `window` applies given ones (so they can be injected, as the parity test does)."""

    def __init__(self, input_size: tuple[int, int], meta: KeypointMeta, sigma: float = 2.0, flip_prob: float = 0.5,
                 half_body_prob: float = 0.3, shift: tuple[float, float] = (0.16, 0.3),
                 scale_range: tuple[float, float] = (0.5, 1.5), rotate: tuple[float, float] = (80.0, 0.6)):
        self.input_size, self.meta = tuple(input_size), meta
        self.codec = HeatmapCodec(self.input_size, sigma=sigma)
        self.flip_prob, self.half_body_prob = flip_prob, half_body_prob
        self.shift, self.scale_range, self.rotate = shift, scale_range, rotate

    def draw(self, inst: PersonInstance, rng: np.random.Generator) -> AugmentDraws:
        """Random choices in MMPose's order, with its gates (half body: >= 9 labelled keypoints, p 0.3, upper
        half preferred with p 0.7; each box draw a standard normal truncated to [-1, 1])."""
        flip = rng.random() < self.flip_prob
        half_body = (inst.visible > 0).sum() >= 9 and rng.random() <= self.half_body_prob
        prefer_upper = half_body and rng.random() < 0.7
        draw = _truncnorm(rng, 4)
        shift = draw[:2] * self.shift[0] if rng.random() < self.shift[1] else np.zeros(2)
        low, high = self.scale_range
        rotation = draw[3] * self.rotate[0] if rng.random() < self.rotate[1] else 0.0
        return AugmentDraws(bool(flip), bool(half_body), bool(prefer_upper), (float(shift[0]), float(shift[1])),
                            float(draw[2] * (high - low) / 2 + (high + low) / 2), float(rotation))

    def _half_body_ids(self, visible: np.ndarray, prefer_upper: bool) -> list[int] | None:
        labelled = visible > 0
        upper = [i for i in self.meta.upper_body if labelled[i]]
        lower = [i for i in range(len(labelled)) if i not in self.meta.upper_body and labelled[i]]
        if len(upper) < 2 and len(lower) < 3:
            return None
        return upper if len(lower) < 3 or (len(upper) >= 2 and prefer_upper) else lower

    def window(self, inst: PersonInstance, image_width: int, draws: AugmentDraws
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(matrix taking the ORIGINAL image to the crop, keypoints (K, 2) in crop pixels, labelled flags (K,)).
        A flip mirrors the image (x -> W - 1 - x), keypoints and box center and swaps left/right first."""
        keypoints, visible = inst.keypoints.astype(np.float32), inst.visible.astype(np.float32)
        center, scale = box_to_center_scale(inst.box)
        mirror = np.array([[-1.0, 0.0, image_width - 1.0], [0.0, 1.0, 0.0]])
        if draws.flip:
            keypoints, visible = keypoints[self.meta.flip_indices], visible[self.meta.flip_indices]
            keypoints[:, 0] = image_width - 1 - keypoints[:, 0]
            center = np.array([image_width - 1 - center[0], center[1]], dtype=np.float32)
        ids = self._half_body_ids(visible, draws.prefer_upper) if draws.half_body else None
        if ids is not None:
            center, scale = keypoints[ids].mean(axis=0), (keypoints[ids].max(axis=0) - keypoints[ids].min(axis=0)) * 1.5
        center = center + np.asarray(draws.shift, dtype=np.float32) * scale
        scale = fix_aspect_ratio(scale * np.float32(draws.scale), self.input_size[0] / self.input_size[1])
        matrix = warp_matrix(center, scale, draws.rotation, self.input_size)
        image_matrix = matrix @ np.vstack([mirror, [0, 0, 1]]) if draws.flip else matrix
        return image_matrix, apply_affine(keypoints, matrix).astype(np.float32), visible

    def __call__(self, image: np.ndarray, inst: PersonInstance, rng: np.random.Generator):
        matrix, keypoints, visible = self.window(inst, image.shape[1], self.draw(inst, rng))
        heatmaps, weights = self.codec.encode(keypoints, visible)
        crop = warp_image(image, matrix, self.input_size)
        return normalise(crop), (torch.from_numpy(heatmaps), torch.from_numpy(weights))
