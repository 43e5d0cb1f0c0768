"""`predict`: images (paths, PIL images or uint8 arrays) in, label maps at each image's original size out, with the
model's recorded test pipeline, test-time augmentation and optional scores.

`predict(mode="slide")` without resizing, scales or flip argmaxes each finished region at once, so nothing of
size K x H x W ever exists: for an 8192 x 8192 image, 150 classes, crop 512 stride 341, the carry is 0.84 GB
where the full logits would be 40 GB; measured with B0 on CPU, the whole process peaks at 2.13 GiB RSS
(benchmarks/predict_memory.py, benchmarks/RESULTS.md). Label maps are resized to the original size class chunk by
class chunk (`labels.py`), for a 12000 x 12000 image see docs/reliability.md; only asking for `scores` makes a
(K, H, W) tensor. Images above `max_pixels` (100 MP by default) are refused before decoding. A resize, scales or
flip make `predict` hold the logits at the resized size, K x h x w.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch

from ..preprocess import MAX_PIXELS, ImageLike, ImageProcessor, multiple_size, resize_image, to_rgb_array
from ..protocol import DEFAULT_CROP, MODES, default_stride, predict_processor, resolve_window
from ..utils.dtypes import resolve_dtype
from .labels import argmax_at, label_dtype
from .tensor import Size, check_window, run_view, scaled_size, slide_blocks, tta_views, unflip, upsample


class _Normalizer:
    """uint8 RGB regions -> normalised tensors on a device, with `ImageProcessor`'s arithmetic exactly
    (float64 rescale cast to float32 on the CPU, where float64 always exists, then (x - mean) / std)."""

    def __init__(self, processor: ImageProcessor, device: torch.device):
        self.factor, self.device = processor.rescale_factor, device
        self.mean = torch.tensor(processor.mean, dtype=torch.float32, device=device).view(1, 3, 1, 1)
        self.std = torch.tensor(processor.std, dtype=torch.float32, device=device).view(1, 3, 1, 1)

    def __call__(self, rgb: np.ndarray) -> torch.Tensor:
        x = (np.asarray(rgb, dtype=np.float64) * self.factor).astype(np.float32)
        x = torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1))).to(self.device)[None]
        return (x - self.mean) / self.std


def _resize_steps(processor: ImageProcessor, height: int, width: int, scale: float) -> list[Size]:
    """The processor's resize steps, the first (fixed or keep-ratio) multiplied by a test-time `scale`."""
    steps = processor.resize_steps(height, width)
    if scale == 1.0:
        return steps
    first = scaled_size(*steps[0], scale)
    return [first] + ([multiple_size(*first, processor.size_divisor)] if processor.size_divisor else [])




@dataclass(frozen=True)
class PredictOptions:
    """How `predict` runs each image (see `predict` for the meaning of each field)."""

    mode: str = "whole"
    crop_size: Sequence[int] | None = None
    stride: Sequence[int] | None = None
    scales: tuple[float, ...] = (1.0,)
    flip: bool = False
    batch_size: int = 1
    dtype: str | torch.dtype | None = None
    scores: str | None = None  # None, "probs" or "logits"

    @property
    def window(self) -> dict:
        """The keyword arguments of `run_view` besides the mode."""
        return dict(crop_size=self.crop_size, stride=self.stride, batch_size=self.batch_size, dtype=self.dtype)


class Prediction(NamedTuple):
    """One image's label map (H, W) and, when asked for, its (K, H, W) float32 scores."""

    labels: np.ndarray
    scores: torch.Tensor | None = None


def _predict_one(model: torch.nn.Module, rgb: np.ndarray, processor: ImageProcessor, norm: _Normalizer,
                 options: PredictOptions) -> Prediction:
    height, width = rgb.shape[:2]
    unresized = all(step == (height, width) for step in processor.resize_steps(height, width))
    if options.mode == "slide" and options.scales == (1.0,) and not options.flip and unresized \
            and options.scores is None:
        return Prediction(_streamed_labels(model, rgb, norm, options))
    sources = []
    views = tta_views(rgb, options.scales, options.flip, lambda image, scale: _resized(image, processor, scale),
                      lambda image: image[:, ::-1])
    for view, flipped in views:
        # whole: HF resizes the native logits once, to the original size; mmseg's keep-ratio pipeline first to the
        # resized input's size (its whole inference), as `evaluate` scores. slide: logits at the resized size.
        native = options.mode == "whole" and processor.keep_ratio_scale is None
        logits = run_view(model, lambda a, b, c, d, v=view: norm(v[a:b, c:d]), view.shape[:2], options.mode,
                          native=native, **options.window)
        sources.append((logits, flipped))
    labels = argmax_at(sources, (height, width))[0].numpy().astype(label_dtype(sources[0][0].shape[1]), copy=False)
    return Prediction(labels, _scores(sources, (height, width), options.scores))


def _streamed_labels(model: torch.nn.Module, rgb: np.ndarray, norm: _Normalizer, options: PredictOptions
                     ) -> np.ndarray:
    """Sliding-window labels of an unresized image, each finished region argmaxed at once (never the full logits)."""
    height, width = rgb.shape[:2]
    labels = None
    for y0, y1, x0, x1, block in slide_blocks(model, lambda a, b, c, d: norm(rgb[a:b, c:d]), (height, width),
                                              options.crop_size, options.stride, batch_size=options.batch_size,
                                              dtype=options.dtype):
        if labels is None:
            labels = np.empty((height, width), label_dtype(block.shape[1]))
        labels[y0:y1, x0:x1] = block[0].argmax(0).cpu().numpy()
    return labels


def _resized(image: np.ndarray, processor: ImageProcessor, scale: float) -> np.ndarray:
    for size in _resize_steps(processor, *image.shape[:2], scale):
        image = resize_image(image, size, processor.backend) if size != image.shape[:2] else image
    return image


def _scores(sources: list[tuple[torch.Tensor, bool]], size: Size, kind: str | None) -> torch.Tensor | None:
    """The (K, H, W) scores asked for: the single run's logits, or the mean probabilities of all runs."""
    if kind is None:
        return None
    if kind == "logits":
        if len(sources) > 1:
            raise ValueError("scores='logits' is for a single run; multi-scale or flip averages probabilities: "
                             "ask scores='probs'")
        return upsample(sources[0][0], size)[0].cpu()
    probs = sum(unflip(upsample(lg, size), fl).softmax(1) for lg, fl in sources)
    return (probs / len(sources))[0].cpu()


def check_options(*, mode: str = "whole", crop_size: Sequence[int] = (512, 512), stride: Sequence[int] = (341, 341),
                  scales: Sequence[float] = (1.0,), batch_size: int = 1, dtype: str | torch.dtype | None = None,
                  scores: str | None = None) -> None:
    """Raise a ValueError naming the first bad `predict` option (callers check once, before a batch)."""
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; accepted: {', '.join(MODES)}")
    if scores not in (None, "probs", "logits"):
        raise ValueError(f"scores must be None, 'probs' or 'logits', got {scores!r}")
    if not scales or min(scales) <= 0:
        raise ValueError(f"scales must be positive numbers, got {scales!r}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if mode == "slide":
        check_window(crop_size, stride)
    resolve_dtype(dtype)


def predict(model: torch.nn.Module, images: ImageLike | Sequence[ImageLike], *, mode: str | None = None,
            processor: ImageProcessor | None = None, crop_size: Sequence[int] | None = None,
            stride: Sequence[int] | None = None, scales: Sequence[float] = (1.0,), flip: bool = False,
            device: str | torch.device | None = None, dtype: str | torch.dtype | None = None, batch_size: int = 1,
            scores: str | None = None, max_pixels: int | None = MAX_PIXELS):
    """Segment images with any model that returns logits; label maps come back at each image's original size.

    images: a path, PIL image or (H, W, 3) uint8 array, or a list of them (then a list is returned).
    Unset mode / processor / crop_size / stride come from the test pipeline recorded with the model (training
    records it; see `protocol.py`), else: "whole", `ImageProcessor()` (HF: fixed 512 x 512) in whole mode and
    no resize in slide mode, a 512 x 512 window, a stride of 2/3 the window.
    processor: resize + normalisation. Use `ImageProcessor(size=None)` for no resize,
      `ImageProcessor.mmseg(scale, size_divisor=32)` for mmseg's keep-ratio resize (+ resize to a multiple of 32).
    mode: "whole" (logits resized straight to the original size, as HF's post-processing) or "slide"
      (`crop_size` / `stride` windows on the resized image, then resized to the original size, as mmseg).
    scales, flip: test-time augmentation; each scale multiplies the processor's output size, and the
      softmax probabilities of all runs are averaged.
    device: where the model runs (it is moved there); default: where its parameters are.
    dtype: "float32", "bfloat16" or "float16" (autocast). batch_size: windows per forward pass in slide mode.
    scores: None, "probs" or "logits": also return (K, H, W) float32 scores, as (labels, scores).
    max_pixels: refuse larger images (ValueError; a file is checked from its header); None or 0: no limit.

    Labels are uint8 arrays for up to 256 classes, uint16 up to 65536, int32 beyond. The model is put in eval
    mode for the call and its training flag restored afterwards.
    """
    mode, crop_size, stride = resolve_window(model, mode, crop_size, stride)
    options = PredictOptions(mode, crop_size, stride, tuple(scales), flip, batch_size, dtype, scores)
    check_options(mode=mode, crop_size=crop_size or DEFAULT_CROP, stride=stride or default_stride(DEFAULT_CROP),
                  scales=scales, batch_size=batch_size, dtype=dtype, scores=scores)
    processor = predict_processor(model, mode) if processor is None else processor
    if device is not None:
        model.to(device)
    param = next(model.parameters(), None)
    norm = _Normalizer(processor, param.device if param is not None else torch.device(device or "cpu"))
    single = not isinstance(images, (list, tuple))
    was_training = model.training
    model.eval()
    try:
        results = [_predict_one(model, to_rgb_array(image, max_pixels), processor, norm, options)
                   for image in ([images] if single else images)]
    finally:
        model.train(was_training)
    results = [r.labels if scores is None else (r.labels, r.scores) for r in results]
    return results[0] if single else results
