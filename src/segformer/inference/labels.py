"""Label maps at an image's original size from logits at another size, without a (K, H, W) tensor: classes are
resized chunk by chunk, and outputs above 4.2 MP also in bands of rows (equal to one full resize up to float
rounding, ~1e-6), so memory is the label map plus a few 16 MB bands."""

from __future__ import annotations

import numpy as np
import torch

from .tensor import Size, upsample

_CHUNK_BYTES = 64 * 2**20  # size of one class chunk when resizing scores to the original size
_BAND_BYTES = 16 * 2**20  # one class at the original size above this: labels are computed in bands of rows


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
        return upsample(logits, size)
    matrix, first = _row_weights(logits.shape[-2], size[0], y0, y1)
    rows = upsample(logits[..., first:first + matrix.shape[1], :], (matrix.shape[1], size[1]))
    return torch.matmul(matrix.to(rows), rows)


def argmax_at(sources: list[tuple[torch.Tensor, bool]], size: Size) -> torch.Tensor:
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
    """`argmax_at` for output rows y0..y1 (int64)."""
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


def label_dtype(num_classes: int) -> np.dtype:
    """The smallest integer type of a label map of `num_classes` classes."""
    return np.dtype(np.uint8 if num_classes <= 256 else np.uint16 if num_classes <= 65536 else np.int32)
