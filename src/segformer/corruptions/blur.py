"""Blur corruptions of ImageNet-C: defocus, glass, motion and gaussian (and the motion-blur helper snow uses)."""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage

from .opencv import filter2d, gaussian_blur_f32


def gaussian_filter(x: np.ndarray, sigma: float) -> np.ndarray:
    """scikit-image's `gaussian` (mode "nearest", truncate 4); channels are not mixed."""
    sigmas = (sigma, sigma, 0) if x.ndim == 3 else sigma
    return ndimage.gaussian_filter(x, sigmas, mode="nearest", truncate=4.0)


def gaussian_blur(x: np.ndarray, severity: int, rng: np.random.RandomState) -> np.ndarray:
    c = (1, 2, 3, 4, 6)[severity - 1]
    return np.clip(gaussian_filter(x / 255.0, c), 0, 1) * 255


def glass_blur(x: np.ndarray, severity: int, rng: np.random.RandomState) -> np.ndarray:
    """Blur, then `iterations` raster sweeps (bottom-right to top-left) that copy each pixel from a random
    neighbour within `delta`, then blur again. The copy reads the current image, so one sweep can carry a
    pixel several steps; the reference's `a, b = b, a` on numpy views is such a copy, not a swap."""
    sigma, delta, iterations = ((0.7, 1, 2), (0.9, 2, 1), (1, 2, 3), (1.1, 3, 2), (1.5, 4, 2))[severity - 1]
    x = np.uint8(gaussian_filter(x / 255.0, sigma) * 255)
    h, w = x.shape[:2]
    rows = np.arange(h - delta, delta, -1)
    cols = np.arange(w - delta, delta, -1)
    target = (rows[:, None] * w + cols[None, :]).ravel()
    source = list(range(h * w))  # which original pixel each position holds now
    for _ in range(iterations):
        d = rng.randint(-delta, delta, size=(target.size, 2))  # (dx, dy) per visited pixel, in visit order
        neighbour = (target + d[:, 1] * w + d[:, 0]).tolist()
        for t, n in zip(target.tolist(), neighbour):
            source[t] = source[n]
    x = x.reshape(h * w, -1)[source].reshape(h, w, -1)
    return np.clip(gaussian_filter(x / 255.0, sigma), 0, 1) * 255


def disk_kernel(radius: int, alias_blur: float) -> np.ndarray:
    """A normalised disk of `radius` (at least 17x17), antialiased by a small gaussian blur."""
    r = np.arange(-8, 9) if radius <= 8 else np.arange(-radius, radius + 1)
    xx, yy = np.meshgrid(r, r)
    disk = np.array(xx**2 + yy**2 <= radius**2, dtype=np.float32)
    disk /= np.sum(disk)
    return gaussian_blur_f32(disk, 3 if radius <= 8 else 5, alias_blur)


def defocus_blur(x: np.ndarray, severity: int, rng: np.random.RandomState) -> np.ndarray:
    radius, alias_blur = ((3, 0.1), (4, 0.5), (6, 0.5), (8, 0.5), (10, 0.5))[severity - 1]
    kernel = disk_kernel(radius, alias_blur)
    x = x / 255.0
    channels = np.stack([filter2d(x[:, :, d], kernel) for d in range(x.shape[2])], axis=2)
    return np.clip(channels, 0, 1) * 255


def _shift(image: np.ndarray, dx: int, dy: int) -> np.ndarray:
    """Translate by (dx, dy) pixels, repeating the edge row/column into the uncovered border."""
    out = image
    if dx < 0:
        out = np.roll(image, shift=image.shape[1] + dx, axis=1)
        out[:, dx:] = out[:, dx - 1:dx]
    elif dx > 0:
        out = np.roll(image, shift=dx, axis=1)
        out[:, :dx] = out[:, dx:dx + 1]
    if dy < 0:
        out = np.roll(out, shift=image.shape[0] + dy, axis=0)
        out[dy:, :] = out[dy - 1:dy, :]
    elif dy > 0:
        out = np.roll(out, shift=dy, axis=0)
        out[:dy, :] = out[dy:dy + 1, :]
    return out


def motion_kernel_blur(x: np.ndarray, radius: int, sigma: float, angle: float) -> np.ndarray:
    """Sum of copies of `x` shifted along `angle` (degrees), weighted by a one-sided gaussian of `sigma`."""
    width = radius * 2 + 1
    kernel = np.exp(-np.arange(width) ** 2 / (2 * sigma**2)) / (np.sqrt(2 * np.pi) * sigma)
    kernel = kernel / np.sum(kernel)
    point = (width * np.sin(np.deg2rad(angle)), width * np.cos(np.deg2rad(angle)))
    hypot = math.hypot(point[0], point[1])
    blurred = np.zeros_like(x, dtype=np.float32)
    for i in range(width):
        dy = -math.ceil(((i * point[0]) / hypot) - 0.5)
        dx = -math.ceil(((i * point[1]) / hypot) - 0.5)
        if abs(dy) >= x.shape[0] or abs(dx) >= x.shape[1]:  # the motion left the image
            break
        blurred = blurred + kernel[i] * _shift(x, dx, dy)
    return blurred


def motion_blur(x: np.ndarray, severity: int, rng: np.random.RandomState) -> np.ndarray:
    radius, sigma = ((10, 3), (15, 5), (15, 8), (15, 12), (20, 15))[severity - 1]
    angle = rng.uniform(-45, 45)
    return np.clip(motion_kernel_blur(x, radius, sigma, angle), 0, 255)
