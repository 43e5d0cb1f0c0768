"""Image preprocessing and post-processing for semantic segmentation, without torchvision.

Two conventions, one `ImageProcessor`:

* Hugging Face (the default): resize to a fixed 512x512 with Pillow's bilinear filter (aspect ignored),
  x / 255, ImageNet mean/std, channel-first. Bit-compatible with transformers' `SegformerImageProcessor`
  (PIL backend); label maps resize with Pillow's NEAREST and `reduce_labels` maps 0 -> 255, k -> k - 1.
* MMSegmentation (`ImageProcessor.mmseg()`): mmcv's keep-ratio `Resize(scale, keep_ratio=True)` and
  optionally mmseg's `ResizeToMultiple`, then (x - mean) / std on the 0..255 scale (SegDataPreProcessor).
  Output sizes follow mmcv's arithmetic exactly. mmcv resizes with OpenCV by default (`backend="cv2"`):
  OpenCV is not a dependency, so its INTER_LINEAR (half-pixel centres, no antialiasing) is reproduced in
  float with torch and rounded to uint8, which lands within 1 grey level of OpenCV's fixed-point result;
  its INTER_NEAREST (source = floor(dst * in / out)) is reproduced exactly. `backend="pillow"` is
  mmcv's Pillow backend and is exact.

Images become RGB the way Hugging Face's file loader, OpenCV and mmcv all do it: Pillow's
`convert("RGB")` (palette expanded, alpha dropped), for files and in-memory images alike (HF refuses
in-memory non-RGB images unless given `do_convert_rgb=True`, which composites alpha onto white instead).
16-bit grayscale is the exception: Pillow (and so HF) clips it at 255, so it is scaled by >> 8 instead, as
OpenCV's `imread` does. Files get their EXIF orientation applied, as HF's loader and OpenCV do.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps, UnidentifiedImageError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# The same statistics on the 0..255 scale, as written in mmseg's configs.
MMSEG_MEAN = (123.675, 116.28, 103.53)
MMSEG_STD = (58.395, 57.12, 57.375)
BACKENDS = ("pillow", "cv2")
MAX_PIXELS = 100_000_000  # predict's default image size limit (Pillow itself refuses above 178,956,970)

ImageLike = str | os.PathLike | Image.Image | np.ndarray
_SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")
_LABEL_MODES = ("L", "P", "1") + _SIXTEEN_BIT_MODES
_ACCEPTED_IMAGES = ("a file path, a PIL image, or a uint8 numpy array of shape (H, W, 3) (RGB) or (H, W) (gray)")
_ACCEPTED_LABELS = ("a file path, a single-channel PIL image (mode L, P, I or I;16), or an integer numpy "
                    "array of shape (H, W)")

__all__ = [
    "BACKENDS", "IMAGENET_MEAN", "IMAGENET_STD", "MMSEG_MEAN", "MMSEG_STD", "ImageProcessor",
    "keep_ratio_size", "multiple_size", "postprocess", "reduce_labels", "resize_image", "resize_label",
    "to_label_array", "to_rgb_array",
]


def check_pixels(width: int, height: int, max_pixels: int | None, source: object = "image") -> None:
    """Refuse an image of more than `max_pixels` pixels (None or 0: no limit) before it is decoded or segmented."""
    if max_pixels and width * height > max_pixels:
        raise ValueError(f"{source} is {width}x{height} = {width * height:,} pixels, above the limit of "
                         f"{max_pixels:,} (max_pixels, CLI --max-pixels; 0 = no limit); raise it if you mean it: "
                         f"decoding it alone takes {3 * width * height / 2**30:.1f} GiB")


@contextlib.contextmanager
def _pillow_limit(max_pixels: int | None):
    """With a limit of ours (or 0 = none), Pillow's own decompression-bomb check (warn above 89 MP, refuse above
    179 MP) steps aside; without one (None) it stays."""
    if max_pixels is None:
        yield
        return
    saved, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
    try:
        yield
    finally:
        Image.MAX_IMAGE_PIXELS = saved


def _open(path: str | os.PathLike, what: str, max_pixels: int | None = None) -> Image.Image:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} file not found: {path}")
    try:
        with _pillow_limit(max_pixels), Image.open(path) as im:
            check_pixels(*im.size, max_pixels, f"{what} file {path}")
            im.load()
            return im if what == "label" else ImageOps.exif_transpose(im)
    except (OSError, UnidentifiedImageError, ValueError) as exc:
        raise ValueError(f"cannot read {what} file {path}: {exc} (expected an image Pillow can open)") from exc


def to_rgb_array(image: ImageLike, max_pixels: int | None = None) -> np.ndarray:
    """Any accepted image input -> (H, W, 3) uint8 RGB array; more than `max_pixels` pixels are refused (for a
    file, from its header, before decoding)."""
    if isinstance(image, (str, os.PathLike)):
        image = _open(image, "image", max_pixels)
    if isinstance(image, Image.Image):
        check_pixels(*image.size, max_pixels)
        if image.mode in _SIXTEEN_BIT_MODES:
            gray = (np.clip(np.asarray(image, dtype=np.int64), 0, 65535) >> 8).astype(np.uint8)
            return np.repeat(gray[:, :, None], 3, axis=2)
        if image.mode == "F":
            raise ValueError("float (mode F) PIL images are not accepted: scale to 0..255 and convert to mode L")
        return np.asarray(image.convert("RGB"))
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8:
            raise ValueError(f"image array has dtype {image.dtype}; expected uint8 (0..255). Accepted: "
                             f"{_ACCEPTED_IMAGES}")
        if image.ndim in (2, 3):
            check_pixels(image.shape[1], image.shape[0], max_pixels)
        if image.ndim == 2:
            return np.repeat(image[:, :, None], 3, axis=2)
        if image.ndim == 3 and image.shape[2] == 3:
            return image
        raise ValueError(f"image array has shape {image.shape}; accepted: {_ACCEPTED_IMAGES}")
    raise TypeError(f"unsupported image type {type(image).__name__}; accepted: {_ACCEPTED_IMAGES}")


def to_label_array(label: ImageLike) -> np.ndarray:
    """Any accepted label-map input -> (H, W) int64 array of class ids."""
    if isinstance(label, (str, os.PathLike)):
        label = _open(label, "label")
    if isinstance(label, Image.Image):
        if label.mode not in _LABEL_MODES:
            raise ValueError(f"label map has PIL mode {label.mode}; accepted: {_ACCEPTED_LABELS}")
        label = np.asarray(label)
    if not isinstance(label, np.ndarray):
        raise TypeError(f"unsupported label type {type(label).__name__}; accepted: {_ACCEPTED_LABELS}")
    if label.ndim != 2 or not (np.issubdtype(label.dtype, np.integer) or label.dtype == np.bool_):
        raise ValueError(f"label array has shape {label.shape} and dtype {label.dtype}; accepted: {_ACCEPTED_LABELS}")
    label = label.astype(np.int64)
    if label.size and (label.min() < 0 or label.max() > np.iinfo(np.int32).max):
        raise ValueError(f"label values must lie in 0..2**31-1, got {label.min()}..{label.max()}")
    return label


def reduce_labels(label: np.ndarray, ignore_index: int = 255) -> np.ndarray:
    """Drop the background class: 0 -> ignore, k -> k - 1, ignore stays ignore (HF `do_reduce_labels`,
    mmseg `reduce_zero_label`)."""
    out = label - 1
    out[(label == 0) | (label == ignore_index)] = ignore_index
    return out


def keep_ratio_size(height: int, width: int, scale: tuple[int, int]) -> tuple[int, int]:
    """(new_h, new_w) of mmcv's keep-ratio resize into `scale` = (long, short) in either order.

    mmcv `rescale_size`: factor = min(long / max(h, w), short / min(h, w)); each side int(side * factor + 0.5).
    """
    factor = min(max(scale) / max(height, width), min(scale) / min(height, width))
    return int(height * factor + 0.5), int(width * factor + 0.5)


def multiple_size(height: int, width: int, divisor: int = 32) -> tuple[int, int]:
    """(new_h, new_w): each side rounded up to a multiple of `divisor` (mmseg `ResizeToMultiple`)."""
    return -(-height // divisor) * divisor, -(-width // divisor) * divisor


def _check_backend(backend: str) -> None:
    if backend not in BACKENDS:
        raise ValueError(f"unknown resize backend {backend!r}; accepted: {', '.join(BACKENDS)}")


def resize_image(rgb: np.ndarray, size: tuple[int, int], backend: str = "pillow") -> np.ndarray:
    """Bilinear resize of an (H, W, 3) uint8 image to `size` = (h, w); uint8 out.

    "pillow": Pillow's BILINEAR (antialiased when shrinking), as HF and mmcv's Pillow backend.
    "cv2": OpenCV's INTER_LINEAR geometry (half-pixel centres, 2 taps, no antialiasing) in float, rounded.
    """
    _check_backend(backend)
    h, w = size
    if backend == "pillow":
        return np.asarray(Image.fromarray(rgb).resize((w, h), resample=Image.Resampling.BILINEAR))
    t = torch.from_numpy(np.array(rgb)).permute(2, 0, 1)[None].float()  # a copy: PIL arrays are read-only
    t = F.interpolate(t, size=(h, w), mode="bilinear", align_corners=False, antialias=False)
    return t[0].round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0).numpy()


def resize_label(label: np.ndarray, size: tuple[int, int], backend: str = "pillow") -> np.ndarray:
    """Nearest-neighbour resize of an (H, W) int64 label map to `size` = (h, w).

    "pillow": Pillow's NEAREST (half-pixel centres), as HF. "cv2": OpenCV's INTER_NEAREST, source index
    floor(dst * in / out) computed in double as OpenCV does, as mmcv's default backend.
    """
    _check_backend(backend)
    h, w = size
    if backend == "pillow":
        im = Image.fromarray(label.astype(np.int32))  # mode "I": ids above 255 survive
        return np.asarray(im.resize((w, h), resample=Image.Resampling.NEAREST)).astype(np.int64)
    in_h, in_w = label.shape
    rows = np.minimum(np.floor(np.arange(h) * (1.0 / (h / in_h))).astype(np.int64), in_h - 1)
    cols = np.minimum(np.floor(np.arange(w) * (1.0 / (w / in_w))).astype(np.int64), in_w - 1)
    return label[rows[:, None], cols[None, :]]


@dataclass
class ImageProcessor:
    """Turn images (and label maps) into model inputs; defaults are Hugging Face's SegFormer processor.

    size: fixed output (h, w), aspect ignored; None to skip. keep_ratio_scale: mmcv keep-ratio bound
    (long, short) such as (2048, 512); exclusive with `size`. size_divisor: then round each side up to
    a multiple (mmseg ResizeToMultiple). backend: "pillow" or "cv2" (see `resize_image`).
    Pixels: float32(x * rescale_factor), then (x - mean) / std per channel.
    """

    size: tuple[int, int] | None = (512, 512)
    keep_ratio_scale: tuple[int, int] | None = None
    size_divisor: int | None = None
    backend: str = "pillow"
    rescale_factor: float = 1 / 255
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    reduce_labels: bool = False
    ignore_index: int = 255

    def __post_init__(self) -> None:
        _check_backend(self.backend)
        if self.size is not None and self.keep_ratio_scale is not None:
            raise ValueError("give either size (fixed resize) or keep_ratio_scale (keep-ratio resize), not both")
        for name in ("size", "keep_ratio_scale"):
            value = getattr(self, name)
            if value is not None and (len(value) != 2 or min(value) <= 0):
                raise ValueError(f"{name} must be two positive ints, got {value!r}")
        if self.size_divisor is not None and self.size_divisor <= 0:
            raise ValueError(f"size_divisor must be a positive int, got {self.size_divisor!r}")
        if len(self.mean) != 3 or len(self.std) != 3:
            raise ValueError(f"mean and std need 3 values (R, G, B), got {self.mean!r} and {self.std!r}")

    @classmethod
    def mmseg(cls, scale: tuple[int, int] | None = (2048, 512), size_divisor: int | None = None,
              reduce_labels: bool = False, backend: str = "cv2") -> ImageProcessor:
        """mmseg's test pipeline: keep-ratio Resize(scale) (None: keep the size), optional ResizeToMultiple,
        SegDataPreProcessor normalisation on 0..255."""
        return cls(size=None, keep_ratio_scale=scale, size_divisor=size_divisor, backend=backend,
                   rescale_factor=1.0, mean=MMSEG_MEAN, std=MMSEG_STD, reduce_labels=reduce_labels)

    def resize_steps(self, height: int, width: int) -> list[tuple[int, int]]:
        """The (h, w) sizes an image of this size is resized to, in order (the last is the output size).

        Like mmseg's `Resize` followed by `ResizeToMultiple`, rounding up to the divisor is a second resize
        of the already-resized image (with nearest labels, one direct resize would pick other pixels).
        Like HF and mmcv, a resize runs even when the size is unchanged (every backend then copies).
        """
        if self.size is not None:
            height, width = self.size
        elif self.keep_ratio_scale is not None:
            height, width = keep_ratio_size(height, width, self.keep_ratio_scale)
        steps = [(height, width)]
        if self.size_divisor is not None:
            steps.append(multiple_size(height, width, self.size_divisor))
        return steps

    def _pixels(self, rgb: np.ndarray) -> np.ndarray:
        for size in self.resize_steps(*rgb.shape[:2]):
            rgb = resize_image(rgb, size, self.backend)
        # Rescale in float64 then cast, as HF does, so results are bit-identical; exact when the factor is 1.
        x = (rgb.astype(np.float64) * self.rescale_factor).astype(np.float32).transpose(2, 0, 1)
        mean = np.asarray(self.mean, dtype=np.float32)[:, None, None]
        std = np.asarray(self.std, dtype=np.float32)[:, None, None]
        return (x - mean) / std

    def _label(self, label: np.ndarray) -> np.ndarray:
        if self.reduce_labels:
            label = reduce_labels(label, self.ignore_index)
        for size in self.resize_steps(*label.shape):
            label = resize_label(label, size, self.backend)
        return label

    def __call__(self, images: ImageLike | Sequence[ImageLike],
                 labels: ImageLike | Sequence[ImageLike] | None = None) -> dict:
        """Returns {"pixel_values": float32 (B, 3, H, W), "original_sizes": [(h, w), ...]} plus
        "labels": int64 (B, H, W) when label maps are given (one per image, same size as its image)."""
        image_list = list(images) if isinstance(images, (list, tuple)) else [images]
        if not image_list:
            raise ValueError("no images given")
        rgbs = [to_rgb_array(im) for im in image_list]
        pixels = [self._pixels(rgb) for rgb in rgbs]
        shapes = {p.shape for p in pixels}
        if len(shapes) > 1:
            raise ValueError(f"images resize to different sizes {sorted(s[1:] for s in shapes)} and cannot form one "
                             "batch; process them one at a time, or set a fixed `size`")
        out = {"pixel_values": torch.from_numpy(np.stack(pixels)),
               "original_sizes": [rgb.shape[:2] for rgb in rgbs]}
        if labels is not None:
            label_list = list(labels) if isinstance(labels, (list, tuple)) else [labels]
            if len(label_list) != len(image_list):
                raise ValueError(f"got {len(image_list)} images but {len(label_list)} label maps; give one per image")
            arrays = [to_label_array(lab) for lab in label_list]
            for i, (rgb, lab) in enumerate(zip(rgbs, arrays, strict=True)):
                if lab.shape != rgb.shape[:2]:
                    raise ValueError(f"label map {i} has size {lab.shape} but its image has {rgb.shape[:2]}")
            out["labels"] = torch.from_numpy(np.stack([self._label(lab) for lab in arrays]))
        return out


def _is_size(value) -> bool:
    return isinstance(value, (tuple, list, torch.Size)) and len(value) == 2 and all(
        isinstance(v, (int, np.integer)) for v in value)


@torch.no_grad()
def postprocess(logits: torch.Tensor, target_sizes=None) -> torch.Tensor | list[torch.Tensor]:
    """Logits (B, K, h, w) -> int64 label maps: bilinear upsampling (align_corners=False), then argmax.

    target_sizes: None (argmax at the logits' size) or one (H, W) for the whole batch -> (B, H, W) tensor;
    a list of B sizes (or a (B, 2) tensor) -> list of (H_i, W_i) tensors, as HF's
    `post_process_semantic_segmentation`.
    """
    if not isinstance(logits, torch.Tensor) or logits.ndim != 4:
        shape = tuple(logits.shape) if hasattr(logits, "shape") else type(logits).__name__
        raise ValueError(f"logits must be a (B, K, h, w) tensor, got {shape}")
    if target_sizes is None:
        return logits.argmax(dim=1)
    if isinstance(target_sizes, torch.Tensor):
        target_sizes = [tuple(s) for s in target_sizes.tolist()]
    if _is_size(target_sizes):
        return torch.stack(postprocess(logits, [tuple(target_sizes)] * len(logits)))
    sizes = list(target_sizes)
    if len(sizes) != len(logits) or not all(_is_size(s) for s in sizes):
        raise ValueError(f"target_sizes must be one (H, W) or a list of {len(logits)} (H, W) pairs, one per image; "
                         f"got {target_sizes!r}")
    return [F.interpolate(logits[i:i + 1], size=tuple(int(v) for v in s), mode="bilinear",
                          align_corners=False)[0].argmax(dim=0) for i, s in enumerate(sizes)]
