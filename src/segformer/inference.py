"""Inference for any model that returns logits: whole image, sliding window, multi-scale + flip, and `predict`,
which turns images into label maps at their original size.

On normalised tensors: `whole(model, x)` and `slide(model, x, crop_size, stride)` return logits (B, K, H, W)
at the size of `x`; `multiscale(model, x, scales, flip, mode)` returns averaged probabilities. The sliding
window follows MMSegmentation's `slide_inference`: per axis `max(H - crop + stride - 1, 0) // stride + 1`
windows, the last one clamped to the edge, overlaps averaged by a count map.

Memory. The sliding window streams (`slide_blocks`; `slide` only assembles its output): windows run row by
row, and a region of the output is averaged and handed on as soon as no later window covers it. Besides the
model's activations and the K x crop_h x crop_w upsampled logits of one batch of windows, it holds
K x (crop_h - stride_h) x W float32 sums carried to the next row of windows, plus about
K x crop_h x (crop_w + stride_w) for the row in progress. `predict(mode="slide")` without resizing, scales or
flip argmaxes each finished region at once, so nothing of size K x H x W ever exists: for an 8192 x 8192 image,
150 classes, crop 512 stride 341, the carry is 0.84 GB where the full logits would be 40 GB; measured with B0
on CPU, the whole process peaks at 2.13 GiB RSS (benchmarks/predict_memory.py, benchmarks/RESULTS.md).
Label maps are resized to the original size class chunk by class chunk, and for outputs above 4.2 MP also in
bands of rows (equal to one full resize up to float rounding, ~1e-6), so no (K, H, W) tensor exists there
either and memory is the label map plus a few 16 MB bands (a 12000 x 12000 image: see docs/reliability.md);
only asking for `scores` (or the tensor functions above) makes one. Images above `max_pixels` (100 MP by
default) are refused before decoding. A resize, scales or flip make
`predict` hold the logits at the resized size, K x h x w.
"""

from __future__ import annotations

import contextlib
import glob
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .data.datasets import IMAGE_EXTENSIONS
from .preprocess import MAX_PIXELS, ImageLike, ImageProcessor, multiple_size, resize_image, to_rgb_array
from .protocol import DEFAULT_CROP, MODES, default_stride, predict_processor, resolve_window
from .utils.dtypes import resolve_dtype

Size = tuple[int, int]
# crop(y0, y1, x0, x1) -> normalised (B, 3, y1 - y0, x1 - x0) tensor on the compute device
CropFn = Callable[[int, int, int, int], torch.Tensor]
_CHUNK_BYTES = 64 * 2**20  # size of one class chunk when resizing scores to the original size
_BAND_BYTES = 16 * 2**20  # one class at the original size above this: labels are computed in bands of rows


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


def _upsample(logits: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    if tuple(logits.shape[-2:]) == tuple(size):
        return logits
    return F.interpolate(logits, size=tuple(size), mode="bilinear", align_corners=False)


def whole(model: torch.nn.Module, x: torch.Tensor, *, dtype: str | torch.dtype | None = None) -> torch.Tensor:
    """Logits (B, K, H, W) at the size of the normalised input `x`: one pass, bilinear upsampling."""
    return _upsample(run_model(model, x, dtype), x.shape[-2:])


def window_starts(size: int, crop: int, stride: int) -> list[int]:
    """Start offsets of the sliding windows along one axis, as mmseg: the last window ends at the edge."""
    count = max(size - crop + stride - 1, 0) // stride + 1
    return [max(min(i * stride + crop, size) - crop, 0) for i in range(count)]


def _check_window(crop_size: Sequence[int], stride: Sequence[int]) -> tuple[Size, Size]:
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
    (crop_h, crop_w), (stride_h, stride_w) = _check_window(crop_size, stride)
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
        logits = _upsample(run_model(model, inputs, dtype), (win_h, win_w))
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
    size = tuple(x.shape[-2:])
    return _assemble(slide_blocks(model, lambda a, b, c, d: x[:, :, a:b, c:d], size, crop_size, stride,
                                  batch_size=batch_size, dtype=dtype), size)


def _assemble(blocks: Iterator[tuple[int, int, int, int, torch.Tensor]], size: Size) -> torch.Tensor:
    out = None
    for y0, y1, x0, x1, block in blocks:
        if out is None:
            out = block.new_empty(*block.shape[:2], *size)
        out[:, :, y0:y1, x0:x1] = block
    return out


def _run(model: torch.nn.Module, x: torch.Tensor, mode: str, crop_size, stride, batch_size: int,
         dtype) -> torch.Tensor:
    if mode == "whole":
        return whole(model, x, dtype=dtype)
    if mode == "slide":
        if crop_size is None or stride is None:
            raise ValueError("mode='slide' needs crop_size and stride")
        return slide(model, x, crop_size, stride, batch_size=batch_size, dtype=dtype)
    raise ValueError(f"unknown mode {mode!r}; accepted: {', '.join(MODES)}")


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
    for scale in scales:
        xs = _upsample(x, scaled_size(*x.shape[-2:], scale))
        for flipped in (False, True) if flip else (False,):
            logits = _run(model, xs.flip(-1) if flipped else xs, mode, crop_size, stride, batch_size, dtype)
            logits = _upsample(logits, x.shape[-2:])
            probs = (logits.flip(-1) if flipped else logits).softmax(1)
            total = probs if total is None else total.add_(probs)
            runs += 1
    return total / runs


def _row_weights(in_size: int, out_size: int, y0: int, y1: int) -> tuple[torch.Tensor, int]:
    """(matrix, first source row): bilinear resizing (align_corners=False) of `in_size` rows to `out_size` as a
    (y1 - y0, n) matrix that maps source rows first..first + n to output rows y0..y1 (weights as PyTorch's)."""
    scale = torch.tensor(in_size, dtype=torch.float32) / out_size
    src = ((torch.arange(y0, y1, dtype=torch.float32) + 0.5) * scale - 0.5).clamp_min(0)
    i0 = src.long()
    i1 = (i0 + 1).clamp_max(in_size - 1)
    w1 = src - i0
    first = int(i0[0])
    matrix = torch.zeros(y1 - y0, int(i1[-1]) + 1 - first)
    rows = torch.arange(y1 - y0)
    matrix.index_put_((rows, i0 - first), 1 - w1, accumulate=True)
    matrix.index_put_((rows, i1 - first), w1, accumulate=True)
    return matrix, first


def _resize_rows(logits: torch.Tensor, size: Size, y0: int, y1: int) -> torch.Tensor:
    """Rows y0..y1 of `logits` resized bilinearly to `size`: the width by F.interpolate on the few source rows
    needed, the height by a matrix product (equal to the full resize up to float rounding, ~1e-6)."""
    if (y0, y1) == (0, size[0]):
        return _upsample(logits, size)
    matrix, first = _row_weights(logits.shape[-2], size[0], y0, y1)
    rows = _upsample(logits[..., first:first + matrix.shape[1], :], (matrix.shape[1], size[1]))
    return torch.matmul(matrix.to(rows), rows)


def _argmax_at(sources: list[tuple[torch.Tensor, bool]], size: Size) -> torch.Tensor:
    """(B, H, W) argmax over classes of the sources' logits resized to `size` (and unflipped where flagged):
    of the logits for one source, of the mean softmax for several; uint8 for up to 256 classes, else int32.
    Computed one chunk of classes at a time so that no (B, K, H, W) tensor exists (each class resized exactly
    as a full `F.interpolate` would), and for large outputs also in bands of rows, so that memory is the label
    map plus about `_BAND_BYTES`."""
    batch, num_classes = sources[0][0].shape[:2]
    labels = torch.empty((batch, *size), dtype=torch.uint8 if num_classes <= 256 else torch.int32)
    rows = size[0] if 4 * batch * size[0] * size[1] <= _BAND_BYTES else max(1, _BAND_BYTES // (4 * batch * size[1]))
    for y0 in range(0, size[0], rows):
        y1 = min(size[0], y0 + rows)
        labels[:, y0:y1] = _argmax_rows(sources, size, y0, y1).cpu()
    return labels


def _argmax_rows(sources: list[tuple[torch.Tensor, bool]], size: Size, y0: int, y1: int) -> torch.Tensor:
    """`_argmax_at` for output rows y0..y1 (int64)."""
    first = sources[0][0]
    num_classes = first.shape[1]
    budget = _CHUNK_BYTES if (y0, y1) == (0, size[0]) else _BAND_BYTES  # a band: one class at a time
    chunk = max(1, budget // (4 * first.shape[0] * (y1 - y0) * size[1]))

    def resized(logits: torch.Tensor, flipped: bool, c0: int) -> torch.Tensor:
        out = _resize_rows(logits[:, c0:c0 + chunk], size, y0, y1)
        return out.flip(-1) if flipped else out

    log_norm = []
    if len(sources) > 1:  # pass 1: log of each source's softmax denominator, per pixel
        for logits, flipped in sources:
            lse = None
            for c0 in range(0, num_classes, chunk):
                part = resized(logits, flipped, c0).logsumexp(1)
                lse = part if lse is None else torch.logaddexp(lse, part)
            log_norm.append(lse)
    best = best_idx = None
    for c0 in range(0, num_classes, chunk):
        if len(sources) == 1:
            scores = resized(*sources[0], c0)
        else:
            scores = sum((resized(lg, fl, c0) - lse[:, None]).exp()
                         for (lg, fl), lse in zip(sources, log_norm, strict=True))
        if best is None:
            best, best_idx = scores.max(1)  # first maximum within the chunk, as argmax
        elif scores.shape[1] == 1:  # one class: update in place (no index tensor per chunk)
            better = scores[:, 0] > best  # strict: an earlier class wins ties, as argmax
            best_idx.masked_fill_(better, c0)
            torch.maximum(best, scores[:, 0], out=best)
        else:
            value, idx = scores.max(1)
            better = value > best
            best = torch.where(better, value, best)
            best_idx = torch.where(better, idx + c0, best_idx)
    return best_idx


def _label_dtype(num_classes: int) -> np.dtype:
    return np.dtype(np.uint8 if num_classes <= 256 else np.uint16 if num_classes <= 65536 else np.int32)


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


def _predict_one(model, rgb: np.ndarray, processor: ImageProcessor, norm: _Normalizer, mode: str, crop_size,
                 stride, scales: Sequence[float], flip: bool, batch_size: int, dtype, scores: str | None):
    height, width = rgb.shape[:2]
    unresized = all(step == (height, width) for step in processor.resize_steps(height, width))
    if mode == "slide" and list(scales) == [1.0] and not flip and unresized and scores is None:
        labels = None  # streaming: argmax each finished region, never the full logits
        for y0, y1, x0, x1, block in slide_blocks(model, lambda a, b, c, d: norm(rgb[a:b, c:d]), (height, width),
                                                  crop_size, stride, batch_size=batch_size, dtype=dtype):
            if labels is None:
                labels = np.empty((height, width), _label_dtype(block.shape[1]))
            labels[y0:y1, x0:x1] = block[0].argmax(0).cpu().numpy()
        return labels
    sources = []
    for scale in scales:
        image = rgb
        for size in _resize_steps(processor, height, width, scale):
            image = resize_image(image, size, processor.backend) if size != image.shape[:2] else image
        for flipped in (False, True) if flip else (False,):
            view = image[:, ::-1] if flipped else image
            if mode == "whole":  # HF: native logits resized once, to the original size; mmseg's keep-ratio
                # pipeline: first to the resized input's size (its whole inference), as `evaluate` scores
                run = whole if processor.keep_ratio_scale is not None else run_model
                logits = run(model, norm(view), dtype=dtype)
            else:  # windows normalised one at a time; logits at the resized size (as mmseg)
                logits = _assemble(slide_blocks(model, lambda a, b, c, d, v=view: norm(v[a:b, c:d]), view.shape[:2],
                                                crop_size, stride, batch_size=batch_size, dtype=dtype), view.shape[:2])
            sources.append((logits, flipped))
    labels = _argmax_at(sources, (height, width))[0].numpy().astype(_label_dtype(sources[0][0].shape[1]), copy=False)
    if scores is None:
        return labels
    if scores == "logits":
        if len(sources) > 1:
            raise ValueError("scores='logits' is for a single run; multi-scale or flip averages probabilities: "
                             "ask scores='probs'")
        return labels, _upsample(sources[0][0], (height, width))[0].cpu()
    probs = sum(_unflip(_upsample(lg, (height, width)), fl).softmax(1) for lg, fl in sources)
    return labels, (probs / len(sources))[0].cpu()


def _unflip(t: torch.Tensor, flipped: bool) -> torch.Tensor:
    return t.flip(-1) if flipped else t


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
        _check_window(crop_size, stride)
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
        results = [_predict_one(model, to_rgb_array(image, max_pixels), processor, norm, mode, crop_size, stride,
                                scales, flip, batch_size, dtype, scores) for image in ([images] if single else images)]
    finally:
        model.train(was_training)
    return results[0] if single else results


def shard(items: Sequence, rank: int, world_size: int) -> list:
    """The share of `items` that process `rank` of `world_size` handles: every world_size-th, from rank."""
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"rank must be in 0..world_size-1, got rank {rank} of {world_size}")
    return list(items[rank::world_size])


def collect_images(inputs: Sequence[str], exclude: str | Path | None = None) -> list[tuple[Path, Path]]:
    """(image file, output stem) pairs for files, folders (searched recursively for IMAGE_EXTENSIONS) and glob
    patterns. A file's stem is its name without the extension; inside a folder, its path relative to the folder.
    A file named directly is taken whatever its extension (reading it says whether it is an image). A folder
    search skips everything under `exclude` (the output folder) when that lies inside it, so earlier outputs
    are not taken as inputs."""
    skip = Path(exclude).resolve() if exclude is not None else None
    pairs = []
    for item in inputs:
        path = Path(item)
        if path.is_file():
            pairs.append((path, Path(path.stem)))
        elif path.is_dir():
            inner = skip is not None and skip != path.resolve()
            found = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
                           and not (inner and p.resolve().is_relative_to(skip)))
            if not found:
                raise FileNotFoundError(f"no images in folder {path} (searched for {', '.join(IMAGE_EXTENSIONS)})")
            pairs += [(p, p.relative_to(path).with_suffix("")) for p in found]
        elif any(c in item for c in "*?["):
            found = sorted(Path(p) for p in glob.glob(item, recursive=True) if Path(p).is_file())
            if not found:
                raise FileNotFoundError(f"no files match the pattern {item!r}")
            pairs += [(p, Path(p.stem)) for p in found]
        else:
            raise FileNotFoundError(f"input {item}: no such file, folder or glob match")
    return pairs
