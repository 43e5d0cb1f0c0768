"""Inference on normalised tensors for any model that returns logits: whole image, sliding window (streamed in
finished regions), multi-scale + flip.

`whole(model, x)` and `slide(model, x, crop_size, stride)` return logits (B, K, H, W) at the size of `x`;
`multiscale(model, x, scales, flip, mode)` returns averaged probabilities. The sliding window follows
MMSegmentation's `slide_inference`: per axis `max(H - crop + stride - 1, 0) // stride + 1` windows, the last one
clamped to the edge, overlaps averaged by a count map.

Memory. The sliding window streams (`slide_blocks`; `slide` only assembles its output): windows run row by
row, and a region of the output is averaged and handed on as soon as no later window covers it. Besides the
model's activations and the K x crop_h x crop_w upsampled logits of one batch of windows, it holds
K x (crop_h - stride_h) x W float32 sums carried to the next row of windows, plus about
K x crop_h x (crop_w + stride_w) for the row in progress.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import TypeVar

import torch
import torch.nn.functional as F

from ..protocol import MODES
from ..utils.dtypes import resolve_dtype

Size = tuple[int, int]
# crop(y0, y1, x0, x1) -> normalised (B, 3, y1 - y0, x1 - x0) tensor on the compute device
CropFn = Callable[[int, int, int, int], torch.Tensor]
T = TypeVar("T")


def run_model(model: torch.nn.Module, x: torch.Tensor, dtype: str | torch.dtype | None = None) -> torch.Tensor:
    """float32 logits (B, K, h, w) of `model(x)` at the model's own resolution; outputs with a `.logits`
    attribute (transformers) or a tuple (logits first) are accepted too."""
    dtype = resolve_dtype(dtype)
    autocast = (torch.autocast(x.device.type, dtype=dtype) if dtype != torch.float32 else contextlib.nullcontext())
    with torch.inference_mode(), autocast:
        out = model(x)
    logits = getattr(out, "logits", out)
    if isinstance(logits, (tuple, list)):
        logits = logits[0]
    if not isinstance(logits, torch.Tensor) or logits.ndim != 4 or logits.shape[0] != x.shape[0]:
        shape = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise ValueError(f"the model must return logits of shape (B, K, h, w) for an input of shape {tuple(x.shape)};"
                         f" got {shape}")
    return logits.float()


def upsample(logits: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """`logits` resized bilinearly (align_corners=False) to `size`, unless already that size."""
    if tuple(logits.shape[-2:]) == tuple(size):
        return logits
    return F.interpolate(logits, size=tuple(size), mode="bilinear", align_corners=False)


def whole(model: torch.nn.Module, x: torch.Tensor, *, dtype: str | torch.dtype | None = None) -> torch.Tensor:
    """Logits (B, K, H, W) at the size of the normalised input `x`: one pass, bilinear upsampling."""
    return run_view(model, tensor_crop(x), tuple(x.shape[-2:]), "whole", dtype=dtype)


def window_starts(size: int, crop: int, stride: int) -> list[int]:
    """Start offsets of the sliding windows along one axis, as mmseg: the last window ends at the edge."""
    count = max(size - crop + stride - 1, 0) // stride + 1
    return [max(min(i * stride + crop, size) - crop, 0) for i in range(count)]


def check_window(crop_size: Sequence[int], stride: Sequence[int]) -> tuple[Size, Size]:
    """(crop, stride) as int pairs; a ValueError unless both are positive and the stride fits in the crop."""
    crop, step = tuple(int(v) for v in crop_size), tuple(int(v) for v in stride)
    if len(crop) != 2 or len(step) != 2 or min(crop + step) < 1:
        raise ValueError(f"crop_size and stride must be two positive ints (h, w), got {crop_size} and {stride}")
    if step[0] > crop[0] or step[1] > crop[1]:
        raise ValueError(f"stride {step} larger than crop_size {crop} would leave pixels no window covers")
    return crop, step


def slide_blocks(model: torch.nn.Module, crop: CropFn, size: Size, crop_size: Sequence[int], stride: Sequence[int],
                 *, batch_size: int = 1, dtype: str | torch.dtype | None = None
                 ) -> Iterator[tuple[int, int, int, int, torch.Tensor]]:
    """Sliding-window logits of an image of `size` (H, W), yielded as finished regions
    (y0, y1, x0, x1, averaged logits (B, K, y1 - y0, x1 - x0)) that together tile the image once.

    `batch_size` windows run per forward pass. Each output column strip [xs[j], xs[j+1]) keeps one accumulator
    for the rows not yet final; once window (i, j) is done, the strip's rows above window row i + 1 are final
    (windows further right start beyond the strip, windows further down below those rows): they are averaged,
    handed on and dropped. The sums per pixel are mmseg's up to the order of additions in the last two rows.
    """
    (crop_h, crop_w), (stride_h, stride_w) = check_window(crop_size, stride)
    height, width = size
    ys, xs = window_starts(height, crop_h, stride_h), window_starts(width, crop_w, stride_w)
    win_h, win_w = min(crop_h, height), min(crop_w, width)
    row_count, col_count = torch.zeros(height), torch.zeros(width)
    for y in ys:
        row_count[y:y + win_h] += 1
    for x in xs:
        col_count[x:x + win_w] += 1
    edges = xs + [width]  # strip j spans columns edges[j]:edges[j + 1]
    tops = [0] * len(xs)  # first row that strip j has not handed on yet
    acc: list[torch.Tensor | None] = [None] * len(xs)  # strip j's sums for rows tops[j]:tops[j] + len
    # mmseg's order (rows, then columns), except that the last two rows go column by column together: the last
    # row is clamped to the edge, so it can overlap the one before by up to crop_h - 1 rows, and carrying those
    # over a whole row would double the peak.
    rows, cols = range(len(ys)), range(len(xs))
    windows = [(i, j) for i in rows[:-2] for j in cols] + [(i, j) for j in cols for i in rows[-2:]]
    for start in range(0, len(windows), batch_size):
        batch = windows[start:start + batch_size]
        inputs = torch.cat([crop(ys[i], ys[i] + win_h, xs[j], xs[j] + win_w) for i, j in batch])
        logits = upsample(run_model(model, inputs, dtype), (win_h, win_w))
        images = logits.shape[0] // len(batch)
        for n, (i, j) in enumerate(batch):
            window = logits[n * images:(n + 1) * images]
            _accumulate(acc, tops, edges, window, ys[i], xs[j], j)
            final = ys[i + 1] if i + 1 < len(ys) else height  # strip j is final above this row
            a, b = edges[j], edges[j + 1]
            count = (row_count[tops[j]:final, None] * col_count[None, a:b]).to(window.device)
            yield tops[j], final, a, b, acc[j][:, :, :final - tops[j]] / count
            acc[j] = acc[j][:, :, final - tops[j]:].clone() if final < height else None
            tops[j] = final


def _accumulate(acc: list[torch.Tensor | None], tops: list[int], edges: list[int], window: torch.Tensor, y0: int,
                x0: int, first: int) -> None:
    """Add one window's logits (at y0, x0) into the column strips it covers, from strip `first` on."""
    win_h, win_w = window.shape[-2:]
    for s in range(first, len(edges) - 1):
        if edges[s] >= x0 + win_w:
            break
        a, b = edges[s], min(edges[s + 1], x0 + win_w)
        rows = y0 + win_h - tops[s]
        if acc[s] is None or acc[s].shape[2] < rows:  # grow strip s downwards with zeros
            old = acc[s]
            acc[s] = window.new_zeros(window.shape[0], window.shape[1], rows, edges[s + 1] - edges[s])
            if old is not None:
                acc[s][:, :, :old.shape[2]] = old
        acc[s][:, :, y0 - tops[s]:rows, :b - a] += window[:, :, :, a - x0:b - x0]


def slide(model: torch.nn.Module, x: torch.Tensor, crop_size: Sequence[int], stride: Sequence[int], *,
          batch_size: int = 1, dtype: str | torch.dtype | None = None) -> torch.Tensor:
    """Sliding-window logits (B, K, H, W) at the size of the normalised input `x` (mmseg `slide_inference`)."""
    return run_view(model, tensor_crop(x), tuple(x.shape[-2:]), "slide", crop_size=crop_size, stride=stride,
                    batch_size=batch_size, dtype=dtype)


def assemble(blocks: Iterator[tuple[int, int, int, int, torch.Tensor]], size: Size) -> torch.Tensor:
    """One (B, K, H, W) tensor of the regions `slide_blocks` yields."""
    out = None
    for y0, y1, x0, x1, block in blocks:
        if out is None:
            out = block.new_empty(*block.shape[:2], *size)
        out[:, :, y0:y1, x0:x1] = block
    return out


def run_view(model: torch.nn.Module, crop: CropFn, size: Size, mode: str, *, crop_size: Sequence[int] | None = None,
             stride: Sequence[int] | None = None, batch_size: int = 1, dtype: str | torch.dtype | None = None,
             native: bool = False) -> torch.Tensor:
    """Logits (B, K, H, W) of one input of `size` (H, W), read through `crop`, in `mode`: "whole" (one pass; at
    the model's own resolution when `native`) or "slide" (`crop_size` / `stride` windows). The one mode dispatch
    of tensor inference, evaluation and `predict`."""
    if mode == "whole":
        logits = run_model(model, crop(0, size[0], 0, size[1]), dtype)
        return logits if native else upsample(logits, size)
    if mode == "slide":
        if crop_size is None or stride is None:
            raise ValueError("mode='slide' needs crop_size and stride")
        return assemble(slide_blocks(model, crop, size, crop_size, stride, batch_size=batch_size, dtype=dtype), size)
    raise ValueError(f"unknown mode {mode!r}; accepted: {', '.join(MODES)}")


def tensor_crop(x: torch.Tensor) -> CropFn:
    """The `CropFn` of a normalised (B, 3, H, W) tensor."""
    return lambda y0, y1, x0, x1: x[:, :, y0:y1, x0:x1]


def tta_views(image: T, scales: Sequence[float], flip: bool, resize: Callable[[T, float], T],
                    mirror: Callable[[T], T]) -> Iterator[tuple[T, bool]]:
    """(view, flipped) for each test-time run: `image` resized by each scale and, with `flip`, also mirrored.
    The one augmentation loop, for tensors (`multiscale`) and images (`predict`)."""
    for scale in scales:
        resized = resize(image, scale)
        for flipped in (False, True) if flip else (False,):
            yield (mirror(resized) if flipped else resized), flipped


def scaled_size(height: int, width: int, scale: float) -> Size:
    """(h, w) of an image resized by `scale`, rounded as mmcv's `rescale_size`."""
    return int(height * scale + 0.5), int(width * scale + 0.5)


def multiscale(model: torch.nn.Module, x: torch.Tensor, scales: Sequence[float] = (1.0,), flip: bool = False,
               mode: str = "whole", *, crop_size: Sequence[int] | None = None, stride: Sequence[int] | None = None,
               batch_size: int = 1, dtype: str | torch.dtype | None = None) -> torch.Tensor:
    """Probabilities (B, K, H, W) averaged over `scales` (x resized bilinearly by each) and, with `flip`,
    their horizontal mirrors: each run's logits go back to the size of `x` (and unflipped), then softmax,
    then the mean, as mmseg's test-time augmentation."""
    total, runs = None, 0
    views = tta_views(x, scales, flip, lambda t, s: upsample(t, scaled_size(*t.shape[-2:], s)),
                            lambda t: t.flip(-1))
    for view, flipped in views:
        logits = run_view(model, tensor_crop(view), tuple(view.shape[-2:]), mode, crop_size=crop_size, stride=stride,
                          batch_size=batch_size, dtype=dtype)
        probs = unflip(upsample(logits, x.shape[-2:]), flipped).softmax(1)
        total = probs if total is None else total.add_(probs)
        runs += 1
    return total / runs


def scores(model: torch.nn.Module, x: torch.Tensor, mode: str, *, crop_size: Sequence[int] | None = None,
           stride: Sequence[int] | None = None, scales: Sequence[float] | None = None, flip: bool = False,
           batch_size: int = 1, dtype: str | torch.dtype | None = None) -> torch.Tensor:
    """Scores of `model` on a normalised batch at the input's size: logits of mmseg's whole / slide inference,
    or with `scales` / `flip` the softmax mean of its multi-scale + flip test-time augmentation."""
    if scales or flip:
        return multiscale(model, x, scales or (1.0,), flip, mode, crop_size=crop_size, stride=stride,
                          batch_size=batch_size, dtype=dtype)
    return run_view(model, tensor_crop(x), tuple(x.shape[-2:]), mode, crop_size=crop_size, stride=stride,
                    batch_size=batch_size, dtype=dtype)


def unflip(t: torch.Tensor, flipped: bool) -> torch.Tensor:
    """`t` mirrored back along its width when `flipped`."""
    return t.flip(-1) if flipped else t
