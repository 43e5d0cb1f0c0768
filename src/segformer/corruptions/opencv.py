"""The OpenCV operations that ImageNet-C's corruptions use, written on numpy/scipy with OpenCV's arithmetic.

Each function follows OpenCV 4's definition (border mode, fixed-point rounding, float32 accumulation) so that
the corruptions equal the `imagecorruptions` reference without depending on opencv-python.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def gaussian_blur_f32(image: np.ndarray, ksize: int, sigma: float) -> np.ndarray:
    """cv2.GaussianBlur of a 2-D float32 array (separable, BORDER_REFLECT_101, float32 sums)."""
    x = np.arange(ksize) - (ksize - 1) * 0.5
    weights = np.exp(-0.5 / (sigma * sigma) * x * x)
    kernel = (weights * (1.0 / weights.sum())).astype(np.float32)
    pad = ksize // 2
    out = image.astype(np.float32)
    for axis in (1, 0):  # rows first, then columns, as OpenCV's separable filter
        padded = np.pad(out, [(pad, pad) if a == axis else (0, 0) for a in range(2)], mode="reflect")
        n = out.shape[axis]

        def tap(k: int, padded: np.ndarray = padded, axis: int = axis, n: int = n) -> np.ndarray:
            return np.take(padded, np.arange(k, k + n), axis=axis)

        acc = tap(pad) * kernel[pad]
        for k in range(1, pad + 1):  # symmetric kernel: (left + right) * weight
            acc = acc + (tap(pad - k) + tap(pad + k)) * kernel[pad + k]
        out = acc.astype(np.float32)
    return out


def filter2d(image: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """cv2.filter2D with the kernel centred and BORDER_REFLECT_101 (float64 result)."""
    return ndimage.correlate(image.astype(np.float64), kernel.astype(np.float64), mode="mirror")


def _cubic_coefficients(src: int, dst: int) -> tuple[np.ndarray, np.ndarray]:
    """Source indices (dst, 4), clamped at the border, and weights of the bicubic kernel with a = -0.75."""
    fx = (np.arange(dst) + 0.5) * (1.0 / (dst / src)) - 0.5
    sx = np.floor(fx)
    f = fx - sx
    a = -0.75
    c0 = ((a * (f + 1) - 5 * a) * (f + 1) + 8 * a) * (f + 1) - 4 * a
    c1 = ((a + 2) * f - (a + 3)) * f * f + 1
    c2 = ((a + 2) * (1 - f) - (a + 3)) * (1 - f) * (1 - f) + 1
    index = np.clip(sx.astype(np.int64)[:, None] + np.arange(-1, 3)[None, :], 0, src - 1)
    return index, np.stack([c0, c1, c2, 1 - c0 - c1 - c2], axis=1)


def resize_cubic_u8(image: np.ndarray, width: int, height: int, top: int = 0, left: int = 0,
                    out_height: int | None = None, out_width: int | None = None) -> np.ndarray:
    """cv2.resize(image, (width, height), interpolation=cv2.INTER_CUBIC) of a uint8 (H, W, C) image, or only its
    window [top, top + out_height) x [left, left + out_width) (the same pixels, computed alone).

    Computed in float64 and rounded once; OpenCV's IPP/SIMD paths round differently for a few pixels (by 1).
    """
    xi, xw = _cubic_coefficients(image.shape[1], width)
    yi, yw = _cubic_coefficients(image.shape[0], height)
    xi, xw = xi[left:left + (out_width or width)], xw[left:left + (out_width or width)]
    yi, yw = yi[top:top + (out_height or height)], yw[top:top + (out_height or height)]
    first = int(yi.min())  # only the source rows the window reads
    src = image[first:int(yi.max()) + 1].astype(np.float64)
    rows = sum(src[:, xi[:, k]] * xw[None, :, k, None] for k in range(4))
    out = sum(rows[yi[:, k] - first] * yw[:, k, None, None] for k in range(4))
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def rgb_to_gray_f32(image: np.ndarray) -> np.ndarray:
    """cv2.cvtColor(float32 RGB, COLOR_RGB2GRAY): 0.299 R + 0.587 G + 0.114 B in float32."""
    x = image.astype(np.float32)
    return x[..., 0] * np.float32(0.299) + x[..., 1] * np.float32(0.587) + x[..., 2] * np.float32(0.114)


def _sobel(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """3x3 Sobel derivatives (int) with BORDER_REPLICATE, as Canny computes them."""
    p = np.pad(image.astype(np.int64), 1, mode="edge")
    h, w = image.shape

    def at(dy: int, dx: int) -> np.ndarray:
        return p[1 + dy:1 + dy + h, 1 + dx:1 + dx + w]

    gx = (at(-1, 1) + 2 * at(0, 1) + at(1, 1)) - (at(-1, -1) + 2 * at(0, -1) + at(1, -1))
    gy = (at(1, -1) + 2 * at(1, 0) + at(1, 1)) - (at(-1, -1) + 2 * at(-1, 0) + at(-1, 1))
    return gx, gy


def canny(image: np.ndarray, low: float, high: float) -> np.ndarray:
    """cv2.Canny(uint8 image, low, high) (aperture 3, L1 gradient): 255 on edges, 0 elsewhere."""
    gx, gy = _sobel(image)
    mag = np.abs(gx) + np.abs(gy)
    h, w = mag.shape
    m = np.pad(mag, 1)  # magnitude outside the image is 0

    def at(dy: int, dx) -> np.ndarray:
        if isinstance(dx, np.ndarray):  # per-pixel column offsets (diagonal neighbours)
            cols = np.arange(w)[None, :] + 1 + dx
            return m[np.arange(h)[:, None] + 1 + dy, cols]
        return m[1 + dy:1 + dy + h, 1 + dx:1 + dx + w]

    ax, ay = np.abs(gx), np.abs(gy)
    tg22 = ax * int(0.4142135623730950488016887242097 * (1 << 15) + 0.5)
    y = ay << 15
    tg67 = tg22 + (ax << 16)
    s = np.where((gx ^ gy) < 0, -1, 1)
    horizontal = (y < tg22) & (mag > at(0, -1)) & (mag >= at(0, 1))
    vertical = (y >= tg22) & (y > tg67) & (mag > at(-1, 0)) & (mag >= at(1, 0))
    diagonal = (y >= tg22) & (y <= tg67) & (mag > at(-1, -s)) & (mag > at(1, s))
    candidate = (mag > int(np.floor(low))) & (horizontal | vertical | diagonal)
    labels, n = ndimage.label(candidate, structure=np.ones((3, 3), dtype=bool))
    strong = np.zeros(n + 1, dtype=bool)
    strong[np.unique(labels[candidate & (mag > int(np.floor(high)))])] = True
    strong[0] = False
    return np.where(strong[labels], 255, 0).astype(np.uint8)


def _chamfer_forward(d: np.ndarray, h: int, w: int) -> None:
    """One raster pass of the 5x5 chamfer mask over padded `d` (border 2), in place, float32 sums.

    Pixels on the line 3 * row + col = t depend only on lines < t, so each line is one vectorised step.
    """
    a, b, c = np.float32(1.0), np.float32(1.4), np.float32(2.1969)
    stride = w + 4
    mask = [(-2, -1, c), (-2, 1, c), (-1, -2, c), (-1, -1, b), (-1, 0, a), (-1, 1, b), (-1, 2, c), (0, -1, a)]
    rows, cols = np.indices((h, w))
    key = (3 * rows + cols).ravel()
    order = np.argsort(key, kind="stable")
    flat = ((rows + 2) * stride + cols + 2).ravel()[order]
    bounds = np.flatnonzero(np.diff(key[order])) + 1
    out = d.reshape(-1)
    for idx in np.split(flat, bounds):
        best = out[idx]
        for dy, dx, cost in mask:
            best = np.minimum(best, out[idx + dy * stride + dx] + cost)
        out[idx] = best


def distance_transform_l2_5(image: np.ndarray) -> np.ndarray:
    """cv2.distanceTransform(uint8, DIST_L2, 5): 5x5 chamfer distance (1, 1.4, 2.1969) to the nearest zero.

    Float32 sums, as the IPP-backed OpenCV wheels compute it; the image border is not a zero.
    """
    h, w = image.shape
    d = np.full((h + 4, w + 4), np.inf, dtype=np.float32)
    d[2:-2, 2:-2] = np.where(image == 0, 0, np.inf)
    _chamfer_forward(d, h, w)
    backward = np.ascontiguousarray(d[::-1, ::-1])
    _chamfer_forward(backward, h, w)
    return np.ascontiguousarray(backward[::-1, ::-1][2:-2, 2:-2])


def box_blur3(image: np.ndarray) -> np.ndarray:
    """cv2.blur(image, (3, 3)) with BORDER_REFLECT_101; uint8 rounds to nearest, float32 stays float32."""
    p = np.pad(image.astype(np.float64 if image.dtype != np.uint8 else np.int64), 1, mode="reflect")
    h, w = image.shape
    total = sum(p[dy:dy + h, dx:dx + w] for dy in range(3) for dx in range(3))
    if image.dtype == np.uint8:
        return ((2 * total + 9) // 18).astype(np.uint8)
    return (total * (1.0 / 9)).astype(np.float32)


def equalize_hist(image: np.ndarray) -> np.ndarray:
    """cv2.equalizeHist of a uint8 image."""
    hist = np.bincount(image.ravel(), minlength=256)
    first = int(np.flatnonzero(hist)[0])
    if hist[first] == image.size:
        return np.full_like(image, first)
    scale = np.float32(255.0 / (image.size - hist[first]))
    lut = np.zeros(256, dtype=np.uint8)
    sums = np.cumsum(hist[first + 1:]).astype(np.float32)
    lut[first + 1:] = np.clip(np.rint(sums * scale), 0, 255).astype(np.uint8)
    return lut[image]


def filter2d_u8(image: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """cv2.filter2D(uint8, cv2.CV_8U, kernel) with BORDER_REFLECT_101: rounded and saturated to uint8."""
    return np.clip(np.rint(filter2d(image, kernel)), 0, 255).astype(np.uint8)
