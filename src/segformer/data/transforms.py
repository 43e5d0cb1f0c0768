"""The mmseg training and test pipelines, in numpy (resizing and normalisation from `segformer.preprocess`).

Training (mmseg's SegFormer/SETR recipes): RandomResize(scale, ratio 0.5-2.0, keep ratio) ->
RandomCrop(crop, cat_max_ratio 0.75, 10 tries) -> flip p 0.5 -> PhotoMetricDistortion -> normalise ->
pad to the crop (image 0 after normalising, label 255). Test: keep-ratio Resize to `scale` -> normalise;
the label stays at its original size (the metric is computed there, as mmseg does).

Every random draw comes from a `numpy.random.Generator` handed in by the caller, so one seed per
sample makes a run repeat exactly whatever the number of workers (see `TransformedDataset`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ..preprocess import MMSEG_MEAN, MMSEG_STD, ImageProcessor, keep_ratio_size, resize_image, resize_label


def random_resize_size(height: int, width: int, scale: tuple[int, int], ratio_range: tuple[float, float],
                       rng: np.random.Generator) -> tuple[int, int]:
    """(new_h, new_w) of mmcv's RandomResize(scale, ratio_range, keep_ratio=True): the bound is
    (int(scale[0] * r), int(scale[1] * r)) for r ~ U(ratio_range), then mmcv's keep-ratio arithmetic."""
    lo, hi = ratio_range
    ratio = rng.random() * (hi - lo) + lo
    return keep_ratio_size(height, width, (int(scale[0] * ratio), int(scale[1] * ratio)))


def random_resize(image: np.ndarray, label: np.ndarray, scale: tuple[int, int], ratio_range: tuple[float, float],
                  rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Resize image (bilinear) and label (nearest) to `random_resize_size`."""
    size = random_resize_size(image.shape[0], image.shape[1], scale, ratio_range, rng)
    # Bilinear as mmcv's default OpenCV backend; labels nearest with half-pixel centres (Pillow's NEAREST),
    # the same geometry as the bilinear image resize (OpenCV's INTER_NEAREST floors dst * in / out instead).
    return resize_image(image, size, backend="cv2"), resize_label(label, size, backend="pillow")


def crop_box(label: np.ndarray, crop_size: tuple[int, int], cat_max_ratio: float, ignore_index: int,
             rng: np.random.Generator) -> tuple[int, int, int, int]:
    """mmseg RandomCrop's box (y1, y2, x1, x2) for `crop_size` = (h, w).

    With `cat_max_ratio` < 1, up to 10 boxes are checked; the first whose most frequent (non-ignored)
    class covers less than `cat_max_ratio` of its labelled pixels, with at least two classes, wins;
    if none does, one more box is drawn and kept unchecked (mmseg's behaviour).
    """

    def draw() -> tuple[int, int, int, int]:
        margin_h = max(label.shape[0] - crop_size[0], 0)
        margin_w = max(label.shape[1] - crop_size[1], 0)
        y = int(rng.integers(0, margin_h + 1))
        x = int(rng.integers(0, margin_w + 1))
        return y, y + crop_size[0], x, x + crop_size[1]

    box = draw()
    if cat_max_ratio < 1.0:
        for _ in range(10):
            y1, y2, x1, x2 = box
            classes, counts = np.unique(label[y1:y2, x1:x2], return_counts=True)
            counts = counts[classes != ignore_index]
            if len(counts) > 1 and counts.max() / counts.sum() < cat_max_ratio:
                break
            box = draw()
    return box


def random_crop(image: np.ndarray, label: np.ndarray, crop_size: tuple[int, int], cat_max_ratio: float,
                ignore_index: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Crop image and label to at most `crop_size` = (h, w) at a box from `crop_box`."""
    y1, y2, x1, x2 = crop_box(label, crop_size, cat_max_ratio, ignore_index, rng)
    return image[y1:y2, x1:x2], label[y1:y2, x1:x2]


def random_flip(image: np.ndarray, label: np.ndarray, prob: float,
                rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Horizontal flip of both with probability `prob`."""
    if rng.random() < prob:
        return image[:, ::-1], label[:, ::-1]
    return image, label


def _affine_uint8(image: np.ndarray, alpha: float = 1.0, beta: float = 0.0) -> np.ndarray:
    # mmseg's PhotoMetricDistortion.convert: float32 affine, clip to 0..255, truncate to uint8.
    return np.clip(image.astype(np.float32) * alpha + beta, 0, 255).astype(np.uint8)


def adjust_brightness(image: np.ndarray, delta: float) -> np.ndarray:
    """Add `delta` to every channel (mmseg: delta ~ U(-32, 32))."""
    return _affine_uint8(image, beta=delta)


def adjust_contrast(image: np.ndarray, alpha: float) -> np.ndarray:
    """Multiply every channel by `alpha` (mmseg: alpha ~ U(0.5, 1.5); no mean subtraction)."""
    return _affine_uint8(image, alpha=alpha)


def rgb_to_hsv(image: np.ndarray) -> np.ndarray:
    """uint8 RGB -> float HSV with H in degrees [0, 360), S and V in [0, 1]."""
    rgb = image.astype(np.float32) / 255.0
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    v = rgb.max(axis=-1)
    delta = v - rgb.min(axis=-1)
    s = np.where(v > 0, delta / np.maximum(v, 1e-12), 0.0)
    safe = np.maximum(delta, 1e-12)
    h = np.where(v == r, (g - b) / safe % 6.0, np.where(v == g, (b - r) / safe + 2.0, (r - g) / safe + 4.0))
    h = np.where(delta > 0, h * 60.0, 0.0)
    return np.stack([h, s, v], axis=-1).astype(np.float32)


def hsv_to_rgb(hsv: np.ndarray) -> np.ndarray:
    """Inverse of `rgb_to_hsv`, rounded to uint8."""
    h, s, v = hsv[..., 0] % 360.0, hsv[..., 1], hsv[..., 2]
    c = v * s
    x = c * (1 - np.abs((h / 60.0) % 2 - 1))
    m = v - c
    sector = (h // 60).astype(np.int64) % 6
    zero = np.zeros_like(c)
    table = [(c, x, zero), (x, c, zero), (zero, c, x), (zero, x, c), (x, zero, c), (c, zero, x)]
    rgb = np.zeros(h.shape + (3,), np.float32)
    for k, channels in enumerate(table):
        sel = sector == k
        for i in range(3):
            rgb[..., i][sel] = channels[i][sel]
    return np.clip(np.rint((rgb + m[..., None]) * 255.0), 0, 255).astype(np.uint8)


def adjust_saturation(image: np.ndarray, alpha: float) -> np.ndarray:
    """Multiply HSV saturation by `alpha`, clipped to [0, 1] (mmseg: alpha ~ U(0.5, 1.5))."""
    hsv = rgb_to_hsv(image)
    hsv[..., 1] = np.clip(hsv[..., 1] * alpha, 0.0, 1.0)
    return hsv_to_rgb(hsv)


def adjust_hue(image: np.ndarray, delta: int) -> np.ndarray:
    """Shift hue by `delta` OpenCV hue units (2 degrees each; mmseg: delta integer in [-18, 18))."""
    hsv = rgb_to_hsv(image)
    hsv[..., 0] = (hsv[..., 0] + 2.0 * delta) % 360.0
    return hsv_to_rgb(hsv)


@dataclass
class PhotoMetricDistortion:
    """mmseg's PhotoMetricDistortion: brightness, then contrast first or last (50/50), saturation, hue;
    each applied with probability 0.5, each clipped to uint8."""

    brightness_delta: int = 32
    contrast_range: tuple[float, float] = (0.5, 1.5)
    saturation_range: tuple[float, float] = (0.5, 1.5)
    hue_delta: int = 18

    def __call__(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        if rng.integers(2):
            image = adjust_brightness(image, rng.uniform(-self.brightness_delta, self.brightness_delta))
        contrast_first = bool(rng.integers(2))
        if contrast_first and rng.integers(2):
            image = adjust_contrast(image, rng.uniform(*self.contrast_range))
        if rng.integers(2):
            image = adjust_saturation(image, rng.uniform(*self.saturation_range))
        if rng.integers(2):
            # numpy's randint(-d, d) as in mmseg: the upper bound is exclusive.
            image = adjust_hue(image, int(rng.integers(-self.hue_delta, self.hue_delta)))
        if not contrast_first and rng.integers(2):
            image = adjust_contrast(image, rng.uniform(*self.contrast_range))
        return image


def normalize(image: np.ndarray, mean: tuple[float, ...] = MMSEG_MEAN,
              std: tuple[float, ...] = MMSEG_STD) -> torch.Tensor:
    """(H, W, 3) uint8 RGB -> (3, H, W) float32, (x - mean) / std on the 0..255 scale."""
    t = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float()
    mean_t = torch.tensor(mean, dtype=torch.float32).view(-1, 1, 1)
    std_t = torch.tensor(std, dtype=torch.float32).view(-1, 1, 1)
    return (t - mean_t) / std_t


def pad_to(image: torch.Tensor, label: torch.Tensor, size: tuple[int, int],
           ignore_index: int = 255) -> tuple[torch.Tensor, torch.Tensor]:
    """Pad (3, H, W) image with 0 (after normalising) and (H, W) label with `ignore_index` to at least
    `size` = (h, w), at the bottom and right (mmseg's stack_batch)."""
    pad_h = max(size[0] - image.shape[-2], 0)
    pad_w = max(size[1] - image.shape[-1], 0)
    if pad_h or pad_w:
        image = F.pad(image, (0, pad_w, 0, pad_h), value=0.0)
        label = F.pad(label, (0, pad_w, 0, pad_h), value=ignore_index)
    return image, label


@dataclass
class TrainTransform:
    """The mmseg training pipeline; defaults are the SegFormer ADE20K 512 recipe.

    `scale` is the RandomResize bound (long, short) before the ratio; `crop_size` is (h, w).
    """

    crop_size: tuple[int, int] = (512, 512)
    scale: tuple[int, int] = (2048, 512)
    ratio_range: tuple[float, float] = (0.5, 2.0)
    cat_max_ratio: float = 0.75
    flip_prob: float = 0.5
    photometric: bool = True
    ignore_index: int = 255

    def __call__(self, image: np.ndarray, label: np.ndarray,
                 rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        image, label = random_resize(image, label, self.scale, self.ratio_range, rng)
        image, label = random_crop(image, label, self.crop_size, self.cat_max_ratio, self.ignore_index, rng)
        image, label = random_flip(image, label, self.flip_prob, rng)
        if self.photometric:
            image = PhotoMetricDistortion()(image, rng)
        label_t = torch.from_numpy(np.ascontiguousarray(label).astype(np.int64))
        return pad_to(normalize(image), label_t, self.crop_size, self.ignore_index)


@dataclass
class TestTransform:
    """The mmseg test pipeline: keep-ratio resize into `scale` (None keeps the size), normalise.

    The label is returned at its original size: predictions are resized back to it before scoring.
    """

    scale: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        self.processor = ImageProcessor.mmseg(scale=self.scale, backend="cv2")

    def __call__(self, image: np.ndarray, label: np.ndarray,
                 rng: np.random.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        pixels = self.processor(image)["pixel_values"][0]
        return pixels, torch.from_numpy(np.ascontiguousarray(label).astype(np.int64))
